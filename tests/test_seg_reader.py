"""The DICOM SEG reader against other people's SEGs, their ground truth and an independent reader (dcmqi).

References: the NRRD label files that dcmqi's SEGs were made from, TotalSegmentator's NIfTI labels on the
CT's DICOM grid, and dcmqi's own ``segimage2itkimage``, whose output is mapped onto the volume through its
affine. Variants that no third party ships (flipped, transposed and sagittal frames, missing geometry,
frames off the grid) are built from those SEGs here, so each has an exact expected answer.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from tests.conftest import DATA, require
from webapp.segmentations.dicom_seg import (
    Code,
    MissingGeometryError,
    NotASegError,
    SegError,
    SourceMismatchError,
    UnsupportedSegError,
    reader,
)
from webapp.segmentations.dicom_seg.reader import (
    cielab_to_srgb_hex,
    read_seg,
    referenced_instance_uids,
    referenced_series_uids,
)
from webapp.studies.volume import Volume, volume_from_datasets

SEGS = DATA / "dicom_seg_thirdparty"
DCMQI = SEGS / "dcmqi/segmentations"
HIGHDICOM = SEGS / "highdicom"
PYDICOM = SEGS / "pydicom_data"
TOTALSEG = DATA / "ct_totalseg"
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

# The source series of the SEGs, by name: a folder of the shared data, or pydicom's own test files.
SOURCES = {
    "ct-3slice": DCMQI / "ct-3slice",  # dcmqi's liver.dcm, partial_overlaps.dcm and pydicom's liver*.dcm
    "24x38x3": DCMQI / "24x38x3/image",
    "23x38x3": DCMQI / "23x38x3/image",
    "23x38x3 multiframe": DCMQI / "23x38x3/multiframe",  # the same images as one Legacy Converted CT
    "totalseg": TOTALSEG / "dicom_raw_uidfixed",
    "highdicom ct_image": HIGHDICOM / "ct_image.dcm",
}
# highdicom's seg_image_ct_* were derived from pydicom's dicomdirtests CT2 series; its first slice lies 200 mm
# from the other three (no regular grid), so the volume is made of the three that are.
CT2 = [get_testdata_file(f"dicomdirtests/77654033/CT2/{name}") for name in ("17136", "17166", "17196")]


@pytest.fixture(autouse=True)
def _needs_shared_data():
    require(SEGS.is_dir(), f"the shared data folder {SEGS} is missing")


@functools.cache
def volume(name: str) -> Volume:
    if name == "CT2":
        return volume_from_datasets([pydicom.dcmread(path) for path in CT2])
    source = SOURCES[name]
    paths = [source] if source.is_file() else sorted(source.glob("*.dcm"))
    return volume_from_datasets([pydicom.dcmread(path) for path in paths])


def read(path: Path) -> Dataset:
    if path.suffix == ".gz":
        with gzip.open(path) as file:
            return pydicom.dcmread(file)
    return pydicom.dcmread(path)


def read_nrrd(path: Path) -> np.ndarray:
    """A gzip-encoded 3D NRRD label file as [k, j, i] (NRRD lists sizes fastest axis first)."""
    header, _, body = path.read_bytes().partition(b"\n\n")
    fields = dict(
        line.split(": ", 1) for line in header.decode().splitlines()[1:] if ": " in line and line[0] != "#"
    )
    assert fields["encoding"] == "gzip" and fields["endian"] == "little" and fields["type"] == "short"
    assert fields["space"] == "left-posterior-superior"
    sizes = [int(size) for size in fields["sizes"].split()]
    return np.frombuffer(gzip.decompress(body), dtype="<i2").reshape(sizes[::-1])


def masks_of(labelmap) -> dict[int, np.ndarray]:
    return {info.number: labelmap.mask(info.number) for info in labelmap.segments}


def assert_same_labelmap(actual, expected) -> None:
    np.testing.assert_array_equal(actual.layers, expected.layers)
    assert actual.segments == expected.segments


def dcmqi_masks(seg: Path, grid: Volume, folder: Path, *, ignore=(0,), fractional_threshold=None):
    """Each segment's mask as dcmqi's segimage2itkimage reads the SEG, on ``grid`` ([k, j, i]).

    dcmqi writes label images on a grid of its own (only as large as the frames): every voxel is mapped
    through that image's affine to the volume's (i, j, k), which must be a voxel centre.
    """
    tool = Path(sys.executable).parent / "segimage2itkimage"
    require(tool.exists(), "dcmqi's segimage2itkimage is not installed")
    if seg.suffix == ".gz":
        plain = folder / "seg.dcm"
        plain.write_bytes(gzip.decompress(seg.read_bytes()))
        seg = plain
    out = folder / "dcmqi"
    out.mkdir()
    # Merged: as few label images as overlaps allow, values = segment numbers; fractions need one each.
    merge = [] if fractional_threshold is not None else ["--mergeSegments"]
    result = subprocess.run(
        [str(tool), "--inputDICOM", str(seg), "--outputDirectory", str(out), "-t", "nii", *merge],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    masks: dict[int, np.ndarray] = {}
    for path in sorted(out.glob("*.nii.gz")):
        image = nib.load(path)
        data = np.asanyarray(image.dataobj).T  # NIfTI data is stored x fastest: .T is C-ordered (z, y, x)
        if fractional_threshold is not None:  # a file per segment holding fractions
            inside = data >= fractional_threshold
        else:  # values are segment numbers
            inside = data != ignore[0]
            for value in ignore[1:]:
                inside &= data != value
        voxels = np.argwhere(inside)
        numbers = data[inside] if fractional_threshold is None else np.full(len(voxels), int(path.name[:-7]))
        voxels = voxels[:, ::-1]  # (x, y, z), the order of the affine
        affine = RAS_TO_LPS @ image.affine
        ijk = grid.lps_to_index(voxels @ affine[:3, :3].T + affine[:3, 3])
        index = np.rint(ijk).astype(int)
        assert np.abs(ijk - index).max(initial=0) < 1e-3, "dcmqi's grid is not the volume's"
        for number in np.unique(numbers):
            at = index[numbers == number]
            target = masks.setdefault(int(number), np.zeros(grid.array.shape, dtype=bool))
            target[at[:, 2], at[:, 1], at[:, 0]] = True
    return masks


# --- third-party SEGs against their ground truth ---------------------------------------------------------


def test_dcmqi_liver_is_its_nrrd_with_its_segment_description():
    labelmap = read_seg(read(DCMQI / "liver.dcm"), volume("ct-3slice"))
    truth = read_nrrd(DCMQI / "liver_seg.nrrd")
    assert labelmap.layers.shape == (1, 3, 512, 512)
    np.testing.assert_array_equal(labelmap.layers[0], truth)
    assert truth.sum() == 107_098  # not empty, and different on each slice
    assert len({int(truth[k].sum()) for k in range(3)}) == 3
    (liver,) = labelmap.segments
    assert (liver.number, liver.label, liver.color) == (1, "Liver", "#dd8265")  # Slicer's liver colour
    assert liver.category == Code("T-D0050", "SRT", "Tissue")
    assert liver.type == Code("T-62000", "SRT", "Liver")
    assert (liver.algorithm_type, liver.algorithm_name) == ("SEMIAUTOMATIC", "SlicerEditor")


def test_overlapping_segments_stay_separate_on_layers():
    labelmap = read_seg(read(DCMQI / "partial_overlaps.dcm"), volume("ct-3slice"))
    masks = masks_of(labelmap)
    # The three input label files of dcmqi's test: 1 holds segments 1, 4 and 5; 2 and 3 one each.
    for file, numbers in (("partial_overlaps-1.nrrd", (1, 4, 5)), ("partial_overlaps-2.nrrd", (2,))):
        truth = read_nrrd(DCMQI / file)
        for number in numbers:
            np.testing.assert_array_equal(masks[number], truth == number)
    np.testing.assert_array_equal(masks[3], read_nrrd(DCMQI / "partial_overlaps-3.nrrd") == 3)
    assert (masks[3] & masks[1]).any() and (masks[3] & masks[2]).any() and (masks[1] & masks[2]).any()
    assert labelmap.layers.shape[0] == 3
    for number in masks:  # each segment whole on exactly one layer
        assert sum(bool((layer == number).any()) for layer in labelmap.layers) == 1
    assert [info.label for info in labelmap.segments] == [
        "GREEN",
        "ORANGE",
        "PURPLE",
        "LIGHT_BLUE",
        "DARK_BLUE",
    ]


@pytest.mark.parametrize("name", ["sparse-labelmap-noppv.dcm", "sparse-labelmap-ppv5.dcm"])
def test_sparse_labelmap_sop_class(name):
    dataset = read(DCMQI / name)
    assert dataset.SOPClassUID == reader.LABEL_MAP_SEGMENTATION_STORAGE and dataset.NumberOfFrames == 2
    labelmap = read_seg(dataset, volume("24x38x3"))
    truth = read_nrrd(DCMQI / name.replace("-", "_").replace(".dcm", "_seg.nrrd"))
    if "ppv5" in name:
        # dcmqi fills the slice without a frame with the Pixel Padding Value: background.
        assert (truth[1] == 5).all()
        truth = np.where(truth == 5, 0, truth)
    np.testing.assert_array_equal(labelmap.layers[0], truth)
    assert labelmap.layers[0][1].sum() == 0 and labelmap.layers[0][0].sum() == 315
    # The Background segment (number 0) is background here, not a segment.
    assert [(info.number, info.label, info.tracking_id, info.tracking_uid) for info in labelmap.segments] == [
        (1, "Liver", "Liver", "1.2.3")
    ]


@pytest.mark.parametrize("size", ["23x38x3", "24x38x3"])
def test_dcmqi_small_grids(size):
    labelmap = read_seg(read(DCMQI / size / "seg/label.seg"), volume(size))
    truth = read_nrrd(DCMQI / size / "nrrd/label.nrrd")
    assert truth.sum() > 0
    np.testing.assert_array_equal(labelmap.layers[0], truth)


def test_placement_is_by_geometry_not_by_series():
    """The same SEG on another series of the same images (a Legacy Converted multi-frame CT) lands on the
    same voxels: frames are placed in patient space, not matched to instances."""
    seg = read(DCMQI / "23x38x3/seg/label.seg")
    single = read_seg(seg, volume("23x38x3"))
    multi_frame = read_seg(seg, volume("23x38x3 multiframe"))
    assert volume("23x38x3 multiframe").series_instance_uid != volume("23x38x3").series_instance_uid
    assert_same_labelmap(multi_frame, single)


def test_totalsegmentator_seg_aligned_and_flipped_iop_equal_the_nifti_labels():
    ct = volume("totalseg")
    classes = json.loads((TOTALSEG / "totalseg_classmap.json").read_text())["total"]
    label_value = {name: int(value) for value, name in classes.items()}
    meta = json.loads((TOTALSEG / "seg_dcmqi/totalseg_seg_meta.json").read_text())["segmentAttributes"][0]
    reference = np.asarray(nib.load(TOTALSEG / "nifti/example_seg_dicom_dicomorder.nii.gz").dataobj)
    results = []
    for variant in ("aligned", "flippedIOP"):
        dataset = read(TOTALSEG / f"seg_dcmqi/totalseg_example_seg_dcmqi_{variant}.dcm.gz")
        labelmap = read_seg(dataset, ct)
        assert labelmap.layers.shape == (1, 20, 512, 512) and len(labelmap.segments) == 31
        # dcmqi numbered the segments in the order of the meta file; labelID is the NIfTI value, which the
        # class map names: the two agree, so segment number → NIfTI value goes by the segment's label.
        to_value = np.zeros(32, dtype=np.uint8)
        for info, attributes in zip(labelmap.segments, meta, strict=True):
            assert info.label == attributes["SegmentLabel"]
            assert label_value[info.label] == attributes["labelID"]
            to_value[info.number] = label_value[info.label]
            # Our CIELab → sRGB gives back exactly the RGB colour dcmqi was given.
            assert info.color == "#{:02x}{:02x}{:02x}".format(*attributes["recommendedDisplayRGBValue"])
            assert info.algorithm_type == "AUTOMATIC" and info.algorithm_name == "TotalSegmentator"
        np.testing.assert_array_equal(to_value[labelmap.layers[0]].transpose(2, 1, 0), reference)
        results.append(labelmap)
    assert_same_labelmap(results[1], results[0])
    assert referenced_series_uids(dataset) == [ct.series_instance_uid]


def test_compressed_and_non_byte_aligned_copies_equal_the_uncompressed_ones():
    ct = volume("ct-3slice")
    liver = read_seg(read(PYDICOM / "liver.dcm"), ct)
    assert_same_labelmap(liver, read_seg(read(DCMQI / "liver.dcm"), ct))
    for name in ("liver_expb", "liver_deflate", "liver_rle", "liver_j2k"):
        assert_same_labelmap(read_seg(read(PYDICOM / f"{name}.dcm"), ct), liver)
    # 510×510 frames: 260 100 bits, so frames start in the middle of a byte.
    unaligned = read(PYDICOM / "liver_nonbyte_aligned.dcm")
    assert (unaligned.Rows * unaligned.Columns) % 8 != 0
    cropped = read_seg(unaligned, ct)
    for name, syntax in (
        ("liver_nonbyte_aligned_deflate", reader.DEFLATED_IMAGE_FRAME_COMPRESSION),
        ("liver_nonbyte_aligned_rle", "1.2.840.10008.1.2.5"),
        ("liver_nonbyte_aligned_j2k", "1.2.840.10008.1.2.4.90"),
    ):
        dataset = read(PYDICOM / f"{name}.dcm")
        assert dataset.file_meta.TransferSyntaxUID == syntax
        assert_same_labelmap(read_seg(dataset, ct), cropped)
    # The cropped frames cover the first 510 rows and columns, where all of the liver is.
    assert_same_labelmap(cropped, liver)
    assert liver.layers.sum() > 0


CASES_READ_BY_DCMQI = [
    ("liver.dcm", DCMQI / "liver.dcm", "ct-3slice", {}),
    ("partial_overlaps.dcm", DCMQI / "partial_overlaps.dcm", "ct-3slice", {}),
    ("23x38x3", DCMQI / "23x38x3/seg/label.seg", "23x38x3", {}),
    ("24x38x3", DCMQI / "24x38x3/seg/label.seg", "24x38x3", {}),
    ("labelmap noppv", DCMQI / "sparse-labelmap-noppv.dcm", "24x38x3", {}),
    ("labelmap ppv5", DCMQI / "sparse-labelmap-ppv5.dcm", "24x38x3", {"ignore": (0, 5)}),
    ("non-byte-aligned", PYDICOM / "liver_nonbyte_aligned.dcm", "ct-3slice", {}),
    ("highdicom binary", HIGHDICOM / "seg_image_ct_binary.dcm", "CT2", {}),
    (
        "highdicom fractional",
        HIGHDICOM / "seg_image_ct_true_fractional.dcm",
        "CT2",
        {"fractional_threshold": 128},
    ),
    (
        "highdicom binary fractional",
        HIGHDICOM / "seg_image_ct_binary_fractional.dcm",
        "CT2",
        {"fractional_threshold": 128},
    ),
    ("highdicom single frame", HIGHDICOM / "seg_image_ct_binary_single_frame.dcm", "highdicom ct_image", {}),
    ("totalseg aligned", TOTALSEG / "seg_dcmqi/totalseg_example_seg_dcmqi_aligned.dcm.gz", "totalseg", {}),
    ("totalseg flipped", TOTALSEG / "seg_dcmqi/totalseg_example_seg_dcmqi_flippedIOP.dcm.gz", "totalseg", {}),
]


@pytest.mark.parametrize(("path", "source", "options"), [case[1:] for case in CASES_READ_BY_DCMQI],
                         ids=[case[0] for case in CASES_READ_BY_DCMQI])  # fmt: skip
def test_every_segment_lands_where_dcmqi_puts_it(tmp_path, path, source, options):
    grid = volume(source)
    labelmap = read_seg(read(path), grid)
    expected = dcmqi_masks(path, grid, tmp_path, **options)
    ours = masks_of(labelmap)
    assert set(expected) <= set(ours)
    assert any(mask.any() for mask in ours.values())
    for number, mask in ours.items():
        np.testing.assert_array_equal(
            mask, expected.get(number, np.zeros_like(mask)), err_msg=f"segment {number}"
        )


def test_highdicom_ct_segs_and_their_metadata():
    ct2 = volume("CT2")
    binary = read(HIGHDICOM / "seg_image_ct_binary.dcm")
    labelmap = read_seg(binary, ct2)
    # Frames at z = 103.02, 104.27 and 105.52 mm are slices k = 0, 1 and 2 of the three-slice volume.
    np.testing.assert_array_equal(labelmap.layers[0], binary.pixel_array)
    assert [int(labelmap.layers[0][k].sum()) for k in range(3)] == [127, 256, 255]
    # FRACTIONAL holding only 0 and 1.0 (255 of 255): the same voxels.
    fractional = read_seg(read(HIGHDICOM / "seg_image_ct_binary_fractional.dcm"), ct2)
    np.testing.assert_array_equal(fractional.layers, labelmap.layers)
    (info,) = labelmap.segments
    assert (info.label, info.type, info.category) == (
        "first segment",
        Code("272673000", "SCT", "Bone"),
        Code("85756007", "SCT", "Tissue"),
    )
    assert (info.algorithm_type, info.algorithm_name, info.algorithm_version) == ("AUTOMATIC", "test", "v1.0")
    assert info.tracking_id == "test segmentation of computed tomography image"
    assert info.tracking_uid.startswith("1.2.826.0.1.3680043.10.511.3.")
    assert referenced_series_uids(binary) == [ct2.series_instance_uid]
    assert set(ct2.sop_instance_uids) <= set(referenced_instance_uids(binary))
    # Without a ReferencedSeriesSequence the frames' source images still name the instances.
    del binary.ReferencedSeriesSequence
    assert referenced_series_uids(binary) == []
    assert referenced_instance_uids(binary) == list(ct2.sop_instance_uids)

    single = read_seg(read(HIGHDICOM / "seg_image_ct_binary_single_frame.dcm"), volume("highdicom ct_image"))
    assert single.layers.shape == (1, 1, 128, 128) and single.layers.sum() > 0


def test_fractional_threshold_is_half_the_maximum():
    """A voxel is in a FRACTIONAL segment when value / MaximumFractionalValue ≥ 0.5."""
    dataset = read(HIGHDICOM / "seg_image_ct_true_fractional.dcm")
    true_fractions = read_seg(dataset, volume("CT2"))
    np.testing.assert_array_equal(true_fractions.layers[0], dataset.pixel_array >= 128)  # 128 / 255 ≥ 0.5
    assert 0 < true_fractions.layers.sum() < dataset.pixel_array.astype(bool).sum()  # 64 / 255 is out

    edited = copy.deepcopy(dataset)
    edited.MaximumFractionalValue = 200
    frames = np.zeros((3, 16, 16), dtype=np.uint8)
    frames[0] = 99  # 0.495: out
    frames[1] = 100  # exactly 0.5: in
    frames[2, 5, 7] = 200
    edited.PixelData = frames.tobytes()
    layer = read_seg(edited, volume("CT2")).layers[0]
    assert layer[0].sum() == 0 and (layer[1] == 1).all() and layer[2].sum() == 1 and layer[2, 5, 7] == 1


# --- orientation: the same segmentation written with frames flipped, transposed or in another plane ---------


def _binary_seg_like(template: Dataset, frames: np.ndarray, positions, orientation, spacing) -> Dataset:
    """``template`` (a BINARY SEG of one segment) with other frames: pixels (count, rows, columns), one
    ImagePositionPatient per frame, and a shared orientation and pixel spacing."""
    dataset = copy.deepcopy(template)
    count, rows, columns = frames.shape
    dataset.NumberOfFrames, dataset.Rows, dataset.Columns = count, rows, columns
    packed = np.packbits(frames.astype(bool).reshape(-1), bitorder="little").tobytes()
    dataset.PixelData = packed + b"\0" * (len(packed) % 2)
    shared = dataset.SharedFunctionalGroupsSequence[0]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [float(v) for v in orientation]
    shared.PixelMeasuresSequence[0].PixelSpacing = [float(v) for v in spacing]
    items = []
    for position in positions:
        item = copy.deepcopy(template.PerFrameFunctionalGroupsSequence[0])
        del item.DerivationImageSequence
        item.PlanePositionSequence[0].ImagePositionPatient = [float(v) for v in position]
        items.append(item)
    dataset.PerFrameFunctionalGroupsSequence = DicomSequence(items)
    return dataset


def _liver_frames_as_written() -> tuple[Dataset, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    dataset = read(DCMQI / "liver.dcm")
    shared = dataset.SharedFunctionalGroupsSequence[0]
    orientation = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    positions = np.array(
        [
            item.PlanePositionSequence[0].ImagePositionPatient
            for item in dataset.PerFrameFunctionalGroupsSequence
        ],
        dtype=float,
    )
    steps = np.array([orientation[:3] * column_spacing, orientation[3:] * row_spacing])
    return dataset, dataset.pixel_array, positions, orientation, steps


@pytest.mark.parametrize("variant", ["mirrored left-right", "rotated 180°", "transposed", "frames shuffled"])
def test_frames_in_any_in_plane_orientation_land_on_the_same_voxels(variant):
    ct = volume("ct-3slice")
    dataset, frames, positions, orientation, (column_step, row_step) = _liver_frames_as_written()
    expected = read_seg(dataset, ct)
    rows, columns = frames.shape[1:]
    spacing = [np.linalg.norm(row_step), np.linalg.norm(column_step)]
    if variant == "mirrored left-right":
        # Column c now holds what column (columns − 1 − c) held; the first pixel moves to the far end.
        frames = frames[:, :, ::-1]
        positions = positions + (columns - 1) * column_step
        orientation = np.concatenate([-orientation[:3], orientation[3:]])
    elif variant == "rotated 180°":
        frames = frames[:, ::-1, ::-1]
        positions = positions + (columns - 1) * column_step + (rows - 1) * row_step
        orientation = -orientation
    elif variant == "transposed":
        frames = frames.transpose(0, 2, 1)
        orientation = np.concatenate([orientation[3:], orientation[:3]])
        spacing = spacing[::-1]
    else:
        order = [2, 0, 1]
        frames, positions = frames[order], positions[order]
    edited = _binary_seg_like(dataset, frames, positions, orientation, spacing)
    assert_same_labelmap(read_seg(edited, ct), expected)


def test_frames_in_another_plane_of_the_grid():
    """Sagittal frames (one per column i, rows along k) of the axial liver: the same voxels."""
    ct = volume("ct-3slice")
    dataset = read(DCMQI / "liver.dcm")
    expected = read_seg(dataset, ct)
    liver = expected.layers[0]
    frames = liver.transpose(2, 0, 1)  # [i, k, j]: frame i, row k, column j
    positions = ct.index_to_lps([[i, 0, 0] for i in range(frames.shape[0])])
    orientation = np.concatenate([ct.direction[:, 1], ct.direction[:, 2]])  # columns along j, rows along k
    spacing = [ct.spacing[2], ct.spacing[1]]
    edited = _binary_seg_like(dataset, frames, positions, orientation, spacing)
    assert_same_labelmap(read_seg(edited, ct), expected)


@pytest.mark.parametrize(
    ("path", "source", "shortcut"),
    [
        (TOTALSEG / "seg_dcmqi/totalseg_example_seg_dcmqi_flippedIOP.dcm.gz", "totalseg", "_word_placeable"),
        (DCMQI / "partial_overlaps.dcm", "ct-3slice", "_word_placeable"),
        (DCMQI / "sparse-labelmap-ppv5.dcm", "24x38x3", "_on_distinct_planes"),
    ],
    ids=["binary flipped", "binary overlapping", "labelmap"],
)
def test_shortcuts_and_general_placement_agree(monkeypatch, path, source, shortcut):
    """The fast paths (eight voxels at a time for BINARY, whole frames for LABELMAP) give the layers that
    the general one (voxel by voxel) gives."""
    dataset = read(path)
    original, taken = getattr(reader, shortcut), []
    monkeypatch.setattr(reader, shortcut, lambda *args: taken.append(original(*args)) or taken[-1])
    fast = read_seg(dataset, volume(source))
    assert taken == [True]  # the shortcut was taken …
    monkeypatch.setattr(reader, shortcut, lambda *args: False)
    assert_same_labelmap(read_seg(dataset, volume(source)), fast)  # … and the general path agrees


def test_functional_groups_read_from_their_bytes_equal_pydicom(monkeypatch):
    paths = [
        *HIGHDICOM.glob("seg_image_ct_*.dcm"),
        DCMQI / "liver.dcm",
        PYDICOM / "liver_nonbyte_aligned_rle.dcm",
        DCMQI / "sparse-labelmap-ppv5.dcm",
    ]
    first = read(HIGHDICOM / "seg_image_ct_binary.dcm").PerFrameFunctionalGroupsSequence[0]
    parsed = reader._encoded_macro_value(first, "PlanePositionSequence", "ImagePositionPatient")
    assert parsed == [-125.0, -128.100006, 103.019997]  # read from the bytes, not by pydicom
    for path in paths:
        dataset = read(path)
        count = int(dataset.NumberOfFrames)
        needs = dataset.SegmentationType != "LABELMAP"
        fast = reader._frame_table(read(path), count, needs_segment_numbers=needs)
        with monkeypatch.context() as patched:
            patched.setattr(reader, "_encoded_macro_value", lambda *args: reader._NOT_PARSED)
            slow = reader._frame_table(dataset, count, needs_segment_numbers=needs)
        for name in ("positions", "orientations", "pixel_spacings"):
            assert [list(map(float, v)) for v in getattr(fast, name)] == [
                list(map(float, v)) for v in getattr(slow, name)
            ], (path.name, name)
        if needs:
            np.testing.assert_array_equal(fast.segment_numbers, slow.segment_numbers)


def test_labelmap_frames_that_share_a_plane_become_layers():
    dataset = read(DCMQI / "sparse-labelmap-noppv.dcm")
    second = copy.deepcopy(dataset.SegmentSequence[1])
    second.SegmentNumber, second.SegmentLabel = 2, "Second"
    dataset.SegmentSequence.append(second)
    frames = dataset.pixel_array.copy()
    frames[1] *= 2  # the frame at slice 2 now holds segment 2 …
    dataset.PixelData = frames.tobytes()
    first_position = dataset.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient
    dataset.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0].ImagePositionPatient = first_position
    labelmap = read_seg(dataset, volume("24x38x3"))  # … and lies on slice 0, over segment 1
    assert labelmap.layers.shape == (2, 3, 38, 24)
    np.testing.assert_array_equal(labelmap.mask(1), labelmap.mask(2))
    assert labelmap.mask(1)[0].sum() == 315 and labelmap.mask(1)[1:].sum() == 0


@pytest.mark.parametrize("palette", ["16-bit", "highdicom 8-bit"])
def test_palette_colour_labelmap_takes_colours_from_the_palette(palette):
    dataset = read(DCMQI / "sparse-labelmap-noppv.dcm")
    dataset.PhotometricInterpretation = "PALETTE COLOR"
    if palette == "16-bit":
        for colour, value in (("Red", 255), ("Green", 0), ("Blue", 128)):
            table = np.zeros(256, dtype="<u2")
            table[1] = value << 8
            setattr(dataset, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
            setattr(dataset, f"{colour}PaletteColorLookupTableData", table.tobytes())
        expected = "#ff0080"
    else:  # the palette of highdicom's slide-microscopy label map: 22 entries of 8 bits
        source = read(HIGHDICOM / "seg_image_sm_control_labelmap_palette_color.dcm")
        for colour in ("Red", "Green", "Blue"):
            for part in ("Descriptor", "Data"):
                keyword = f"{colour}PaletteColorLookupTable{part}"
                setattr(dataset, keyword, source[keyword].value)
        assert list(source.RedPaletteColorLookupTableDescriptor) == [22, 0, 8]
        expected = "#ff00bf"
    del dataset.SegmentSequence[1].RecommendedDisplayCIELabValue
    labelmap = read_seg(dataset, volume("24x38x3"))
    assert labelmap.segment(1).color == expected
    assert labelmap.layers.sum() == 630


def test_cielab_to_srgb():
    import highdicom

    assert cielab_to_srgb_hex([65535, 32896, 32896]) == "#ffffff"  # L* 100, a* = b* = 0
    assert cielab_to_srgb_hex([0, 32896, 32896]) == "#000000"
    for value in ([41661, 41167, 40792], [43803, 26565, 37722], [21000, 52000, 12000], [60000, 20000, 50000]):
        theirs = highdicom.color.CIELabColor.from_dicom_value(value).to_rgb(clip=True)
        assert cielab_to_srgb_hex(value) == "#{:02x}{:02x}{:02x}".format(*theirs)


# --- what is refused, and how ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [DCMQI / "ct-3slice/01.dcm", SEGS / "dcmqi/sr-example/sr.dcm", SEGS / "dcmqi/sr-example/rwvm.dcm"]
)
def test_not_a_seg(path):
    with pytest.raises(NotASegError, match="not a DICOM SEG") as error:
        read_seg(read(path), volume("ct-3slice"))
    assert str(read(path).SOPClassUID.name) in str(error.value)


@pytest.mark.parametrize("path", sorted(HIGHDICOM.glob("seg_image_sm_*.dcm")), ids=lambda path: path.stem)
def test_slide_microscopy_segs_are_refused(path):
    with pytest.raises(UnsupportedSegError, match="slide-microscopy") as error:
        read_seg(read(path), volume("ct-3slice"))
    assert "not slices of a 3D volume" in str(error.value)


def test_seg_of_another_series_is_refused_with_what_it_refers_to():
    with pytest.raises(SourceMismatchError, match="frame of reference") as error:
        read_seg(read(DCMQI / "liver.dcm"), volume("24x38x3"))
    assert volume("24x38x3").series_instance_uid in str(error.value)
    # dcmqi's SR example SEG refers to a series that is not in the data.
    seg = read(SEGS / "dcmqi/sr-example/seg.dcm")
    with pytest.raises(SourceMismatchError, match="does not belong to this series") as error:
        read_seg(seg, volume("ct-3slice"))
    assert referenced_series_uids(seg)[0] in str(error.value)


def test_frame_outside_the_volume():
    """highdicom's overlap example has frames on the fourth CT2 slice, 200 mm away from the others."""
    with pytest.raises(
        SourceMismatchError, match=r"frame 1 \(segment 1\) .* lies outside the volume"
    ) as error:
        read_seg(read(HIGHDICOM / "seg_image_ct_binary_overlap.dcm"), volume("CT2"))
    assert "k -162..-162" in str(error.value) and "k 0..2" in str(error.value)


