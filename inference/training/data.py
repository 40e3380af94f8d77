"""Training data: NIfTI or 3D TIFF image/label pairs, their target objects, and patches around an object.

Arrays are indexed ``[k, j, i]`` like the engine's (nibabel gives ``[i, j, k]``, so it is transposed), on the
native voxel grid: nothing is resampled. Every label value is a target object; for cases where disconnected
parts are separate objects (tumours with satellite lesions, instance masks) each connected component above a
minimum size is one as well. Objects are bounding boxes plus a label value (and a seed voxel for a component),
so a label map with a hundred structures is never copied per object.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

Box = tuple[slice, slice, slice]

# docs: ../shared/data/README.md, "Suggested split": these patients are for validation only, never training.
VALIDATION_PATIENTS = frozenset(f"STS_{n:03d}" for n in range(16, 21))
STS_MODALITIES = {"CT": "CT", "MR_T1": "MR", "PET": "PET"}


class TrainingDataError(ValueError):
    """A case that cannot be used for training: unreadable, mismatched grids, bad manifest."""


@dataclass(frozen=True)
class TrainingCase:
    image: Path
    label: Path
    modality: str
    # Whether each connected component of a label is an object too (besides the whole label).
    components: bool = False


@dataclass(frozen=True)
class LabelledVolume:
    image: np.ndarray  # float32 [k, j, i]
    label: np.ndarray  # integer [k, j, i], 0 = background
    spacing: tuple[float, float, float]  # voxel size along k, j, i
    affine: np.ndarray  # the NIfTI affine of the image (maps [i, j, k, 1], as stored)
    case: TrainingCase


@dataclass(frozen=True)
class TargetObject:
    label: int
    box: Box  # bounding box in the label map, half-open
    voxels: int
    # A voxel of the component, or None when the object is the whole label value.
    seed: tuple[int, int, int] | None = None


def _nibabel() -> Any:
    try:
        import nibabel
    except ImportError as error:  # a dependency, but only training and evaluation read NIfTI
        raise TrainingDataError("reading NIfTI needs nibabel: pip install nibabel") from error
    return nibabel


def _read_volume(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """[k, j, i] array, affine and spacing of a NIfTI file, or of a 3D TIFF stack (microscopy: axes z, y, x
    as stored, unit spacing, identity affine)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(path)
    return _read_nifti(path)


def _read_tiff(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    import tifffile

    try:
        data = np.asarray(tifffile.imread(path))
    except (OSError, ValueError, tifffile.TiffFileError) as error:
        raise TrainingDataError(f"cannot read {path}: {error}") from error
    data = np.squeeze(data)
    if data.ndim != 3:
        raise TrainingDataError(f"{path} is not a 3D stack (shape {list(data.shape)})")
    return np.ascontiguousarray(data), np.eye(4), (1.0, 1.0, 1.0)


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    try:
        img = _nibabel().load(str(path))
        data = np.asarray(img.dataobj)
    except (OSError, ValueError) as error:
        raise TrainingDataError(f"cannot read {path}: {error}") from error
    # A 4D file with one volume is common (some tools write a trailing time axis of size 1).
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise TrainingDataError(f"{path} is not a 3D volume (shape {list(data.shape)})")
    i, j, k = (float(z) for z in img.header.get_zooms()[:3])
    return np.ascontiguousarray(data.transpose(2, 1, 0)), np.asarray(img.affine), (k, j, i)


def read_case(case: TrainingCase, affine_tolerance: float = 1e-3) -> LabelledVolume:
    """Read an image and its label map into [k, j, i] arrays; their voxel grids must agree."""
    image, affine, spacing = _read_volume(case.image)
    label, label_affine, _ = _read_volume(case.label)
    if image.shape != label.shape:
        raise TrainingDataError(
            f"{case.label} has shape {list(label.shape)[::-1]} but its image {case.image} has "
            f"{list(image.shape)[::-1]} (as stored, i j k): they are not on the same voxel grid"
        )
    difference = float(np.abs(affine - label_affine).max())
    if difference > affine_tolerance:
        raise TrainingDataError(
            f"{case.label} and {case.image} have different affines (largest difference {difference:.4g} mm, "
            f"tolerance {affine_tolerance}): the label is not on the image's voxel grid"
        )
    if not np.issubdtype(label.dtype, np.integer):
        rounded = np.rint(label)
        if not np.array_equal(rounded, label):
            raise TrainingDataError(f"{case.label} holds non-integer values: not a label map")
        label = rounded
    if label.min() < 0:
        raise TrainingDataError(f"{case.label} holds negative label values")
    label = label.astype(np.uint8 if label.max() < 256 else np.int32, copy=False)
    return LabelledVolume(image.astype(np.float32, copy=False), label, spacing, affine, case)


def read_manifest(path: Path) -> list[TrainingCase]:
    """Cases from a CSV with columns image,label,modality (optional: components = 1/true/yes).

    Relative paths are relative to the manifest's folder.
    """
    base = path.parent
    cases = []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"image", "label", "modality"} - set(reader.fieldnames or [])
        if missing:
            raise TrainingDataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for row_number, row in enumerate(reader, start=2):
            if not row["image"] or not row["label"]:
                raise TrainingDataError(f"{path}, line {row_number}: empty image or label path")
            components = (row.get("components") or "").strip().lower() in {"1", "true", "yes"}
            cases.append(
                TrainingCase(base / row["image"], base / row["label"], row["modality"].strip(), components)
            )
    return cases


