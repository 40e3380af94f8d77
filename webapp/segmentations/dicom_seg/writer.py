"""Labelmap → DICOM SEG: a BINARY Segmentation on the source series' grid, encoded with highdicom.

``write_seg`` turns a :class:`Labelmap` on a :class:`~webapp.studies.volume.Volume` into a
``pydicom.Dataset`` (Segmentation Storage, explicit VR little endian); ``seg_bytes`` serialises it. Every
segment becomes its own binary frames, one per slice where it has voxels, so overlapping segments (on
different layers) stay separate. What goes where and why: ``docs/segmentations.md``, "Writing SEGs".

How it stays fast: highdicom builds the object from a *probe*, a pixel array that marks segment 1 once on
every slice where any segment has voxels. From that, highdicom decides everything per slice (plane position,
source image and frame reference, dimension index) and everything about the object (modules, shared
functional groups, SpacingBetweenSlices, referenced series, dimension organisation). The per-frame items of
the real SEG are those per-slice items with the segment's number put in, serialised once per slice; the
pixel data is packed from the layers with numpy. Building every frame through highdicom and pydicom costs
about 2 ms per frame (11 s for 5438 frames); this costs a few µs per frame plus the bit packing.
``tests/test_seg_writer.py`` checks that the result equals highdicom's own complete encoding of the same
input, element for element and bit for bit.

No Django here.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import struct
from collections.abc import Sequence
from io import BytesIO
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
from highdicom.seg import Segmentation, SegmentDescription
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr, dcmwrite, write_data_element
from pydicom.sr.codedict import codes
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from . import Code, Labelmap, SegError, SegmentInfo, SourceMismatchError

if TYPE_CHECKING:
    from webapp.studies.volume.geometry import Volume


def _annovox_version() -> str:
    try:
        return importlib.metadata.version("annovox")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


MANUFACTURER = "Annovox"
DEFAULT_SOFTWARE_VERSIONS = f"Annovox {_annovox_version()}"
ALGORITHM_TYPES = ("MANUAL", "SEMIAUTOMATIC", "AUTOMATIC")
# Text goes in UTF-8 whatever the source used: labels and names are typed by users in any language.
CHARACTER_SET = "ISO_IR 192"
# The SEG's plane positions come from the source images; each must lie this close to our grid's slice
# (fractions of the slice step along the normal and of the smaller pixel spacing in plane). The volume
# builder allows a twentieth of either; beyond a tenth the data sets do not belong to this grid.
POSITION_TOLERANCE = 0.1
# Slices packed per numpy call: large enough to amortise the call, small enough to bound the temporary.
PACK_CHUNK_SLICES = 32

_PER_FRAME = BaseTag(0x52009230)  # PerFrameFunctionalGroupsSequence
_FRAME_CONTENT = BaseTag(0x00209111)  # FrameContentSequence
_SEGMENT_IDENTIFICATION = BaseTag(0x0062000A)  # SegmentIdentificationSequence
_PIXEL_DATA = BaseTag(0x7FE00010)
_PIXEL_DATA_HEADER = b"\xe0\x7f\x10\x00OB\0\0"  # (7FE0,0010), VR OB, two reserved bytes; the length follows
_ITEM_TAG = b"\xfe\xff\x00\xe0"  # (FFFE,E000) Item, little endian
_CONTENT_LABEL = re.compile(r"[A-Z](?:[A-Z0-9_ ]{0,14}[A-Z0-9])?")
_COLOR = re.compile(r"#([0-9a-fA-F]{2})([0-9a-fA-F]{2})([0-9a-fA-F]{2})")


@dataclasses.dataclass
class _Presence:
    present: np.ndarray  # [segment number, k]: the segment has voxels on slice k (row 0 unused)
    layer_of: np.ndarray  # [segment number]: the layer that holds it, -1 if it has no voxels
    overlap: bool  # some voxel belongs to two segments


def write_seg(
    labelmap: Labelmap,
    volume: Volume,
    source_datasets: Sequence[Dataset],
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int,
    content_label: str,
    content_description: str = "",
    content_creator: str = "",
    series_description: str = "",
    software_versions: str = DEFAULT_SOFTWARE_VERSIONS,
    device_serial_number: str = "1",
) -> Dataset:
    """Encode ``labelmap`` (on ``volume``'s grid) as a BINARY DICOM SEG of the series ``source_datasets``.

    ``source_datasets``: the instances the volume was built from (headers suffice: read with
    ``stop_before_pixels=True``), in any order. ``content_label`` is a DICOM code string (1 to 16 of A–Z,
    0–9, space and underscore, starting with a letter, not ending with space or underscore);
    ``content_creator`` a person name (``Family^Given``; a name without ``^`` is taken as a family name).
    Segment numbers must run 1, 2, … N (``renumber_segments`` closes gaps).

    Raises :class:`SegError` for a labelmap that does not fit the volume or its segments, and
    :class:`SourceMismatchError` for source data sets that are not the volume's slices.
    """
    _check_grid(labelmap, volume)
    _check_content_label(content_label)
    infos = _check_segments(labelmap.segments)
    presence = _presence(labelmap, len(infos))
    source_images, plane_of_slice = _source_images(volume, source_datasets)
    descriptions = [_description(info, volume) for info in infos]

    included = np.flatnonzero(presence.present[1:].any(axis=0))
    if included.size == 0:
        # Nothing drawn (yet, or all erased) is a state worth saving, but a SEG needs a frame: segment 1
        # gets one empty frame on the first slice.
        presence.present[1, 0] = True
        included = np.array([0])
    probe = _probe(
        source_images,
        plane_of_slice,
        included,
        volume.array.shape[1:],
        # Two described segments give the object the layout of a many-segment SEG (segment identification
        # per frame, not shared) while highdicom tests only two segments per slice; one stays one.
        descriptions[:2],
        series_instance_uid=series_instance_uid,
        sop_instance_uid=sop_instance_uid,
        series_number=series_number,
        instance_number=instance_number,
        content_label=content_label,
        content_description=content_description,
        content_creator=content_creator,
        series_description=series_description,
        software_versions=software_versions,
        device_serial_number=device_serial_number,
    )
    slices = _probe_slices(probe, volume)
    _check_positions(probe, slices, volume)

    # Frames: segment by segment, each in highdicom's slice order, only where the segment has voxels.
    frames = [
        (number, index, int(slice_k))
        for number in range(1, len(infos) + 1)
        for index, slice_k in enumerate(slices)
        if presence.present[number, slice_k]
    ]
    dataset = Dataset()
    dataset.update(probe)
    dataset.file_meta = probe.file_meta
    if len(descriptions) > 1:
        dataset.SegmentSequence = descriptions
    dataset.SegmentsOverlap = "YES" if presence.overlap else "NO"
    if "ContentCreatorName" not in dataset:
        dataset.ContentCreatorName = ""  # type 2: present even when nobody is named (highdicom leaves it out)
    dataset.NumberOfFrames = len(frames)
    dataset.PixelData = _pixel_data(labelmap.layers, presence.layer_of, frames)
    per_frame = _per_frame_items(probe, frames, len(infos))
    del dataset.PerFrameFunctionalGroupsSequence
    correct_ambiguous_vr(dataset, True)  # PixelData: OB (highdicom leaves 'OB or OW' to the writer)
    # The per-frame sequence goes in already encoded; marking the data set as read in this encoding makes
    # pydicom write it as it is instead of decoding and re-encoding thousands of items.
    dataset[_PER_FRAME] = RawDataElement(_PER_FRAME, "SQ", len(per_frame), per_frame, 0, False, True)
    dataset.set_original_encoding(False, True, dataset._character_set)
    return dataset


def seg_bytes(dataset: Dataset) -> bytes:
    """The DICOM file (preamble, file meta, data set) of a SEG from :func:`write_seg`."""
    pixel_data = dataset.get(_PIXEL_DATA)
    as_written = (
        dataset.original_encoding == (False, True)
        and getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None) == ExplicitVRLittleEndian
    )
    if not as_written or pixel_data is None or max(dataset.keys()) != _PIXEL_DATA or pixel_data.VR != "OB":
        buffer = BytesIO()
        dcmwrite(buffer, dataset, enforce_file_format=True)
        return buffer.getvalue()
    # pydicom copies a value through two growing buffers (a third of a second per 200 MB); the pixel data
    # is the last element, so it is appended once, after everything else.
    head = Dataset()
    head.update(dataset)
    del head[_PIXEL_DATA]
    head.file_meta = dataset.file_meta
    head.set_original_encoding(False, True, dataset._character_set)
    buffer = BytesIO()
    dcmwrite(buffer, head, enforce_file_format=True)
    value = pixel_data.value
    if len(value) % 2:
        value += b"\0"
    return b"".join([buffer.getvalue(), _PIXEL_DATA_HEADER, struct.pack("<I", len(value)), value])


def renumber_segments(labelmap: Labelmap) -> tuple[Labelmap, dict[int, int]]:
    """The labelmap with its segments numbered 1, 2, … in the order of their numbers, and old → new.

    A BINARY SEG numbers its segments from 1 without gaps (PS3.3 C.8.20.2; highdicom enforces it), so an
    application that deleted segment 2 of 3 renumbers before writing; tracking UIDs identify segments
    across versions.
    """
    ordered = sorted(labelmap.segments, key=lambda info: info.number)
    mapping = {info.number: new for new, info in enumerate(ordered, 1)}
    if len(mapping) != len(ordered):
        raise SegError("segment numbers are described more than once")
    top = max([0, *mapping, int(labelmap.layers.max(initial=0))])
    described = np.zeros(top + 1, dtype=bool)
    described[[0, *mapping]] = True
    if not described[labelmap.layers].all():
        raise SegError("the labelmap holds segment numbers that no SegmentInfo describes")
    lookup = np.zeros(top + 1, dtype=np.uint8 if len(mapping) <= 255 else np.uint16)
    for old, new in mapping.items():
        lookup[old] = new
    segments = [dataclasses.replace(info, number=mapping[info.number]) for info in ordered]
    return Labelmap(layers=lookup[labelmap.layers], segments=segments), mapping


# --- checks -------------------------------------------------------------------------------------------------


def _check_grid(labelmap: Labelmap, volume: Volume) -> None:
    if labelmap.shape != volume.array.shape:
        raise SegError(
            f"the labelmap's grid {labelmap.shape} (k, j, i) is not the volume's {volume.array.shape}: "
            "a SEG must be written on its source series' grid"
        )
    if labelmap.layers.dtype.kind not in "ui":
        raise SegError(f"labelmap layers must hold integer segment numbers, not {labelmap.layers.dtype}")
    if labelmap.layers.dtype.kind == "i" and labelmap.layers.size and int(labelmap.layers.min()) < 0:
        raise SegError(
            "labelmap layers hold negative values; segment numbers are 1, 2, … and 0 is background"
        )


def _check_content_label(label: str) -> None:
    # A code string (CS); highdicom also refuses a leading digit, space or underscore and a trailing space
    # or underscore.
    if not _CONTENT_LABEL.fullmatch(label):
        raise SegError(
            f"content label {label!r} is not a DICOM code string: 1 to 16 of A–Z, 0–9, space and underscore, "
            "starting with a letter and not ending with a space or underscore"
        )


def _check_segments(segments: Sequence[SegmentInfo]) -> list[SegmentInfo]:
    if not segments:
        raise SegError("the labelmap describes no segments; a SEG needs at least one")
    infos = sorted(segments, key=lambda info: info.number)
    numbers = [info.number for info in infos]
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicates:
        raise SegError(f"segment numbers {duplicates} are described more than once")
    if numbers != list(range(1, len(numbers) + 1)):
        raise SegError(
            f"segment numbers {numbers} do not run 1, 2, … {len(numbers)}: a BINARY SEG numbers its segments "
            "without gaps (renumber_segments() closes them)"
        )
    return infos


def _presence(labelmap: Labelmap, count: int) -> _Presence:
    """Which segment has voxels on which slice, on which layer, and whether layers overlap; refuses
    numbers without a description and numbers on two layers."""
    layers = labelmap.layers
    depth = layers.shape[1]
    present = np.zeros((count + 1, depth), dtype=bool)
    layer_of = np.full(count + 1, -1)
    occupied = np.zeros((layers.shape[0], depth), dtype=bool)  # [layer, k]: the layer has voxels there
    undescribed: set[int] = set()
    for layer in range(layers.shape[0]):
        here = np.zeros((count + 1, depth), dtype=bool)
        # A histogram per slice, but only of slices with anything on them (a cheap maximum finds those).
        for k in np.flatnonzero(layers[layer].reshape(depth, -1).max(axis=1, initial=0)):
            histogram = np.bincount(layers[layer, k].ravel(), minlength=count + 1)
            if histogram.size > count + 1 and histogram[count + 1 :].any():
                undescribed.update(int(n) for n in np.flatnonzero(histogram[count + 1 :]) + count + 1)
            here[:, k] = histogram[: count + 1] > 0
        here[0] = False
        occupied[layer] = here.any(axis=0)
        for number in np.flatnonzero(here.any(axis=1)):
            if layer_of[number] >= 0:
                raise SegError(
                    f"segment {number} has voxels on layers {layer_of[number]} and {layer}: each segment "
                    "belongs to one layer"
                )
            layer_of[number] = layer
        present |= here
    if undescribed:
        shown = sorted(undescribed)
        raise SegError(
            f"the labelmap holds segment numbers {shown[:20]}{' …' if len(shown) > 20 else ''} that no "
            f"SegmentInfo describes (described: 1–{count})"
        )
    overlap = False
    for shared in np.flatnonzero(occupied.sum(axis=0) > 1):
        filled = layers[occupied[:, shared], shared] != 0
        if (filled.sum(axis=0, dtype=np.uint16) > 1).any():
            overlap = True
            break
    return _Presence(present=present, layer_of=layer_of, overlap=overlap)


def _source_images(volume: Volume, datasets: Sequence[Dataset]) -> tuple[list[Dataset], np.ndarray]:
    """The source images as highdicom takes them, and for each slice k the index of its plane there:
    single-frame instances in slice order, or the one multi-frame instance (planes = its frames)."""
    by_uid: dict[str, Dataset] = {}
    for ds in datasets:
        uid = str(ds.get("SOPInstanceUID", "") or "").strip()
        if not uid:
            raise SourceMismatchError("a source data set has no SOP Instance UID")
        if uid in by_uid:
            raise SourceMismatchError(f"source instance {uid} is given twice")
        by_uid[uid] = ds
    used = set(volume.sop_instance_uids)
    missing = sorted(used - set(by_uid))
    if missing:
        raise SourceMismatchError(
            f"{len(missing)} of the volume's source instances are not among the source data sets, "
            f"e.g. {missing[0]}"
        )
    extra = sorted(set(by_uid) - used)
    if extra:
        raise SourceMismatchError(
            f"{len(extra)} source data sets are not slices of the volume, e.g. {extra[0]}: pass the "
            "instances the volume was built from"
        )
    first = by_uid[volume.sop_instance_uids[0]]
    rows, columns = volume.array.shape[1:]
    for ds in by_uid.values():
        if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
            raise SourceMismatchError(
                f"source instance {ds.SOPInstanceUID} is {ds.Rows}×{ds.Columns} (rows×columns), the volume "
                f"{rows}×{columns}"
            )
        if volume.frame_of_reference_uid and str(ds.get("FrameOfReferenceUID", "")) != (
            volume.frame_of_reference_uid
        ):
            raise SourceMismatchError(
                f"source instance {ds.SOPInstanceUID} is in frame of reference "
                f"{ds.get('FrameOfReferenceUID', 'none')}, the volume in {volume.frame_of_reference_uid}"
            )
    if all(frame is None for frame in volume.frame_numbers):
        return [by_uid[uid] for uid in volume.sop_instance_uids], np.arange(len(volume.sources))
    if len(by_uid) > 1:
        raise SegError(
            f"the volume's slices come from {len(by_uid)} instances, some of them multi-frame: highdicom "
            "references the frames of exactly one multi-frame instance, or single-frame instances only"
        )
    frames = np.array([frame for frame in volume.frame_numbers], dtype=np.int64)
    return [first], frames - 1


def _description(info: SegmentInfo, volume: Volume) -> SegmentDescription:
    where = f"segment {info.number} ({info.label!r})"
    if not info.label.strip():
        raise SegError(f"segment {info.number} has no label")
    if len(info.label) > 64 or len(info.description) > 64:
        raise SegError(f"{where}: the label and the description may have at most 64 characters (DICOM LO)")
    algorithm_type = info.algorithm_type.upper()
    if algorithm_type not in ALGORITHM_TYPES:
        raise SegError(
            f"{where}: algorithm type {info.algorithm_type!r} is not one of {', '.join(ALGORITHM_TYPES)}"
        )
    identification = None
    if algorithm_type != "MANUAL" or info.algorithm_name:
        if not info.algorithm_name or not info.algorithm_version:
            raise SegError(
                f"{where}: a {algorithm_type} segment names its algorithm and that algorithm's version "
                f"(got name {info.algorithm_name!r}, version {info.algorithm_version!r})"
            )
        family = (
            codes.cid7162.ManualProcessing
            if algorithm_type == "MANUAL"
            else codes.cid7162.ArtificialIntelligence
        )
        identification = hd.AlgorithmIdentificationSequence(
            name=info.algorithm_name, family=family, version=info.algorithm_version
        )
    tracking_id, tracking_uid = _tracking(info, volume)
    try:
        description = SegmentDescription(
            segment_number=info.number,
            segment_label=info.label,
            segmented_property_category=_coded(info.category),
            segmented_property_type=_coded(info.type),
            algorithm_type=algorithm_type,
            algorithm_identification=identification,
            tracking_id=tracking_id,
            tracking_uid=tracking_uid,
            display_color=hd.color.CIELabColor.from_rgb(*_rgb(info.color, where)),
        )
        if info.description:
            description.SegmentDescription = info.description
    except (TypeError, ValueError) as exc:
        raise SegError(f"{where}: {exc}") from exc
    return description


def _tracking(info: SegmentInfo, volume: Volume) -> tuple[str | None, str | None]:
    """Tracking ID and UID come together or not at all (PS3.3 C.8.20.2). A missing UID is derived from
    the series and the tracking ID, so that every save of one segment on one series gives the same UID;
    a missing ID becomes the label."""
    if not info.tracking_id and not info.tracking_uid:
        return None, None
    tracking_id = info.tracking_id or info.label
    tracking_uid = info.tracking_uid or str(
        generate_uid(entropy_srcs=["annovox tracking", volume.series_instance_uid, tracking_id])
    )
    if not UID(tracking_uid).is_valid:
        raise SegError(f"segment {info.number}: tracking UID {tracking_uid!r} is not a valid UID")
    return tracking_id, tracking_uid


def _coded(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def _rgb(color: str, where: str) -> tuple[int, int, int]:
    match = _COLOR.fullmatch(color.strip())
    if match is None:
        raise SegError(f"{where}: colour {color!r} is not of the form #rrggbb")
    red, green, blue = (int(part, 16) for part in match.groups())
    return red, green, blue


# --- highdicom ----------------------------------------------------------------------------------------------


def _person_name(name: str) -> str | None:
    name = name.strip()
    if not name:
        return None
    return name if "^" in name else f"{name}^"


def _probe(
    source_images: list[Dataset],
    plane_of_slice: np.ndarray,
    included: np.ndarray,
    frame_shape: tuple[int, ...],
    descriptions: list[SegmentDescription],
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int,
    content_label: str,
    content_description: str,
    content_creator: str,
    series_description: str,
    software_versions: str,
    device_serial_number: str,
) -> Segmentation:
    """highdicom's SEG with one frame of segment 1 on each slice where any segment has voxels."""
    planes = len(source_images) if len(source_images) > 1 else int(source_images[0].get("NumberOfFrames", 1))
    marks = np.zeros((planes, *frame_shape), dtype=np.uint8)
    marks[plane_of_slice[included], 0, 0] = 1
    try:
        return Segmentation(
            source_images=source_images,
            pixel_array=marks,
            segmentation_type="BINARY",
            segment_descriptions=descriptions,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uid,
            instance_number=instance_number,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=MANUFACTURER,
            software_versions=software_versions,
            device_serial_number=device_serial_number,
            content_label=content_label,
            content_description=content_description or None,
            content_creator_name=_person_name(content_creator),
            series_description=series_description or None,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            omit_empty_frames=True,
            specific_character_set=CHARACTER_SET,
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise SegError(f"highdicom cannot build the SEG: {exc}") from exc


def _probe_slices(probe: Segmentation, volume: Volume) -> np.ndarray:
    """The slice k of each of the probe's frames, from the source reference highdicom put in it."""
    slice_of = {(source.sop_instance_uid, source.frame_number): k for k, source in enumerate(volume.sources)}
    multi_frame = any(frame is not None for frame in volume.frame_numbers)
    slices = []
    for index, item in enumerate(probe.PerFrameFunctionalGroupsSequence):
        try:
            reference = item.DerivationImageSequence[0].SourceImageSequence[0]
        except (AttributeError, IndexError) as exc:
            raise SegError(f"highdicom did not reference a source image for frame {index + 1}") from exc
        frame = int(reference.ReferencedFrameNumber) if multi_frame else None
        key = (str(reference.ReferencedSOPInstanceUID), frame)
        if key not in slice_of:
            raise SegError(f"highdicom referenced {key}, which is no slice of the volume")
        slices.append(slice_of[key])
    return np.array(slices, dtype=np.int64)


def _check_positions(probe: Segmentation, slices: np.ndarray, volume: Volume) -> None:
    """The SEG's planes (the source images' positions) lie on our grid's slices."""
    orientation = np.array(
        probe.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient,
        dtype=float,
    )
    if np.abs(orientation - volume.direction[:, :2].T.ravel()).max() > 1e-3:
        raise SourceMismatchError(
            f"the source images' orientation {list(orientation)} is not the volume's "
            f"{list(volume.direction[:, :2].T.ravel())}"
        )
    positions = np.array(
        [
            item.PlanePositionSequence[0].ImagePositionPatient
            for item in probe.PerFrameFunctionalGroupsSequence
        ],
        dtype=float,
    )
    offsets = positions - volume.index_to_lps(
        np.stack([np.zeros_like(slices), np.zeros_like(slices), slices], 1)
    )
    along = np.abs(offsets @ volume.direction[:, 2])
    across = np.linalg.norm(
        offsets - np.outer(offsets @ volume.direction[:, 2], volume.direction[:, 2]), axis=1
    )
    worst = int(np.argmax(along / volume.spacing[2] + across / min(volume.spacing[:2])))
    if along[worst] > POSITION_TOLERANCE * volume.spacing[2] or across[worst] > POSITION_TOLERANCE * min(
        volume.spacing[:2]
    ):
        raise SourceMismatchError(
            f"source image {volume.sources[slices[worst]]} lies at {list(positions[worst])}, "
            f"{along[worst]:.3f} mm along the normal and {across[worst]:.3f} mm in plane from the volume's "
            f"slice {slices[worst]}"
        )


# --- encoding -----------------------------------------------------------------------------------------------


def _encoded(element: DataElement) -> bytes:
    """One element as pydicom writes it in explicit VR little endian."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_data_element(fp, element, [CHARACTER_SET])
    return bytes(fp.getvalue())


@dataclasses.dataclass
class _ItemTemplate:
    """One probe frame's per-frame item, encoded, around the two places that name the segment: its Frame
    Content's dimension index values (segment index, position) and its Segment Identification."""

    before: bytes  # the elements before, and the Frame Content up to its index values
    position: int  # the frame's position index, the second index value
    between: bytes  # after the index values, up to the Segment Identification (or to the end)
    after: bytes  # after the Segment Identification; empty without one
    identified: bool  # the item has a Segment Identification (it is shared when there is one segment)


def _template(item: Dataset) -> _ItemTemplate:
    pieces: list[list[bytes]] = [[]]  # the encoded bytes between the places
    position = None
    identified = False
    for tag in sorted(item.keys()):  # pydicom writes elements in tag order: Frame Content comes first
        if tag == _FRAME_CONTENT:
            encoded = _encoded(item[tag])
            segment_index, position = (int(v) for v in item[tag].value[0].DimensionIndexValues)
            values = struct.pack("<2I", segment_index, position)
            if segment_index != 1 or encoded.count(values) != 1:
                raise SegError(f"unexpected Frame Content in highdicom's output: {item[tag].value[0]}")
            head, tail = encoded.split(values)
            pieces[-1].append(head)
            pieces.append([tail])
        elif tag == _SEGMENT_IDENTIFICATION:
            identified = True
            pieces.append([])
        else:
            pieces[-1].append(_encoded(item[tag]))
    if position is None:
        raise SegError("highdicom wrote a frame without Frame Content")
    before, between, after = (b"".join(part) for part in [*pieces, []][:3])
    return _ItemTemplate(before, position, between, after, identified)


def _per_frame_items(probe: Segmentation, frames: list[tuple[int, int, int]], count: int) -> bytes:
    """The Per-frame Functional Groups Sequence's value: for frame (segment, probe frame), the probe
    frame's item with the segment's number put in."""
    templates = [_template(item) for item in probe.PerFrameFunctionalGroupsSequence]
    identifications = {}
    for number in range(1, count + 1):
        item = Dataset()
        item.ReferencedSegmentNumber = number
        identifications[number] = _encoded(DataElement(_SEGMENT_IDENTIFICATION, "SQ", [item]))
    out: list[bytes] = []
    for number, index, _ in frames:
        template = templates[index]
        identification = identifications[number] if template.identified else b""
        length = len(template.before) + 8 + len(template.between) + len(identification) + len(template.after)
        # Items with an explicit length, as pydicom writes them.
        out += [
            _ITEM_TAG,
            struct.pack("<I", length),
            template.before,
            struct.pack("<2I", number, template.position),
        ]
        out += [template.between, identification, template.after]
    return b"".join(out)


def _pixel_data(layers: np.ndarray, layer_of: np.ndarray, frames: list[tuple[int, int, int]]) -> bytes:
    """The frames' bits, one after another without padding between frames (PS3.5 8.1.1: the first pixel in
    the least significant bit), NULL-padded to an even length."""
    parts: list[bytes] = []
    carry = np.zeros(
        0, dtype=bool
    )  # bits of a frame that did not fill a byte (rows × columns not a multiple of 8)
    for number, chunk in _chunks(frames):
        plane = layers[layer_of[number]]
        first, last = chunk[0], chunk[-1]
        # A run of neighbouring slices, either way, is a view; anything else is gathered.
        if last - first + 1 == len(chunk):
            stack = plane[first : last + 1]
        elif first - last + 1 == len(chunk):
            stack = plane[last : first + 1][::-1]
        else:
            stack = plane[chunk]
        bits = np.equal(stack, number).reshape(-1)
        if carry.size:
            bits = np.concatenate([carry, bits])
        whole = bits.size - bits.size % 8
        parts.append(np.packbits(bits[:whole], bitorder="little").tobytes())
        carry = bits[whole:]
    if carry.size:
        parts.append(np.packbits(carry, bitorder="little").tobytes())
    if sum(len(part) for part in parts) % 2:
        parts.append(b"\0")
    return b"".join(parts)


def _chunks(frames: list[tuple[int, int, int]]) -> list[tuple[int, list[int]]]:
    """The frames as (segment, up to PACK_CHUNK_SLICES slices k), in order."""
    chunks: list[tuple[int, list[int]]] = []
    for number, _, slice_k in frames:
        if chunks and chunks[-1][0] == number and len(chunks[-1][1]) < PACK_CHUNK_SLICES:
            chunks[-1][1].append(slice_k)
        else:
            chunks.append((number, [slice_k]))
    return chunks