def test_frames_off_the_grid_or_at_another_spacing():
    ct = volume("ct-3slice")
    dataset = read(DCMQI / "liver.dcm")
    half_voxel = copy.deepcopy(dataset)
    position = half_voxel.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0]
    x, y, z = (float(v) for v in position.ImagePositionPatient)
    position.ImagePositionPatient = [x, y, z + 0.5]
    with pytest.raises(SourceMismatchError, match=r"frame 2 \(segment 1\) .* off the volume's grid"):
        read_seg(half_voxel, ct)
    coarse = copy.deepcopy(dataset)
    coarse.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = [1.62109, 1.62109]
    with pytest.raises(SourceMismatchError, match="does not line up with the volume's voxels"):
        read_seg(coarse, ct)
    tilted = copy.deepcopy(dataset)
    tilted.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient = [
        1, 0, 0, 0, 0.98, 0.199
    ]  # fmt: skip
    with pytest.raises(SourceMismatchError, match="does not line up"):
        read_seg(tilted, ct)


def test_missing_geometry():
    ct = volume("ct-3slice")
    dataset = read(DCMQI / "liver.dcm")
    expected = read_seg(dataset, ct)

    # No plane positions at all, but each frame names the CT slice it was derived from: placed on it.
    by_reference = copy.deepcopy(dataset)
    for item in by_reference.PerFrameFunctionalGroupsSequence:
        del item.PlanePositionSequence
    assert_same_labelmap(read_seg(by_reference, ct), expected)

    # … and without those references there is nothing to go by.
    nothing = copy.deepcopy(by_reference)
    for item in nothing.PerFrameFunctionalGroupsSequence:
        del item.DerivationImageSequence
    with pytest.raises(MissingGeometryError, match="no plane positions and no per-frame source image"):
        read_seg(nothing, ct)
    elsewhere = copy.deepcopy(by_reference)
    del elsewhere.FrameOfReferenceUID
    with pytest.raises(MissingGeometryError, match="none of its source images is a slice of the volume"):
        read_seg(elsewhere, volume("CT2"))

    one_missing = copy.deepcopy(dataset)
    del one_missing.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence
    with pytest.raises(MissingGeometryError, match="frame 2 .* lacks a plane position"):
        read_seg(one_missing, ct)
    no_orientation = copy.deepcopy(dataset)
    del no_orientation.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
    with pytest.raises(MissingGeometryError, match="frame 1 .* plane orientation"):
        read_seg(no_orientation, ct)

    # A SEG of a CR image: no frame of reference, no positions; its source is no slice of any volume.
    with pytest.raises(MissingGeometryError, match="no plane position"):
        read_seg(read(HIGHDICOM / "seg_image_cr_binary.dcm"), volume("CT2"))