def _sts_cases(data_root: Path, patients: Sequence[str]) -> list[TrainingCase]:
    cases = []
    for patient in patients:
        folder = data_root / "sts_ibsi" / "nifti" / patient
        for prefix, modality in STS_MODALITIES.items():
            image, label = folder / f"{prefix}_image.nii.gz", folder / f"{prefix}_mask.nii.gz"
            # Some patients have PET only (README): take what exists.
            if image.exists() and label.exists():
                cases.append(TrainingCase(image, label, modality, components=True))
    return cases


def training_cases(data_root: Path) -> list[TrainingCase]:
    """The training split of the shared data (its README): STS_001–015 tumours, TotalSegmentator CT, AAL.

    Not included: the synthetic microscopy nuclei (kept out so that evaluation has a modality and a kind
    of structure the models never saw) and the MNI probability maps (not labels).
    """
    nifti = data_root / "ct_totalseg" / "nifti"
    patients = sorted(p.name for p in (data_root / "sts_ibsi" / "nifti").glob("STS_*"))
    cases = [
        # example_ct_sm is a 30-slice part of the same scan: it would only weight that patient twice.
        TrainingCase(nifti / "example_ct.nii.gz", nifti / "example_seg_fast_force_split.nii.gz", "CT"),
        TrainingCase(
            data_root / "brain_atlas" / "mricron_colin27_aal" / "ch2bet.nii.gz",
            data_root / "brain_atlas" / "mricron_colin27_aal" / "aal.nii.gz",
            "MR",
        ),
        *_sts_cases(data_root, [p for p in patients if p not in VALIDATION_PATIENTS]),
    ]
    return [case for case in cases if case.image.exists() and case.label.exists()]


def validation_cases(data_root: Path) -> list[TrainingCase]:
    """STS_016–020 (CT, MR, PET tumours): for evaluation only."""
    return _sts_cases(data_root, sorted(VALIDATION_PATIENTS))


