"""Series → volume: the voxel grid that the viewer, the engine and the SEG writer and reader all share.

Pure geometry and pixel work on pydicom data sets; no Django here, so the engine side can use it too.
The conventions (index order, direction, origin) are explained in docs/volumes.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

# Largest difference between direction cosines still counted as the same orientation (about 0.06°).
ORIENTATION_TOLERANCE = 1e-3
# Two slices closer than this along the normal are at the same position.
DUPLICATE_TOLERANCE_MM = 0.01
# A step larger than this multiple of the typical (median) step means slices are missing.
GAP_FACTOR = 1.5
# Each slice must lie within this fraction of the step of its place on the uniform grid.
UNEVEN_TOLERANCE = 0.05
# The in-plane drift of the slice positions may reach this fraction of the smaller pixel spacing.
TILT_TOLERANCE = 0.05
# Pixel spacings that differ by less than this (mm) are equal.
PIXEL_SPACING_TOLERANCE_MM = 1e-4


class VolumeError(Exception):
    """A series that does not make one regular voxel grid; the message says why."""


class EmptySeriesError(VolumeError):
    pass


class NotAnImageError(VolumeError):
    """A segmentation, structure set, report or other object without an image to stack."""


class UnsupportedPixelDataError(VolumeError):
    """Colour images, or pixel data that no installed decoder can read."""


class MissingGeometryError(VolumeError):
    """Position, orientation or pixel spacing missing or invalid."""


class MixedFrameOfReferenceError(VolumeError):
    pass


class MixedOrientationError(VolumeError):
    pass


class MixedSizeError(VolumeError):
    """Slices with different numbers of rows or columns."""


class MixedPixelSpacingError(VolumeError):
    pass


class DuplicatePositionError(VolumeError):
    pass


class GantryTiltError(VolumeError):
    """The slices are stacked obliquely to their normal (a tilted gantry): the grid would be sheared."""


class MissingSliceError(VolumeError):
    pass


class UnevenSpacingError(VolumeError):
    pass


@dataclass(frozen=True)
class SliceSource:
    """Where one slice of the volume comes from: an instance, and its frame for multi-frame objects."""

    sop_instance_uid: str
    # 1-based, as DICOM counts frames (ReferencedFrameNumber); None for a single-frame object.
    frame_number: int | None = None

    def __str__(self) -> str:
        if self.frame_number is None:
            return self.sop_instance_uid
        return f"{self.sop_instance_uid} frame {self.frame_number}"


@dataclass(frozen=True, eq=False)
class Volume:
    """A regular 3D grid in patient coordinates (LPS, millimetres).

    ``array[k, j, i]``: k is the slice, j the row, i the column of the source image; ``array[k]`` is the
    k-th slice exactly as its pixels are stored. ``spacing``, ``origin`` and ``direction`` are in (i, j, k)
    order, as ITK and the NIfTI affine have them: voxel (i, j, k) lies at
    ``origin + direction @ (spacing * (i, j, k))``. Direction columns are the row cosine, the column cosine
    and their cross product, so ``det(direction) == +1`` and k runs along the slice normal. The arrays are
    read-only: volumes are shared through the cache.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    sources: tuple[SliceSource, ...]
    series_instance_uid: str = ""
    frame_of_reference_uid: str = ""

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        depth, rows, columns = self.array.shape
        return columns, rows, depth

    @property
    def sop_instance_uids(self) -> tuple[str, ...]:
        """The SOP Instance UID of each slice k."""
        return tuple(source.sop_instance_uid for source in self.sources)

    @property
    def frame_numbers(self) -> tuple[int | None, ...]:
        """The frame number (1-based) of each slice k, None where the instance is single-frame."""
        return tuple(source.frame_number for source in self.sources)

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    def affine(self) -> np.ndarray:
        """The 4×4 matrix taking (i, j, k, 1) to (L, P, S, 1)."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction * np.asarray(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def index_to_lps(self, ijk: Any) -> np.ndarray:
        """Points (..., 3) in (i, j, k) voxel indices to LPS millimetres."""
        points = np.asarray(ijk, dtype=float)
        matrix = self.affine()
        return points @ matrix[:3, :3].T + matrix[:3, 3]

    def lps_to_index(self, lps: Any) -> np.ndarray:
        """Points (..., 3) in LPS millimetres to continuous (i, j, k) voxel indices."""
        points = np.asarray(lps, dtype=float)
        inverse = np.linalg.inv(self.affine())
        return points @ inverse[:3, :3].T + inverse[:3, 3]


@dataclass
class _Frame:
    source: SliceSource
    dataset: int  # index into the data sets
    frame: int  # 0-based index into that data set's frames
    rows: int
    columns: int
    orientation: np.ndarray  # the six direction cosines
    position: np.ndarray
    pixel_spacing: tuple[float, float]  # (between rows, between columns), as PixelSpacing has them
    slice_thickness: float | None
    slope: float
    intercept: float


def _floats(value: Any, count: int, what: str, where: SliceSource) -> np.ndarray:
    try:
        result = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError) as exc:
        raise MissingGeometryError(f"{where}: {what} {value!r} is not {count} numbers") from exc
    if result.shape != (count,) or not np.all(np.isfinite(result)):
        raise MissingGeometryError(f"{where}: {what} {value!r} is not {count} numbers")
    return result


def _optional_float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _functional_item(ds: Dataset, frame: int, keyword: str) -> Dataset | None:
    """The item of a functional group macro for one frame: per-frame first, then shared (PS3.3 C.7.6.16)."""
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        groups.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        sequence = group.get(keyword)
        if sequence:
            return sequence[0]
    return None


def _attribute(ds: Dataset, frame: int, macro: str, keyword: str) -> Any:
    item = _functional_item(ds, frame, macro)
    if item is not None and keyword in item:
        return item[keyword].value
    return ds.get(keyword)


def _check_image(ds: Dataset, index: int) -> str:
    sop_instance_uid = str(ds.get("SOPInstanceUID", "") or f"data set {index + 1}").strip()
    sop_class = ds.get("SOPClassUID")
    name = UID(str(sop_class)).name if sop_class else ""
    if not name.endswith("Image Storage"):
        if name:
            kind = f"a {name} object"
        elif sop_class:
            kind = f"an object of SOP class {sop_class}"
        else:
            kind = "an object without SOP Class UID"
        raise NotAnImageError(f"{sop_instance_uid} is {kind}, not an image: it has no voxel grid of its own")
    if "PixelData" not in ds:
        raise NotAnImageError(f"{sop_instance_uid} is an image object without pixel data")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        photometric = ds.get("PhotometricInterpretation", "")
        raise UnsupportedPixelDataError(
            f"{sop_instance_uid} is a colour image ({photometric}, {samples} samples per pixel): "
            "volumes are single-channel"
        )
    return sop_instance_uid


def _frames_of(ds: Dataset, index: int) -> list[_Frame]:
    sop_instance_uid = _check_image(ds, index)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    rows, columns = int(ds.Rows), int(ds.Columns)
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    offsets = ds.get("GridFrameOffsetVector")
    frames = []
    for frame in range(count):
        source = SliceSource(sop_instance_uid, frame + 1 if count > 1 else None)
        orientation_value = _attribute(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient")
        position_value = _attribute(ds, frame, "PlanePositionSequence", "ImagePositionPatient")
        spacing_value = _attribute(ds, frame, "PixelMeasuresSequence", "PixelSpacing")
        for value, keyword in (
            (orientation_value, "ImageOrientationPatient"),
            (position_value, "ImagePositionPatient"),
            (spacing_value, "PixelSpacing"),
        ):
            if value is None:
                raise MissingGeometryError(
                    f"{source}: {keyword} is missing, so its place in space is unknown"
                )
        orientation = _floats(orientation_value, 6, "ImageOrientationPatient", source)
        position = _floats(position_value, 3, "ImagePositionPatient", source)
        if count > 1 and not enhanced:
            # Classic multi-frame (RT dose style): frames stacked along the normal by an offset vector.
            if offsets is None or len(offsets) != count:
                raise MissingGeometryError(
                    f"{sop_instance_uid}: multi-frame object without per-frame positions "
                    "(no Per-frame Functional Groups and no Grid Frame Offset Vector)"
                )
            normal = np.cross(orientation[:3], orientation[3:])
            position = position + (float(offsets[frame]) - float(offsets[0])) * normal
        pixel_spacing = _floats(spacing_value, 2, "PixelSpacing", source)
        if np.any(pixel_spacing <= 0):
            raise MissingGeometryError(f"{source}: PixelSpacing {list(pixel_spacing)} is not positive")
        slope = _optional_float(_attribute(ds, frame, "PixelValueTransformationSequence", "RescaleSlope"))
        intercept = _optional_float(
            _attribute(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept")
        )
        frames.append(
            _Frame(
                source=source,
                dataset=index,
                frame=frame,
                rows=rows,
                columns=columns,
                orientation=orientation,
                position=position,
                pixel_spacing=(float(pixel_spacing[0]), float(pixel_spacing[1])),
                slice_thickness=_optional_float(
                    _attribute(ds, frame, "PixelMeasuresSequence", "SliceThickness")
                ),
                slope=1.0 if slope is None else slope,
                intercept=0.0 if intercept is None else intercept,
            )
        )
    return frames


def _unit_axes(orientation: np.ndarray, where: SliceSource) -> tuple[np.ndarray, np.ndarray]:
    row, column = orientation[:3], orientation[3:]
    norms = np.linalg.norm(row), np.linalg.norm(column)
    if abs(norms[0] - 1) > 0.01 or abs(norms[1] - 1) > 0.01 or abs(float(row @ column)) > 0.01:
        raise MissingGeometryError(
            f"{where}: ImageOrientationPatient {list(orientation)} is not two orthogonal unit vectors"
        )
    return row / norms[0], column / norms[1]


def _check_consistent(frames: list[_Frame], frame_of_reference_uids: set[str]) -> None:
    if len(frame_of_reference_uids) > 1:
        raise MixedFrameOfReferenceError(
            f"the series mixes frames of reference {sorted(frame_of_reference_uids)}: "
            "its images do not share one patient coordinate system"
        )
    first = frames[0]
    for frame in frames[1:]:
        if (frame.rows, frame.columns) != (first.rows, first.columns):
            raise MixedSizeError(
                f"{frame.source} is {frame.rows}×{frame.columns} (rows×columns) but {first.source} is "
                f"{first.rows}×{first.columns}: the slices do not stack into one grid"
            )
        deviation = float(np.max(np.abs(frame.orientation - first.orientation)))
        if deviation > ORIENTATION_TOLERANCE:
            raise MixedOrientationError(
                f"{frame.source} has ImageOrientationPatient {list(np.round(frame.orientation, 6))} but "
                f"{first.source} has {list(np.round(first.orientation, 6))}: the series mixes orientations "
                "(a localizer, or several stacks in one series)"
            )
        if max(abs(a - b) for a, b in zip(frame.pixel_spacing, first.pixel_spacing, strict=True)) > (
            PIXEL_SPACING_TOLERANCE_MM
        ):
            raise MixedPixelSpacingError(
                f"{frame.source} has PixelSpacing {list(frame.pixel_spacing)} but {first.source} has "
                f"{list(first.pixel_spacing)}"
            )


def _slice_step(frames: list[_Frame], normal: np.ndarray, row: np.ndarray, column: np.ndarray) -> float:
    """Check that sorted frames sit on a regular stack along ``normal`` and return the step (mm)."""
    if len(frames) == 1:
        thickness = frames[0].slice_thickness
        return thickness if thickness and thickness > 0 else 1.0
    positions = np.array([frame.position for frame in frames])
    along = positions @ normal
    steps = np.diff(along)
    for index in np.flatnonzero(steps < DUPLICATE_TOLERANCE_MM):
        raise DuplicatePositionError(
            f"{frames[index].source} and {frames[index + 1].source} are at the same position "
            f"({along[index]:.3f} mm along the slice normal): the series holds more than one image per "
            "position (e.g. several echoes, phases or time points)"
        )
    offsets = positions - positions[0]
    drift = np.hypot(offsets @ row, offsets @ column)
    smallest_pixel = min(frames[0].pixel_spacing)
    if drift.max() > TILT_TOLERANCE * smallest_pixel:
        worst = int(np.argmax(drift / np.maximum(np.abs(along - along[0]), 1e-9)))
        angle = math.degrees(math.atan2(drift[worst], abs(along[worst] - along[0])))
        raise GantryTiltError(
            f"the slice positions move {drift.max():.2f} mm within the image plane over the stack "
            f"(a tilt of about {angle:.1f}° between the slice normal and the stacking direction, as from a "
            "tilted gantry): a regular grid would be sheared; resample the series to an untilted grid first"
        )
    typical = float(np.median(steps))
    for index in np.flatnonzero(steps > GAP_FACTOR * typical):
        missing = round(steps[index] / typical) - 1
        raise MissingSliceError(
            f"a gap of {steps[index]:.3f} mm between {frames[index].source} (at {along[index]:.3f} mm) and "
            f"{frames[index + 1].source} (at {along[index + 1]:.3f} mm) where the typical step is "
            f"{typical:.3f} mm: about {missing} slice(s) missing"
        )
    step = float((along[-1] - along[0]) / (len(frames) - 1))
    residual = np.abs(along - along[0] - step * np.arange(len(frames)))
    if residual.max() > UNEVEN_TOLERANCE * step:
        worst = int(np.argmax(residual))
        raise UnevenSpacingError(
            f"uneven slice spacing: steps from {steps.min():.3f} to {steps.max():.3f} mm; "
            f"{frames[worst].source} lies {residual[worst]:.3f} mm off a regular {step:.3f} mm grid "
            f"(tolerance {UNEVEN_TOLERANCE * step:.3f} mm)"
        )
    return step


def _decode(ds: Dataset, count: int, rows: int, columns: int) -> np.ndarray:
    where = ds.get("SOPInstanceUID", "")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for missing plugins and damaged data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", syntax)
        raise UnsupportedPixelDataError(f"{where}: pixel data in {name} cannot be decoded: {exc}") from exc
    if pixels.size != count * rows * columns:
        raise UnsupportedPixelDataError(
            f"{where}: decoded {pixels.shape} pixels where {count}×{rows}×{columns} were expected"
        )
    return pixels.reshape(count, rows, columns)


def _output_dtype(frames: list[_Frame], decoded: list[np.ndarray]) -> np.dtype:
    """Integers stay integers where the rescale keeps them exact; anything else becomes float32."""
    if any(frame.slope != 1 or frame.intercept != round(frame.intercept) for frame in frames):
        return np.dtype(np.float32)
    stored = np.result_type(*(pixels.dtype for pixels in decoded)).newbyteorder("=")
    if all(frame.intercept == 0 for frame in frames):
        return stored
    low = min(float(pixels.min()) for pixels in decoded) + min(frame.intercept for frame in frames)
    high = max(float(pixels.max()) for pixels in decoded) + max(frame.intercept for frame in frames)
    for candidate in (np.int16, np.int32, np.int64):
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            return np.dtype(candidate)
    return np.dtype(np.float64)


def volume_from_datasets(datasets: Sequence[Dataset]) -> Volume:
    """Stack the frames of ``datasets`` (one series, in any order) into a :class:`Volume`.

    Raises a :class:`VolumeError` subclass for anything that does not make one regular grid.
    """
    if not datasets:
        raise EmptySeriesError("the series has no instances")
    frames = [frame for index, ds in enumerate(datasets) for frame in _frames_of(ds, index)]
    frame_of_reference_uids = {
        str(ds.FrameOfReferenceUID).strip() for ds in datasets if ds.get("FrameOfReferenceUID")
    }
    _check_consistent(frames, frame_of_reference_uids)
    row, column = _unit_axes(frames[0].orientation, frames[0].source)
    normal = np.cross(row, column)
    normal /= np.linalg.norm(normal)
    frames.sort(key=lambda frame: float(frame.position @ normal))
    step = _slice_step(frames, normal, row, column)

    # Decoded only now: a series that cannot make a grid fails before the expensive part.
    rows, columns = frames[0].rows, frames[0].columns
    decoded = [_decode(ds, int(ds.get("NumberOfFrames", 1) or 1), rows, columns) for ds in datasets]
    dtype = _output_dtype(frames, decoded)
    array = np.empty((len(frames), rows, columns), dtype=dtype)
    for k, frame in enumerate(frames):
        pixels = decoded[frame.dataset][frame.frame]
        if dtype.kind == "f":
            array[k] = pixels.astype(np.float64) * frame.slope + frame.intercept
        else:
            array[k] = pixels.astype(np.int64) + int(frame.intercept)
    array.flags.writeable = False

    direction = np.column_stack([row, column, normal])
    direction.flags.writeable = False
    row_spacing, column_spacing = frames[0].pixel_spacing
    first = datasets[0]
    return Volume(
        array=array,
        spacing=(column_spacing, row_spacing, step),
        origin=(float(frames[0].position[0]), float(frames[0].position[1]), float(frames[0].position[2])),
        direction=direction,
        sources=tuple(frame.source for frame in frames),
        series_instance_uid=str(first.get("SeriesInstanceUID", "") or "").strip(),
        frame_of_reference_uid=next(iter(frame_of_reference_uids), ""),
    )