def test_damaged_segs():
    ct = volume("ct-3slice")
    dataset = read(DCMQI / "liver.dcm")
    truncated = copy.deepcopy(dataset)
    truncated.PixelData = dataset.PixelData[: len(dataset.PixelData) // 2]
    with pytest.raises(SegError, match="bytes of pixel data where 98304 are needed"):
        read_seg(truncated, ct)
    more_frames = copy.deepcopy(dataset)
    more_frames.NumberOfFrames = 4
    with pytest.raises(SegError, match="4 frames but 3 items"):
        read_seg(more_frames, ct)
    unknown_segment = copy.deepcopy(dataset)
    unknown_segment.PerFrameFunctionalGroupsSequence[2].SegmentIdentificationSequence[
        0
    ].ReferencedSegmentNumber = 7
    with pytest.raises(SegError, match="frame 3 holds segment 7, which the SegmentSequence does not define"):
        read_seg(unknown_segment, ct)
    labelmap = read(DCMQI / "sparse-labelmap-noppv.dcm")
    frames = labelmap.pixel_array.copy()
    frames[1, 3, 4] = 9
    labelmap.PixelData = frames.tobytes()
    with pytest.raises(SegError, match="frame 2 of LABELMAP SEG .* value 9"):
        read_seg(labelmap, volume("24x38x3"))
    # A real (not background) segment numbered 0 cannot be kept apart from background.
    zero = read(DCMQI / "sparse-labelmap-noppv.dcm")
    zero.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue = "10200004"
    with pytest.raises(UnsupportedSegError, match="segment 0"):
        read_seg(zero, volume("24x38x3"))
