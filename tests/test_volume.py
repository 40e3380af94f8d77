"""Series → volume, against independent references in ../shared/data and synthetic series for every rule.

References: the IBSI NIfTI images (converted by MIRP, not by us), TotalSegmentator's liver on the DICOM grid,
and the decubitus MR pair, whose patient-space placement is checked against the DICOM tags and the anatomy.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)

from webapp.studies.importing import import_sources, iter_path_sources
from webapp.studies.models import Series
from webapp.studies.volume import (
    DuplicatePositionError,
    EmptySeriesError,
    GantryTiltError,
    MissingGeometryError,
    MissingSliceError,
    MixedFrameOfReferenceError,
    MixedOrientationError,
    MixedPixelSpacingError,
    MixedSizeError,
    NotAnImageError,
    SliceSource,
    UnevenSpacingError,
    UnsupportedPixelDataError,
    Volume,
    VolumeCache,
    VolumeError,
    build_volume,
    volume_cache,
    volume_from_datasets,
)

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
STS = "sts_ibsi/dicom/STS_001"
CT_RAW = "ct_totalseg/dicom_raw_uidfixed"
CT_J2K = "ct_totalseg/dicom_j2k_uidfixed"
DECUBITUS = "mr_dicom_decubitus"


def read_series(folder: Path) -> list[Dataset]:
    return [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]


def nifti_on_grid(volume: Volume, image: nib.Nifti1Image) -> np.ndarray:
    """The NIfTI's voxels in the volume's [k, j, i] order, mapped through both affines.

    The grids must coincide: the NIfTI index → volume index map must be a signed permutation with integer
    offsets, to a thousandth of a voxel; otherwise the two would need resampling and this is no exact check.
    """
    mapping = np.linalg.inv(volume.affine()) @ RAS_TO_LPS @ image.affine
    rounded = np.round(mapping)
    assert np.abs(mapping - rounded).max() < 1e-3, mapping
    linear, offset = rounded[:3, :3], rounded[:3, 3]
    assert (np.abs(linear).sum(axis=0) == 1).all() and (np.abs(linear).sum(axis=1) == 1).all(), linear
    # The affines themselves agree to a thousandth of a millimetre once the axes are matched.
    np.testing.assert_allclose(
        volume.affine(), RAS_TO_LPS @ image.affine @ np.linalg.inv(rounded), atol=1e-3, rtol=0
    )
    source_axis = [int(np.flatnonzero(linear[axis])[0]) for axis in range(3)]
    data = np.transpose(np.asanyarray(image.dataobj), source_axis)  # now in (i, j, k) order
    for axis in range(3):
        if linear[axis, source_axis[axis]] < 0:
            data = np.flip(data, axis)
            assert offset[axis] == data.shape[axis] - 1
        else:
            assert offset[axis] == 0
    assert data.shape == volume.shape_ijk
    return data.transpose(2, 1, 0)


# --- independent references ---------------------------------------------------------------------------


@pytest.mark.parametrize("modality", ["CT", "MR_T1", "PET"])
def test_sts_series_equal_the_nifti_images(shared_data, modality):
    volume = volume_from_datasets(read_series(shared_data / STS / modality / "image"))
    image = nib.load(shared_data / f"sts_ibsi/nifti/STS_001/{modality}_image.nii.gz")
    reference = nifti_on_grid(volume, image)
    assert volume.array.shape == (59, *reference.shape[1:])
    if modality == "PET":
        # SUV = stored × per-slice RescaleSlope; both sides round the product to float32, in different
        # order, so they may differ by one unit in the last place (measured: at most 1.2e-7 relative).
        assert volume.array.dtype == np.float32
        np.testing.assert_allclose(volume.array, reference, rtol=1e-6, atol=0)
    else:
        # CT (HU, slope 1, intercept 0) and the normalised MR are integers stored as float32 in the NIfTI.
        assert volume.array.dtype.kind == "i"
        np.testing.assert_array_equal(volume.array, reference)


def test_j2k_copy_gives_the_same_volume_and_the_liver_is_89_hu(shared_data):
    raw = volume_from_datasets(read_series(shared_data / CT_RAW))
    j2k = volume_from_datasets(read_series(shared_data / CT_J2K))
    np.testing.assert_array_equal(raw.array, j2k.array)
    np.testing.assert_array_equal(raw.affine(), j2k.affine())
    assert raw.sources == j2k.sources
    assert raw.array.shape == (20, 512, 512) and raw.array.dtype == np.int16
    assert raw.spacing == (0.9765625, 0.9765625, 2.0)  # the step of the positions, not SliceThickness (3)

    classes = json.loads((shared_data / "ct_totalseg/totalseg_classmap.json").read_text())["total"]
    ids = {name: int(label) for label, name in classes.items()}
    nifti = shared_data / "ct_totalseg/nifti"
    labels = nifti_on_grid(raw, nib.load(nifti / "example_seg_dicom_dicomorder.nii.gz"))
    # The other copy stores its rows flipped, and says so in its affine: through the affines both agree.
    flipped = nifti_on_grid(raw, nib.load(nifti / "example_seg_dicom.nii.gz"))
    np.testing.assert_array_equal(labels, flipped)

    liver = labels == ids["liver"]
    assert liver.sum() > 10_000
    assert raw.array[liver].mean() == pytest.approx(89, abs=1.0)  # measured 89.30 HU
    # Asymmetric anatomy: the liver lies on the patient's right (L negative), the spleen on the left.
    centre = {
        name: raw.index_to_lps(np.argwhere(labels == ids[name])[:, ::-1].mean(axis=0))
        for name in ("liver", "spleen")
    }
    assert centre["liver"][0] < -40 < 40 < centre["spleen"][0]


def decubitus_volumes(shared_data: Path) -> dict[str, tuple[Volume, list[Dataset]]]:
    result = {}
    for position, folder in (("HFS", "HFS_3_t1_fl2d_sag"), ("HFP", "HFP_2_t1_fl2d_sag")):
        datasets = read_series(shared_data / DECUBITUS / folder)
        assert {ds.PatientPosition for ds in datasets} == {position}
        result[position] = (volume_from_datasets(datasets), datasets)
    return result


def test_decubitus_voxels_land_where_the_tags_say(shared_data):
    rng = np.random.default_rng(2)
    for volume, datasets in decubitus_volumes(shared_data).values():
        by_uid = {ds.SOPInstanceUID: ds for ds in datasets}
        assert volume.array.shape == (35, 256, 256)
        assert np.linalg.det(volume.direction) == pytest.approx(1)
        for k, source in enumerate(volume.sources):
            ds = by_uid[source.sop_instance_uid]
            np.testing.assert_array_equal(volume.array[k], ds.pixel_array)
            # PS3.3 C.7.6.2.1.1: voxel (i, j) is IPP + i Δcolumn · row cosine + j Δrow · column cosine.
            row_cosine = np.array(ds.ImageOrientationPatient[:3], dtype=float)
            column_cosine = np.array(ds.ImageOrientationPatient[3:], dtype=float)
            delta_row, delta_column = (float(v) for v in ds.PixelSpacing)
            ij = rng.integers(0, 256, size=(4, 2))
            expected = (
                np.array(ds.ImagePositionPatient, dtype=float)
                + ij[:, :1] * delta_column * row_cosine
                + ij[:, 1:] * delta_row * column_cosine
            )
            points = np.column_stack([ij, np.full(4, k)])
            np.testing.assert_allclose(volume.index_to_lps(points), expected, atol=1e-3)
            np.testing.assert_allclose(volume.lps_to_index(expected), points, atol=1e-6)


def test_decubitus_anatomy_has_the_same_orientation_in_patient_space(shared_data):
    """HFS and HFP: the scanner writes both in patient coordinates, so the tags (and the volumes' grids) are
    identical even though the patient lay on the back in one and on the face in the other. A builder that
    "corrected" for PatientPosition would mirror the prone head. The physical check: after the best pure
    translation the heads match, better than after mirroring the prone one front-to-back or top-to-bottom,
    and that translation agrees with the shift of the intensity centroids (the head moved between scans).
    """
    volumes = decubitus_volumes(shared_data)
    supine, prone = volumes["HFS"][0], volumes["HFP"][0]
    np.testing.assert_allclose(supine.affine(), prone.affine(), atol=1e-6)
    # Sagittal: i runs posterior, j inferior, k (their cross product) towards the patient's right.
    np.testing.assert_allclose(supine.direction, [[0, 0, -1], [1, 0, 0], [0, -1, 0]], atol=1e-9)

    step = 4  # in-plane subsampling keeps the correlation fast; 4 mm is fine for a whole head
    a = supine.array[:, ::step, ::step].astype(float)
    b = prone.array[:, ::step, ::step].astype(float)
    axis_of = {lps: 2 - int(np.argmax(np.abs(supine.direction[lps]))) for lps in range(3)}  # array axis

    def best_translation(fixed: np.ndarray, moving: np.ndarray) -> tuple[float, np.ndarray]:
        fixed = (fixed - fixed.mean()) / fixed.std()
        moving = (moving - moving.mean()) / moving.std()
        size = [x + y - 1 for x, y in zip(fixed.shape, moving.shape, strict=True)]
        axes = (0, 1, 2)
        spectrum = np.fft.rfftn(fixed, size, axes) * np.fft.rfftn(moving[::-1, ::-1, ::-1], size, axes)
        correlation = np.fft.irfftn(spectrum, size, axes) / fixed.size
        peak = np.unravel_index(np.argmax(correlation), correlation.shape)
        # moving's content sits this many voxels (k, j, i) away from fixed's
        return float(correlation.max()), np.array(
            [n - 1 - p for p, n in zip(peak, moving.shape, strict=True)]
        )

    score, shift_kji = best_translation(a, b)
    mirrored_ap = best_translation(a, np.flip(b, axis_of[1]))[0]
    mirrored_si = best_translation(a, np.flip(b, axis_of[2]))[0]
    assert score > 0.65  # measured 0.70
    assert score > mirrored_ap + 0.08 and score > mirrored_si + 0.08  # measured 0.57 and 0.46

    shift_mm = supine.direction @ (shift_kji[::-1] * np.array([step, step, 1]) * np.array(supine.spacing))

    def centroid(volume: Volume) -> np.ndarray:
        weights = volume.array.astype(float)
        ijk = np.indices(weights.shape).reshape(3, -1)[::-1]
        return volume.index_to_lps((ijk * weights.ravel()).sum(axis=1) / weights.sum())

    moved = centroid(prone) - centroid(supine)
    assert np.linalg.norm(moved) < 60  # the same head in the same coil; measured 43 mm, mostly front-back
    assert np.linalg.norm(shift_mm - moved) < 12  # measured 8 mm


# --- transfer syntaxes and multi-frame ------------------------------------------------------------------

MR_SMALL_SYNTAXES = [
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
]


@pytest.mark.parametrize("name", MR_SMALL_SYNTAXES)
def test_every_decodable_transfer_syntax_gives_the_same_volume(name):
    # pydicom's own copies of one MR slice in several transfer syntaxes (installed with pydicom).
    reference = volume_from_datasets([pydicom.dcmread(get_testdata_file("MR_small.dcm"))])
    volume = volume_from_datasets([pydicom.dcmread(get_testdata_file(name))])
    assert volume.array.dtype == np.int16 and volume.array.dtype.isnative
    np.testing.assert_array_equal(volume.array, reference.array)
    np.testing.assert_array_equal(volume.affine(), reference.affine())


def enhanced_ct(datasets: list[Dataset], order: list[int]) -> Dataset:
    """One Enhanced CT object holding ``datasets`` (single-frame CT slices) as frames in ``order``.

    Orientation and pixel spacing go in the Shared Functional Groups, positions per frame, and each frame
    gets its own rescale intercept (a different stored value for the same HU) overriding a shared one.
    """
    first = datasets[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.Rows, ds.Columns = first.Rows, first.Columns
    ds.NumberOfFrames = len(order)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = first.ImageOrientationPatient
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = first.PixelSpacing
    shared.PixelMeasuresSequence[0].SliceThickness = first.SliceThickness
    shared.PixelValueTransformationSequence = [Dataset()]
    shared.PixelValueTransformationSequence[0].RescaleSlope = 1
    shared.PixelValueTransformationSequence[0].RescaleIntercept = 0
    ds.SharedFunctionalGroupsSequence = [shared]
    frames, per_frame = [], []
    for number, index in enumerate(order):
        source = datasets[index]
        hu = source.pixel_array.astype(np.int32) * int(source.RescaleSlope) + int(source.RescaleIntercept)
        intercept = 7 * number - 100
        frames.append((hu - intercept).astype(np.int16))
        group = Dataset()
        group.PlanePositionSequence = [Dataset()]
        group.PlanePositionSequence[0].ImagePositionPatient = source.ImagePositionPatient
        group.PixelValueTransformationSequence = [Dataset()]
        group.PixelValueTransformationSequence[0].RescaleSlope = 1
        group.PixelValueTransformationSequence[0].RescaleIntercept = intercept
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.stack(frames).tobytes()
    return ds


def test_enhanced_multiframe_equals_the_single_frame_series(shared_data):
    datasets = read_series(shared_data / STS / "CT" / "image")
    single = volume_from_datasets(datasets)
    order = list(np.random.default_rng(7).permutation(len(datasets)))
    enhanced = enhanced_ct(datasets, order)
    volume = volume_from_datasets([enhanced])
    np.testing.assert_array_equal(volume.array, single.array)
    np.testing.assert_allclose(volume.affine(), single.affine(), atol=1e-9)
    # Each slice names the frame it came from, which held the slice of the same position.
    for k, source in enumerate(volume.sources):
        assert source.sop_instance_uid == enhanced.SOPInstanceUID
        assert source.frame_number is not None
        original = datasets[order[source.frame_number - 1]]
        assert single.sources[k] == SliceSource(original.SOPInstanceUID)


# --- synthetic series: one per rule -----------------------------------------------------------------------

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
FRAME_OF_REFERENCE = generate_uid()


def make_slice(
    position: tuple[float, float, float],
    *,
    orientation: tuple[float, ...] = AXIAL,
    rows: int = 3,
    columns: int = 4,
    spacing: tuple[float, float] = (0.5, 0.8),
    pixels: np.ndarray | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    frame_of_reference: str = FRAME_OF_REFERENCE,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.FrameOfReferenceUID = frame_of_reference
    ds.ImagePositionPatient = list(position)
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 9.0  # deliberately unlike any step: spacing must come from the positions
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    if pixels is None:
        pixels = np.arange(rows * columns, dtype=np.int16).reshape(rows, columns)
    if pixels.dtype == np.uint16:
        ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    return ds


def stack(steps: list[float], **kwargs) -> list[Dataset]:
    return [make_slice((0.0, 0.0, z), **kwargs) for z in steps]


def oblique_orientation() -> tuple[np.ndarray, np.ndarray]:
    # Rotated about two axes, so no axis of the grid is an axis of the patient.
    a, b = math.radians(30), math.radians(20)
    rotation_z = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rotation_x = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rotation = rotation_x @ rotation_z
    return rotation[:, 0], rotation[:, 1]


def test_slices_are_sorted_along_the_normal_with_spacing_from_positions():
    row, column = oblique_orientation()
    normal = np.cross(row, column)
    start = np.array([10.0, -20.0, 30.0])
    datasets = []
    for n in range(5):
        pixels = (np.arange(12, dtype=np.int16).reshape(3, 4) + 100 * n).astype(np.int16)
        position = start + 2.5 * n * normal
        datasets.append(make_slice(tuple(position), orientation=(*row, *column), pixels=pixels))
    shuffled = [datasets[i] for i in (3, 0, 4, 1, 2)]
    volume = volume_from_datasets(shuffled)

    assert volume.array.shape == (5, 3, 4)  # [k, j, i]: slices, rows, columns
    for k in range(5):
        np.testing.assert_array_equal(volume.array[k], datasets[k].pixel_array)
    assert volume.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in datasets)
    assert volume.frame_numbers == (None,) * 5
    assert volume.spacing == pytest.approx((0.8, 0.5, 2.5))  # (columns, rows, slices)
    np.testing.assert_allclose(volume.origin, start)
    np.testing.assert_allclose(volume.direction, np.column_stack([row, column, normal]), atol=1e-12)
    # Voxel (i=3, j=2, k=4): 3 columns along the row cosine, 2 rows along the column cosine.
    expected = start + 3 * 0.8 * row + 2 * 0.5 * column + 4 * 2.5 * normal
    np.testing.assert_allclose(volume.index_to_lps([3, 2, 4]), expected, atol=1e-9)
    np.testing.assert_allclose(volume.affine() @ [3, 2, 4, 1], [*expected, 1], atol=1e-9)
    assert not volume.array.flags.writeable


def test_reversed_positions_keep_k_along_the_normal():
    # The column cosine points the other way, so the normal is -z: k = 0 is the highest z.
    volume = volume_from_datasets(stack([0, 1, 2, 3], orientation=(1, 0, 0, 0, -1, 0)))
    assert volume.origin[2] == 3
    np.testing.assert_allclose(volume.direction[:, 2], [0, 0, -1])
    assert np.linalg.det(volume.direction) == pytest.approx(1)


def test_rescale_per_slice_and_output_types():
    pixels = np.array([[0, 1, 2, 3]] * 3, dtype=np.int16)
    volume = volume_from_datasets(
        [
            make_slice((0, 0, 0), pixels=pixels, slope=0.5, intercept=-1),
            make_slice((0, 0, 1), pixels=pixels, slope=2, intercept=10),
        ]
    )
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.array[0], pixels * 0.5 - 1)
    np.testing.assert_allclose(volume.array[1], pixels * 2 + 10)
    # Integer intercepts keep integers: int16 while the values fit, int32 beyond.
    small = volume_from_datasets(stack([0, 1], pixels=pixels.astype(np.uint16), intercept=-1024))
    assert small.array.dtype == np.int16 and small.array.min() == -1024
    large = np.full((3, 4), 60000, dtype=np.uint16)
    wide = volume_from_datasets(stack([0, 1], pixels=large, intercept=-1024))
    assert wide.array.dtype == np.int32 and wide.array.max() == 60000 - 1024
    plain = volume_from_datasets(stack([0, 1], pixels=large))
    assert plain.array.dtype == np.uint16


def test_single_slice_is_a_volume_of_depth_one():
    (ds,) = stack([5.0])
    volume = volume_from_datasets([ds])
    assert volume.array.shape == (1, 3, 4)
    assert volume.spacing[2] == 9.0  # SliceThickness, the only depth there is
    del ds.SliceThickness
    assert volume_from_datasets([ds]).spacing[2] == 1.0


def test_classic_multiframe_with_grid_frame_offsets():
    ds = make_slice((1.0, 2.0, 3.0), pixels=np.arange(36, dtype=np.int16).reshape(3, 3, 4))
    ds.NumberOfFrames = 3
    ds.GridFrameOffsetVector = [0, -2, -4]  # frames stacked downwards
    volume = volume_from_datasets([ds])
    assert volume.frame_numbers == (3, 2, 1)
    assert volume.origin == (1.0, 2.0, -1.0) and volume.spacing[2] == pytest.approx(2)
    np.testing.assert_array_equal(volume.array[0], ds.pixel_array[2])
    del ds.GridFrameOffsetVector
    with pytest.raises(MissingGeometryError, match="without per-frame positions"):
        volume_from_datasets([ds])


def test_small_position_noise_is_tolerated():
    volume = volume_from_datasets(stack([0, 1.01, 2, 2.99, 4]))
    assert volume.spacing[2] == pytest.approx(1.0)


def tilted(angle_degrees: float) -> list[Dataset]:
    shift = math.tan(math.radians(angle_degrees))
    return [make_slice((0.0, 2.0 * n * shift, 2.0 * n)) for n in range(4)]


@pytest.mark.parametrize(
    ("datasets", "error", "message"),
    [
        (lambda: [], EmptySeriesError, "no instances"),
        (
            lambda: [*stack([0, 1]), make_slice((0, 0, 2), orientation=(1, 0, 0, 0, 0.996, 0.087))],
            MixedOrientationError,
            "mixes orientations",
        ),
        (lambda: [*stack([0, 1]), make_slice((0, 0, 2), columns=5)], MixedSizeError, "3×5"),
        (
            lambda: [*stack([0, 1]), make_slice((0, 0, 2), spacing=(0.5, 0.9))],
            MixedPixelSpacingError,
            "PixelSpacing",
        ),
        (
            lambda: [*stack([0, 1]), make_slice((0, 0, 2), frame_of_reference="1.2.9")],
            MixedFrameOfReferenceError,
            "frames of reference",
        ),
        (lambda: stack([0, 1, 1, 2]), DuplicatePositionError, "same position"),
        (lambda: stack([0, 1, 2, 4, 5]), MissingSliceError, r"gap of 2\.000 mm .* about 1 slice"),
        (lambda: stack([0, 1, 2, 3.2, 4]), UnevenSpacingError, "uneven slice spacing"),
        (lambda: tilted(20), GantryTiltError, r"about 20\.0°"),
        (lambda: stack([0, 1], spacing=(0.5, 0)), MissingGeometryError, "not positive"),
        (
            lambda: [make_slice((0, 0, 0), orientation=(1, 0, 0, 1, 0, 0))],
            MissingGeometryError,
            "not two orthogonal unit vectors",
        ),
    ],
)
def test_inconsistent_series_are_refused(datasets, error, message):
    with pytest.raises(error, match=message):
        volume_from_datasets(datasets())
    assert issubclass(error, VolumeError)


def test_missing_position_is_refused():
    datasets = stack([0, 1])
    del datasets[1].ImagePositionPatient
    with pytest.raises(MissingGeometryError, match="ImagePositionPatient is missing"):
        volume_from_datasets(datasets)


def test_missing_slice_error_names_the_slices_on_either_side():
    datasets = stack([0, 1, 2, 4, 5])
    with pytest.raises(MissingSliceError) as caught:
        volume_from_datasets(datasets)
    assert datasets[2].SOPInstanceUID in str(caught.value) and datasets[3].SOPInstanceUID in str(caught.value)


def test_a_tiny_tilt_within_tolerance_is_accepted():
    # 0.01° over 6 mm moves the slices by 1 µm in plane, far below a twentieth of a pixel.
    assert volume_from_datasets(tilted(0.01)).array.shape == (4, 3, 4)


@pytest.mark.parametrize(
    "path",
    [
        "dicom_seg_thirdparty/highdicom/seg_image_ct_binary.dcm",  # SEG
        f"{STS}/CT/mask/RS.dcm",  # RTSTRUCT
        "dicom_seg_thirdparty/dcmqi/sr-example/sr.dcm",  # SR
    ],
)
def test_non_image_objects_are_refused(shared_data, path):
    with pytest.raises(NotAnImageError, match="not an image"):
        volume_from_datasets([pydicom.dcmread(shared_data / path)])


def test_colour_and_undecodable_pixel_data_are_refused():
    colour = make_slice((0, 0, 0), pixels=np.zeros((3, 4, 3), dtype=np.int16))
    colour.SamplesPerPixel, colour.PhotometricInterpretation = 3, "RGB"
    with pytest.raises(UnsupportedPixelDataError, match="colour"):
        volume_from_datasets([colour])
    broken = make_slice((0, 0, 0))
    broken.file_meta.TransferSyntaxUID = JPEG2000Lossless
    broken.PixelData = encapsulate([b"\xff\x4f\xff\x51 not a codestream"])
    with pytest.raises(UnsupportedPixelDataError, match="cannot be decoded"):
        volume_from_datasets([broken])


# --- the stored series and the cache -------------------------------------------------------------------


@pytest.fixture
def empty_cache():
    volume_cache.clear()
    yield volume_cache
    volume_cache.clear()


@pytest.mark.django_db
def test_build_volume_of_a_stored_series_is_cached_until_it_changes(shared_data, empty_cache, settings):
    files = sorted((shared_data / CT_RAW).glob("*.dcm"))
    # At first without the most superior slice: the series is still regular, one slice shorter.
    outcomes = import_sources(iter_path_sources(files[1:]))
    assert {outcome.status for outcome in outcomes} == {"stored"}
    series = Series.objects.get()

    volume = build_volume(series)
    assert volume.array.shape == (19, 512, 512)
    assert volume.series_instance_uid == series.series_instance_uid
    reference = volume_from_datasets([pydicom.dcmread(path) for path in files[1:]])
    np.testing.assert_array_equal(volume.array, reference.array)
    np.testing.assert_array_equal(volume.affine(), reference.affine())
    assert build_volume(series) is volume
    assert empty_cache.stats().hits == 1 and empty_cache.stats().misses == 1

    # A new instance changes the fingerprint: the next request builds again, and the stale grid is dropped.
    import_sources(iter_path_sources(files[:1]))
    grown = build_volume(series)
    assert grown.array.shape == (20, 512, 512)
    assert empty_cache.stats().entries == 1
    assert empty_cache.stats().bytes == grown.nbytes

    # A budget smaller than the volume: built every time, never kept.
    settings.ANNOVOX_VOLUME_CACHE_BYTES = grown.nbytes - 1
    empty_cache.clear()
    assert build_volume(series) is not build_volume(series)
    assert empty_cache.stats().entries == 0


def small_volume(value: int, nbytes: int = 100) -> Volume:
    array = np.full((1, 1, nbytes), value, dtype=np.uint8)
    return Volume(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3), (SliceSource(str(value)),))


def test_cache_evicts_least_recently_used_within_its_byte_budget():
    cache = VolumeCache(lambda: 250)
    for name in "abc":
        cache.put((name, "1"), small_volume(ord(name)))
    assert cache.get(("a", "1")) is None  # 300 bytes do not fit in 250: the oldest went
    assert cache.get(("b", "1")) is not None  # now b is the most recent
    cache.put(("d", "1"), small_volume(4))
    assert cache.get(("c", "1")) is None and cache.get(("b", "1")) is not None
    assert cache.stats().bytes == 200
    cache.put(("huge", "1"), small_volume(5, nbytes=251))
    assert cache.get(("huge", "1")) is None and cache.stats().entries == 2
    cache.put(("b", "2"), small_volume(6))  # a new fingerprint of series b replaces the old one
    assert cache.get(("b", "1")) is None and cache.get(("b", "2")) is not None


def test_cache_builds_each_volume_once_under_concurrency():
    cache = VolumeCache(lambda: 10_000)
    builds: list[str] = []
    results: dict[int, Volume] = {}

    def build(name: str) -> Volume:
        builds.append(name)
        time.sleep(0.05)
        return small_volume(len(builds))

    def worker(index: int) -> None:
        name = "ab"[index % 2]
        results[index] = cache.get_or_build((name, "1"), lambda: build(name))

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(builds) == ["a", "b"]
    assert len({id(results[index]) for index in range(0, 16, 2)}) == 1
    assert len({id(results[index]) for index in range(1, 16, 2)}) == 1
    assert cache.stats().misses == 2 and cache.stats().hits + cache.stats().misses == 16


def test_cache_stays_within_budget_under_concurrent_churn():
    cache = VolumeCache(lambda: 1_000)
    over_budget: list[int] = []

    def worker(offset: int) -> None:
        for n in range(200):
            key = (str((n * 7 + offset) % 40), "1")
            cache.get_or_build(key, lambda n=n: small_volume(n % 250, nbytes=50 + n % 100))
            if cache.stats().bytes > 1_000:
                over_budget.append(cache.stats().bytes)

    threads = [threading.Thread(target=worker, args=(offset,)) for offset in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = cache.stats()
    assert not over_budget
    assert stats.bytes <= 1_000 and stats.hits + stats.misses == 1_600