def find_objects(label: np.ndarray, components: bool = False, min_voxels: int = 10) -> list[TargetObject]:
    """Every label value (and, with ``components``, every connected component) of at least ``min_voxels``.

    A component is only listed when the label has more than one: a single component is the label itself.
    """
    objects = []
    boxes = ndimage.find_objects(label)
    for index, box in enumerate(boxes):
        if box is None:
            continue
        value = index + 1
        binary = label[box] == value
        voxels = int(binary.sum())
        if voxels < min_voxels:
            continue
        objects.append(TargetObject(value, _box(box), voxels))
        if not components:
            continue
        # Labelling inside the label's box only: no full-size array per label.
        parts, count = ndimage.label(binary)
        if count < 2:
            continue
        sizes = np.bincount(parts.ravel(), minlength=count + 1)
        for part, part_box in enumerate(ndimage.find_objects(parts), start=1):
            if part_box is None or sizes[part] < min_voxels:
                continue
            # Box-local coordinates of one voxel of the part, then everything shifted to the label map's.
            local = np.argwhere(parts[part_box] == part)[0] + [s.start for s in part_box]
            k, j, i = (int(a + s.start) for a, s in zip(local, box, strict=True))
            offset = [s.start for s in box]
            global_box = [slice(s.start + o, s.stop + o) for s, o in zip(part_box, offset, strict=True)]
            objects.append(TargetObject(value, _box(global_box), int(sizes[part]), (k, j, i)))
    return objects


def _box(box: Sequence[slice]) -> Box:
    return (box[0], box[1], box[2])


def object_mask(label: np.ndarray, obj: TargetObject) -> np.ndarray:
    """The object's binary mask (bool) over its bounding box ``obj.box``."""
    binary = label[obj.box] == obj.label
    if obj.seed is None:
        return binary
    # The component lies wholly in its box, so connectivity inside the box is its global connectivity.
    parts, _ = ndimage.label(binary)
    local = tuple(c - s.start for c, s in zip(obj.seed, obj.box, strict=True))
    return parts == parts[local]


def patch_origin(
    obj: TargetObject, patch_size: Sequence[int], rng: np.random.Generator
) -> tuple[int, int, int]:
    """A random patch start such that the patch holds the object's box (or lies within it, where the object
    is larger than the patch), so the object is not always centred. It may lie outside the image."""
    origin = []
    for s, size in zip(obj.box, patch_size, strict=True):
        low, high = sorted((s.stop - size, s.start))
        origin.append(int(rng.integers(low, high + 1)))
    return (origin[0], origin[1], origin[2])


def crop(array: np.ndarray, origin: Sequence[int], patch_size: Sequence[int]) -> np.ndarray:
    """``array[origin : origin + patch_size]`` with zeros where it leaves the array."""
    out = np.zeros(tuple(patch_size), dtype=array.dtype)
    source, target = _overlap(array.shape, origin, patch_size)
    out[target] = array[source]
    return out


def _overlap(
    shape: Sequence[int], origin: Sequence[int], patch_size: Sequence[int]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    source, target = [], []
    for n, o, size in zip(shape, origin, patch_size, strict=True):
        start, stop = max(o, 0), min(o + size, n)
        stop = max(stop, start)
        source.append(slice(start, stop))
        target.append(slice(start - o, stop - o))
    return tuple(source), tuple(target)


def sample_patch(
    volume: LabelledVolume,
    obj: TargetObject,
    patch_size: Sequence[int],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """An image patch around ``obj`` (float32) and the object's mask in it (uint8), zero-padded at borders."""
    origin = patch_origin(obj, patch_size, rng)
    return crop(volume.image, origin, patch_size), object_crop(volume.label, obj, origin, patch_size)


def object_crop(
    label: np.ndarray, obj: TargetObject, origin: Sequence[int], patch_size: Sequence[int]
) -> np.ndarray:
    """The object's mask (uint8) on the patch at ``origin``, zero where the patch leaves the label map."""
    mask = np.zeros(tuple(patch_size), dtype=np.uint8)
    # Paste the part of the object's box that falls in the patch (the object mask exists only over its box).
    box_origin = [o - s.start for o, s in zip(origin, obj.box, strict=True)]
    source, target = _overlap([s.stop - s.start for s in obj.box], box_origin, patch_size)
    mask[target] = object_mask(label, obj)[source]
    return mask
