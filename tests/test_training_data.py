"""Training data reading, target objects, patch sampling and augmentation, on the shared data in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.training.augment import AugmentConfig, augment
from inference.training.data import (
    VALIDATION_PATIENTS,
    LabelledVolume,
    TargetObject,
    TrainingCase,
    TrainingDataError,
    find_objects,
    object_mask,
    read_case,
    read_manifest,
    sample_patch,
    training_cases,
    validation_cases,
)

pytest.importorskip("nibabel")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NIFTI = DATA / "ct_totalseg" / "nifti"
STS = DATA / "sts_ibsi" / "nifti"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared data not present")

NO_AUGMENT = AugmentConfig(0, (1, 1), 0, 0, 0, (0, 0), 0)


def test_totalseg_pair_reads_on_one_grid_in_kji_order() -> None:
    volume = read_case(
        TrainingCase(NIFTI / "example_ct.nii.gz", NIFTI / "example_seg_fast_force_split.nii.gz", "CT")
    )
    assert volume.image.shape == volume.label.shape == (112, 101, 122)  # stored as i j k = 122 101 112
    assert volume.spacing == (3.0, 3.0, 3.0)
    assert volume.image.dtype == np.float32
    objects = find_objects(volume.label, min_voxels=1)
    assert len(objects) == 61 == len(np.unique(volume.label)) - 1
    for obj in objects[:5]:
        mask = object_mask(volume.label, obj)
        assert int(mask.sum()) == obj.voxels == int((volume.label == obj.label).sum())


def test_mismatched_grids_are_refused_clearly() -> None:
    case = TrainingCase(NIFTI / "example_ct.nii.gz", NIFTI / "example_seg.nii.gz", "CT")
    with pytest.raises(TrainingDataError, match="not on the same voxel grid"):
        read_case(case)


def test_training_split_excludes_validation_patients() -> None:
    training = training_cases(DATA)
    validation = validation_cases(DATA)
    assert VALIDATION_PATIENTS == {"STS_016", "STS_017", "STS_018", "STS_019", "STS_020"}
    for case in training:
        assert not any(
            patient in case.image.parts or patient in case.label.parts for patient in VALIDATION_PATIENTS
        )
    assert {case.image.parent.name for case in validation} == VALIDATION_PATIENTS
    patients = {case.image.parent.name for case in training if case.image.parent.parent == STS}
    assert patients == {f"STS_{n:03d}" for n in range(1, 16)}
    assert {case.modality for case in training} == {"CT", "MR", "PET"}
    assert any(case.label.name == "aal.nii.gz" for case in training)
    assert all(case.image.exists() and case.label.exists() for case in training + validation)


def test_sts_tumour_is_an_object_and_the_mask_matches() -> None:
    volume = read_case(
        TrainingCase(STS / "STS_001" / "CT_image.nii.gz", STS / "STS_001" / "CT_mask.nii.gz", "CT")
    )
    assert volume.image.shape == (59, 202, 198)
    objects = find_objects(volume.label, components=True)
    assert objects[0].label == 1 and objects[0].seed is None
    assert objects[0].voxels == int(volume.label.sum())


def test_components_are_objects_above_the_minimum_size() -> None:
    label = np.zeros((20, 20, 20), dtype=np.uint8)
    label[2:5, 2:5, 2:5] = 1  # 27 voxels
    label[10:14, 10:14, 10:14] = 1  # 64 voxels
    label[18, 18, 18] = 1  # too small as a component
    label[15:17, 2:8, 2:8] = 2  # one component only: no separate component object
    objects = find_objects(label, components=True, min_voxels=5)
    assert [(o.label, o.voxels, o.seed is None) for o in objects] == [
        (1, 92, True),
        (1, 27, False),
        (1, 64, False),
        (2, 72, True),
    ]
    small, large = objects[1], objects[2]
    assert object_mask(label, large).all() and object_mask(label, small).all()
    assert find_objects(label, components=False, min_voxels=5) == [objects[0], objects[3]]
    # A component's box may hold voxels of another component of the same label: the seed tells them apart.
    ring = np.zeros((3, 12, 12), dtype=np.uint8)
    ring[1, 1:11, 1:11] = 1
    ring[1, 3:9, 3:9] = 0
    ring[1, 5:7, 5:7] = 1  # an island inside the ring
    outer, island = find_objects(ring, components=True, min_voxels=1)[1:]
    assert outer.box == (slice(1, 2), slice(1, 11), slice(1, 11)) and island.voxels == 4
    assert int(object_mask(ring, outer).sum()) == outer.voxels == 100 - 36
    assert int(object_mask(ring, island).sum()) == 4


def test_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "cases.csv"
    manifest.write_text(
        "image,label,modality,components\n"
        f"{STS / 'STS_002' / 'PET_image.nii.gz'},{STS / 'STS_002' / 'PET_mask.nii.gz'},PET,yes\n"
        "img.nii.gz,lab.nii.gz,CT,\n"
    )
    cases = read_manifest(manifest)
    assert cases[0].modality == "PET" and cases[0].components
    assert cases[1] == TrainingCase(tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz", "CT", False)
    assert read_case(cases[0]).label.max() == 1
    (tmp_path / "bad.csv").write_text("image,mask\na,b\n")
    with pytest.raises(TrainingDataError, match="label, modality"):
        read_manifest(tmp_path / "bad.csv")


def test_patches_have_the_patch_shape_and_hold_the_object() -> None:
    volume = read_case(
        TrainingCase(NIFTI / "example_ct.nii.gz", NIFTI / "example_seg_fast_force_split.nii.gz", "CT")
    )
    objects = find_objects(volume.label)
    rng = np.random.default_rng(0)
    small = [o for o in objects if all(s.stop - s.start <= 32 for s in o.box)]
    assert small
    centres = set()
    for obj in small[:6]:
        for _ in range(3):
            image, mask = sample_patch(volume, obj, (32, 32, 32), rng)
            assert image.shape == mask.shape == (32, 32, 32)
            assert int(mask.sum()) == obj.voxels  # the whole object is inside
            # Image and mask are aligned: the image under the mask is the image under the label.
            assert np.isclose(image[mask > 0].sum(), volume.image[volume.label == obj.label].sum())
            centres.add(tuple(np.argwhere(mask).mean(axis=0).round().astype(int)))
    assert len(centres) > 6  # random offsets, not always centred
    # A large object (the liver is bigger than 32 along some axis): the patch lies within its extent.
    big = max(objects, key=lambda o: o.voxels)
    image, mask = sample_patch(volume, big, (32, 32, 32), rng)
    assert mask.shape == (32, 32, 32) and mask.any()


def test_patches_are_zero_padded_at_the_border() -> None:
    label = np.zeros((10, 10, 10), dtype=np.uint8)
    label[0:2, 0:2, 0:2] = 1
    image = np.arange(1000, dtype=np.float32).reshape(10, 10, 10) + 1
    volume = LabelledVolume(
        image, label, (1.0, 1.0, 1.0), np.eye(4), TrainingCase(Path("a"), Path("b"), "CT")
    )
    obj = TargetObject(1, (slice(0, 2), slice(0, 2), slice(0, 2)), 8)
    for seed in range(5):
        patch, mask = sample_patch(volume, obj, (8, 8, 8), np.random.default_rng(seed))
        assert int(mask.sum()) == 8
        assert np.array_equal(patch > 0, _inside(patch.shape, mask))


def _inside(shape: tuple[int, ...], mask: np.ndarray) -> np.ndarray:
    # The image part of a patch is where the padded region is not: the image is 1.. everywhere.
    corner = np.argwhere(mask).min(axis=0)
    inside = np.zeros(shape, dtype=bool)
    inside[corner[0] :, corner[1] :, corner[2] :] = True
    return inside


def _asymmetric() -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((16, 20, 24), dtype=np.uint8)
    mask[2:5, 3:12, 10:22] = 1
    mask[8:14, 14:18, 1:4] = 1
    image = np.random.default_rng(1).normal(0, 0.1, mask.shape).astype(np.float32) + 10 * mask
    return image, mask


def test_transposition_moves_image_and_mask_together() -> None:
    image, mask = _asymmetric()
    config = AugmentConfig(transpose_probability=1.0, scale_probability=0, invert_probability=0,
                           noise_probability=0, contrast_probability=0)  # fmt: skip
    shapes = set()
    for seed in range(8):
        out_image, out_mask = augment(image, mask, np.random.default_rng(seed), config)
        shapes.add(out_mask.shape)
        assert np.array_equal(out_image > 5, out_mask.astype(bool))
        assert int(out_mask.sum()) == int(mask.sum())
        assert sorted(out_mask.shape) == sorted(mask.shape)
    assert len(shapes) > 1


def test_scaling_keeps_image_and_mask_aligned_and_the_shape() -> None:
    image, mask = _asymmetric()
    config = AugmentConfig(scale_probability=1.0, transpose_probability=0, invert_probability=0,
                           noise_probability=0, contrast_probability=0)  # fmt: skip
    for seed in range(5):
        out_image, out_mask = augment(image, mask, np.random.default_rng(seed), config)
        assert out_image.shape == out_mask.shape == mask.shape
        assert out_mask.any()
        agree = np.mean((out_image > 5) == out_mask.astype(bool))
        assert agree > 0.97  # linear vs nearest differ only on edges


def test_augmentation_is_deterministic_per_seed() -> None:
    image, mask = _asymmetric()
    config = AugmentConfig(1.0, (0.8, 1.2), 1.0, 0.5, 1.0, (0.05, 0.1), 1.0)
    a = augment(image, mask, np.random.default_rng(7), config)
    b = augment(image, mask, np.random.default_rng(7), config)
    c = augment(image, mask, np.random.default_rng(8), config)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_intensity_operations_do_not_touch_the_mask() -> None:
    image, mask = _asymmetric()
    config = AugmentConfig(scale_probability=0, transpose_probability=0, invert_probability=1.0,
                           noise_probability=1.0, contrast_probability=1.0)  # fmt: skip
    out_image, out_mask = augment(image, mask, np.random.default_rng(3), config)
    assert np.array_equal(out_mask, mask) and out_mask is not mask
    assert not np.allclose(out_image, image)
    # Inverted: the object is now darker than the background.
    assert out_image[mask > 0].mean() < out_image[mask == 0].mean()
    unchanged_image, unchanged_mask = augment(image, mask, np.random.default_rng(3), NO_AUGMENT)
    assert np.array_equal(unchanged_image, image) and np.array_equal(unchanged_mask, mask)
