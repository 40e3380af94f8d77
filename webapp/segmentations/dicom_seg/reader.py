"""DICOM SEG → :class:`Labelmap` on the voxel grid of its source series (docs/segmentations.md).

Frames are placed by geometry, never by their order: each frame's plane position, orientation and pixel
spacing (per-frame functional groups first, then shared) map its pixels into the volume's (i, j, k) indices
(docs/volumes.md). A frame may be flipped or transposed against the volume's slices, or lie in another
plane of the grid, as long as every pixel lands on a voxel centre inside the volume; anything else is a
:class:`SourceMismatchError` that names the frame. All pixel work is vectorised (Python loops run over
frames or segments, never over pixels): bit-packed frames are searched eight bytes at a time and only the
pixels inside a segment are expanded, so a large, mostly empty BINARY SEG decodes in a fraction of a second.

No Django here; ``volume`` only needs the attributes of :class:`webapp.studies.volume.geometry.Volume`.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_color_lut, pixel_array
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from . import (
    TISSUE,
    Code,
    Labelmap,
    MissingGeometryError,
    NotASegError,
    SegError,
    SegmentInfo,
    SourceMismatchError,
    UnsupportedSegError,
)

if TYPE_CHECKING:
    from webapp.studies.volume.geometry import Volume

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
SEG_SOP_CLASSES = (SEGMENTATION_STORAGE, LABEL_MAP_SEGMENTATION_STORAGE)
# One deflate stream per frame (DICOM Sup 244); pydicom 3.0 has no decoder for it yet.
DEFLATED_IMAGE_FRAME_COMPRESSION = "1.2.840.10008.1.2.8.1"
# Pixel data stored as plain little-endian bits, which we unpack ourselves (much faster than pydicom for
# the 1-bit frames of BINARY SEGs). Deflated Explicit VR is inflated by pydicom when the file is read.
NATIVE_LITTLE_ENDIAN = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)

# A FRACTIONAL voxel belongs to its segment when value / MaximumFractionalValue is at least this.
FRACTIONAL_THRESHOLD = 0.5
# One pixel step of a frame must move one voxel along one axis of the grid, to within this (in voxels).
STEP_TOLERANCE = 0.01
# The corners of a frame must land this close (in voxels) to voxel centres. Generous enough for positions
# written as rounded decimal strings and for the slice jitter the volume builder tolerates (1/20 of a step).
GRID_TOLERANCE = 0.1
# DICOM's code for the background of a LABELMAP SEG (segment 0 in dcmqi's label maps).
BACKGROUND_TYPE = ("125040", "DCM")


# --- public API ------------------------------------------------------------------------------------


def read_seg(dataset: Dataset, volume: Volume) -> Labelmap:
    """Place the segments of a DICOM SEG on ``volume``'s grid.

    BINARY and FRACTIONAL SEGs (threshold :data:`FRACTIONAL_THRESHOLD`) and the LABELMAP SOP class are read;
    overlapping segments stay separate segments, on different layers of the labelmap. Raises
    :class:`NotASegError`, :class:`UnsupportedSegError` (slide microscopy, undecodable pixel data),
    :class:`SourceMismatchError` (another frame of reference, frames off the grid or outside the volume)
    or :class:`MissingGeometryError`; the message says which frame and why.
    """
    _check_is_seg(dataset)
    _check_not_slide_microscopy(dataset)
    _check_frame_of_reference(dataset, volume)
    kind = _segmentation_type(dataset)
    segments = segment_infos(dataset)
    rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
    count = int(dataset.get("NumberOfFrames") or 1)
    if rows <= 0 or columns <= 0:
        raise SegError(f"SEG {_uid(dataset)} has {rows} rows and {columns} columns: it holds no pixels")
    table = _frame_table(dataset, count, needs_segment_numbers=kind != "LABELMAP")
    placement = _place_frames(dataset, table, rows, columns, volume)

    known = {info.number for info in segments}
    if kind == "LABELMAP":
        layers = _labelmap_layers(dataset, placement, count, rows, columns, known, volume.array.shape)
    else:
        assert table.segment_numbers is not None
        _check_frame_segments(table.segment_numbers, known)
        packed = _binary_frames(dataset, kind, count, rows, columns)
        layers = _binary_layers(packed, table.segment_numbers, placement, rows, columns, volume.array.shape)
    return Labelmap(layers=layers, segments=segments)


def referenced_series_uids(dataset: Dataset) -> list[str]:
    """Series Instance UIDs that the SEG says it was derived from (ReferencedSeriesSequence), in order.

    Empty when the SEG has no ReferencedSeriesSequence; :func:`referenced_instance_uids` then still names
    the source instances, which lead to their series in a database.
    """
    uids: list[str] = []
    for item in dataset.get("ReferencedSeriesSequence") or []:
        uid = str(item.get("SeriesInstanceUID", "") or "").strip()
        if uid and uid not in uids:
            uids.append(uid)
    return uids


def referenced_instance_uids(dataset: Dataset) -> list[str]:
    """SOP Instance UIDs of the SEG's source images: ReferencedSeriesSequence, then the per-frame
    Derivation Image / Source Image references, each UID once, in order of appearance."""
    uids: list[str] = []
    for series in dataset.get("ReferencedSeriesSequence") or []:
        for item in series.get("ReferencedInstanceSequence") or []:
            uids.append(str(item.get("ReferencedSOPInstanceUID", "") or "").strip())
    for group in dataset.get("PerFrameFunctionalGroupsSequence") or []:
        uids.extend(uid for uid, _ in _source_images(group))
    return [uid for uid in dict.fromkeys(uids) if uid]


def segment_infos(dataset: Dataset) -> list[SegmentInfo]:
    """What the SEG's SegmentSequence says about each segment, by segment number. A LABELMAP SEG's
    background segment (number 0) is left out: in a :class:`Labelmap` 0 is background."""
    infos: list[SegmentInfo] = []
    palette = _palette_colours(dataset)
    padding = _pixel_padding_value(dataset)
    for item in dataset.get("SegmentSequence") or []:
        number = int(item.get("SegmentNumber", -1))
        label = str(item.get("SegmentLabel", "") or "")
        type_code = _code(item, "SegmentedPropertyTypeCodeSequence")
        if number == 0:
            is_background = (type_code.value, type_code.scheme) == BACKGROUND_TYPE or padding == 0
            if _is_labelmap(dataset) and is_background:
                continue
            raise UnsupportedSegError(
                f"segment 0 ({label!r}) is not a LABELMAP background segment: Annovox keeps 0 for "
                "background, so a SEG with a real segment numbered 0 cannot be read"
            )
        if number < 1 or number > 65535:
            raise SegError(f"SegmentSequence holds segment number {number}: segment numbers are 1 to 65535")
        if any(info.number == number for info in infos):
            raise SegError(f"SegmentSequence defines segment {number} twice")
        cielab = item.get("RecommendedDisplayCIELabValue")
        if cielab is not None and len(cielab) == 3:
            colour = cielab_to_srgb_hex(cielab)
        elif number in palette:
            colour = palette[number]
        else:
            colour = SegmentInfo.color
        algorithm = (item.get("SegmentationAlgorithmIdentificationSequence") or [Dataset()])[0]
        infos.append(
            SegmentInfo(
                number=number,
                label=label,
                color=colour,
                category=_code(item, "SegmentedPropertyCategoryCodeSequence"),
                type=type_code,
                tracking_id=str(item.get("TrackingID", "") or ""),
                tracking_uid=str(item.get("TrackingUID", "") or ""),
                algorithm_type=str(item.get("SegmentAlgorithmType", "") or "MANUAL"),
                algorithm_name=str(
                    item.get("SegmentAlgorithmName", "") or algorithm.get("AlgorithmName", "") or ""
                ),
                algorithm_version=str(algorithm.get("AlgorithmVersion", "") or ""),
                description=str(item.get("SegmentDescription", "") or ""),
            )
        )
    if not infos:
        raise SegError(f"SEG {_uid(dataset)} defines no segments (its SegmentSequence is empty)")
    return sorted(infos, key=lambda info: info.number)


def cielab_to_srgb_hex(value: Sequence[int]) -> str:
    """DICOM's CIELab (L*, a*, b* scaled to 0..65535, PS3.3 C.10.7.1.1) as an sRGB colour "#rrggbb".

    CIELab → XYZ with the D65 white point, XYZ → linear sRGB (IEC 61966-2-1 matrix), then the sRGB transfer
    curve; colours outside the sRGB gamut are clipped.
    """
    lightness = float(value[0]) / 65535 * 100
    a_star = float(value[1]) / 65535 * 255 - 128
    b_star = float(value[2]) / 65535 * 255 - 128
    fy = (lightness + 16) / 116
    fx, fz = fy + a_star / 500, fy - b_star / 200

    def inverse_f(t: float) -> float:
        return t**3 if t > 6 / 29 else 3 * (6 / 29) ** 2 * (t - 4 / 29)

    x, y, z = 0.95047 * inverse_f(fx), inverse_f(fy), 1.08883 * inverse_f(fz)
    linear = (
        3.2406 * x - 1.5372 * y - 0.4986 * z,
        -0.9689 * x + 1.8758 * y + 0.0415 * z,
        0.0557 * x - 0.2040 * y + 1.0570 * z,
    )

    def encode(c: float) -> int:
        c = min(max(c, 0.0), 1.0)
        c = 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055
        return round(c * 255)

    return "#" + "".join(f"{encode(c):02x}" for c in linear)


# --- what kind of SEG ------------------------------------------------------------------------------


def _uid(dataset: Dataset) -> str:
    return str(dataset.get("SOPInstanceUID", "") or "(no SOP Instance UID)").strip()


def _check_is_seg(dataset: Dataset) -> None:
    sop_class = str(dataset.get("SOPClassUID", "") or "").strip()
    if sop_class in SEG_SOP_CLASSES:
        if "PixelData" not in dataset:
            raise SegError(f"SEG {_uid(dataset)} has no pixel data")
        return
    name = UID(sop_class).name if sop_class else "an object without SOP Class UID"
    raise NotASegError(f"{_uid(dataset)} is {name} ({dataset.get('Modality', '?')}), not a DICOM SEG")


def _check_not_slide_microscopy(dataset: Dataset) -> None:
    organisation = str(dataset.get("DimensionOrganizationType", "") or "")
    groups = [*(dataset.get("SharedFunctionalGroupsSequence") or [])[:1]]
    groups += [*(dataset.get("PerFrameFunctionalGroupsSequence") or [])[:1]]
    on_slide = any("PlanePositionSlideSequence" in group for group in groups)
    if on_slide or organisation.startswith("TILED") or "TotalPixelMatrixRows" in dataset:
        raise UnsupportedSegError(
            f"SEG {_uid(dataset)} segments a slide-microscopy image: its frames are tiles positioned on a "
            "glass slide (Plane Position (Slide), total pixel matrix), not slices of a 3D volume, and "
            "Annovox reads SEGs of volumes (CT, MR, PET, 3D microscopy stacks) only"
        )


def _check_frame_of_reference(dataset: Dataset, volume: Volume) -> None:
    ours = str(dataset.get("FrameOfReferenceUID", "") or "").strip()
    theirs = str(volume.frame_of_reference_uid or "").strip()
    if ours and theirs and ours != theirs:
        series = ", ".join(referenced_series_uids(dataset)) or "none named"
        raise SourceMismatchError(
            f"SEG {_uid(dataset)} is in frame of reference {ours} but the volume of series "
            f"{volume.series_instance_uid or '(unknown)'} is in {theirs}: they share no patient coordinates, "
            f"so this SEG does not belong to this series (it refers to series {series})"
        )


def _is_labelmap(dataset: Dataset) -> bool:
    sop_class = str(dataset.get("SOPClassUID", "") or "").strip()
    return sop_class == LABEL_MAP_SEGMENTATION_STORAGE or dataset.get("SegmentationType") == "LABELMAP"


def _segmentation_type(dataset: Dataset) -> str:
    if _is_labelmap(dataset):
        return "LABELMAP"
    kind = str(dataset.get("SegmentationType", "") or "")
    if kind not in ("BINARY", "FRACTIONAL"):
        raise SegError(f"SEG {_uid(dataset)} has SegmentationType {kind!r}: BINARY, FRACTIONAL or LABELMAP")
    return kind


def _pixel_padding_value(dataset: Dataset) -> int | None:
    value = dataset.get("PixelPaddingValue")
    return None if value is None else int(value)


def _code(item: Dataset, keyword: str) -> Code:
    sequence = item.get(keyword)
    if not sequence:
        return TISSUE
    code = sequence[0]
    value = code.get("CodeValue") or code.get("LongCodeValue") or code.get("URNCodeValue") or ""
    return Code(
        str(value), str(code.get("CodingSchemeDesignator", "") or ""), str(code.get("CodeMeaning", ""))
    )


def _palette_colours(dataset: Dataset) -> dict[int, str]:
    """For a PALETTE COLOR label map: the colour of each pixel value that the palette maps, "#rrggbb"."""
    descriptor = dataset.get("RedPaletteColorLookupTableDescriptor")
    if dataset.get("PhotometricInterpretation") != "PALETTE COLOR" or descriptor is None:
        return {}
    entries, first = int(descriptor[0]) or 65536, int(descriptor[1])
    values = np.arange(first, first + entries, dtype=np.uint16 if first + entries > 256 else np.uint8)
    try:
        rgb = apply_color_lut(values, dataset)  # pydicom reads plain and segmented palettes, 8 or 16 bits
    except (ValueError, KeyError, AttributeError, IndexError):
        return {}  # a damaged palette costs only the colours
    if rgb.dtype.itemsize > 1:
        rgb = rgb >> 8
    return {
        int(value): "#" + "".join(f"{int(c):02x}" for c in colour)
        for value, colour in zip(values, rgb, strict=True)
    }


# --- where each frame goes -------------------------------------------------------------------------


@dataclass
class _FrameTable:
    """Per frame (index f = frame number − 1): geometry and segment number, from the functional groups."""

    positions: list[Any]  # ImagePositionPatient or None
    orientations: list[Any]  # ImageOrientationPatient or None
    pixel_spacings: list[Any]  # PixelSpacing or None
    segment_numbers: np.ndarray | None  # ReferencedSegmentNumber (BINARY, FRACTIONAL)


@dataclass
class _Placement:
    """Frame f's pixel (row r, column c) is voxel ``base[f] + r * row_stride[f] + c * column_stride[f]`` of
    the volume's array flattened in C order ([k, j, i])."""

    base: np.ndarray
    row_stride: np.ndarray
    column_stride: np.ndarray
    # The index of the frame's plane along the grid axis its pixels do not move along (k for axial frames
    # of an axial volume): frames with the same strides and different planes cannot overlap.
    plane: np.ndarray


# (functional group sequence, attribute) for each piece of per-frame information the reader needs.
_MACROS = {
    "positions": ("PlanePositionSequence", "ImagePositionPatient"),
    "orientations": ("PlaneOrientationSequence", "ImageOrientationPatient"),
    "pixel_spacings": ("PixelMeasuresSequence", "PixelSpacing"),
    "segment_numbers": ("SegmentIdentificationSequence", "ReferencedSegmentNumber"),
}


def _frame_table(dataset: Dataset, count: int, *, needs_segment_numbers: bool) -> _FrameTable:
    shared_groups = dataset.get("SharedFunctionalGroupsSequence") or [Dataset()]
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) != count:
        raise SegError(
            f"SEG {_uid(dataset)} has {count} frames but {len(per_frame)} items in its "
            "PerFrameFunctionalGroupsSequence"
        )
    columns: dict[str, list[Any]] = {}
    for name, (macro, keyword) in _MACROS.items():
        columns[name] = [_macro_value(shared_groups[0], macro, keyword)] * count
    if per_frame is not None:
        for index, group in enumerate(per_frame):
            # Only the four macros are touched: each nested sequence pydicom parses costs time.
            for name, (macro, keyword) in _MACROS.items():
                if macro in group:
                    value = _encoded_macro_value(group, macro, keyword)
                    if value is _NOT_PARSED:
                        value = _macro_value(group, macro, keyword)
                    if value is not None:
                        columns[name][index] = value
    segment_numbers = None
    if needs_segment_numbers:
        missing = [index for index, number in enumerate(columns["segment_numbers"]) if number is None]
        if missing:
            raise SegError(
                f"frame {missing[0] + 1} of SEG {_uid(dataset)} does not say which segment it holds "
                "(no Segment Identification functional group)"
            )
        segment_numbers = np.array([int(number) for number in columns["segment_numbers"]], dtype=np.int64)
    return _FrameTable(
        positions=columns["positions"],
        orientations=columns["orientations"],
        pixel_spacings=columns["pixel_spacings"],
        segment_numbers=segment_numbers,
    )


# Value representations whose length field has 4 bytes in explicit VR (PS3.5 7.1.2).
_LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_NOT_PARSED = object()


def _encoded_macro_value(group: Dataset, macro: str, keyword: str) -> Any:
    """The attribute of a functional group macro read straight from its still-encoded bytes, or
    ``_NOT_PARSED`` where pydicom must do it.

    pydicom turns each nested sequence into data sets the first time it is accessed, which costs about
    0.1 ms per macro and frame: 0.3 s for the plane positions and segment numbers of 1500 frames. The
    macros the reader needs are short items of a few plain elements, simple enough to read here. Only the
    common case is handled (a defined-length little-endian item, a DS or US value); anything else goes back
    to pydicom.
    """
    raw = group.get_item(macro)
    if not isinstance(raw, RawDataElement) or not isinstance(raw.value, bytes) or not raw.is_little_endian:
        return _NOT_PARSED
    data = raw.value
    if len(data) < 8 or struct.unpack_from("<HHL", data) != (0xFFFE, 0xE000, len(data) - 8):
        return _NOT_PARSED  # not exactly one item of defined length
    wanted = tag_for_keyword(keyword)
    position = 8
    while position + 8 <= len(data):
        group_number, element_number = struct.unpack_from("<HH", data, position)
        if raw.is_implicit_VR:
            (length,) = struct.unpack_from("<L", data, position + 4)
            position += 8
        elif data[position + 4 : position + 6] in _LONG_LENGTH_VRS:
            if position + 12 > len(data):
                return _NOT_PARSED
            (length,) = struct.unpack_from("<L", data, position + 8)
            position += 12
        else:
            (length,) = struct.unpack_from("<H", data, position + 6)
            position += 8
        if length == 0xFFFFFFFF or position + length > len(data):
            return _NOT_PARSED
        if (group_number << 16 | element_number) == wanted:
            value = data[position : position + length]
            if keyword == "ReferencedSegmentNumber":
                return struct.unpack_from("<H", value)[0] if length >= 2 else None
            text = value.decode("ascii", "replace").strip(" \x00")
            try:
                return [float(part) for part in text.split("\\")] if text else None
            except ValueError:
                return _NOT_PARSED
        position += length
    return None


def _macro_value(group: Dataset, macro: str, keyword: str) -> Any:
    sequence = group.get(macro)
    if not sequence:
        return None
    return sequence[0].get(keyword)


def _floats(values: list[Any], width: int, what: str, dataset: Dataset) -> np.ndarray:
    try:
        array = np.array([[float(v) for v in value] for value in values], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MissingGeometryError(f"SEG {_uid(dataset)}: a frame's {what} is not {width} numbers") from exc
    if array.shape != (len(values), width) or not np.isfinite(array).all():
        raise MissingGeometryError(f"SEG {_uid(dataset)}: a frame's {what} is not {width} finite numbers")
    return array


def _place_frames(
    dataset: Dataset, table: _FrameTable, rows: int, columns: int, volume: Volume
) -> _Placement:
    with_position = [value is not None for value in table.positions]
    if not any(with_position):
        return _place_by_reference(dataset, rows, columns, volume)
    for index, present in enumerate(with_position):
        what = None
        if not present:
            what = "a plane position (ImagePositionPatient)"
        elif table.orientations[index] is None:
            what = "a plane orientation (ImageOrientationPatient)"
        elif table.pixel_spacings[index] is None:
            what = "a pixel spacing (PixelSpacing)"
        if what is not None:
            raise MissingGeometryError(
                f"frame {index + 1} of SEG {_uid(dataset)} lacks {what}, so where its pixels lie is unknown"
            )
    positions = _floats(table.positions, 3, "ImagePositionPatient", dataset)
    orientations = _floats(table.orientations, 6, "ImageOrientationPatient", dataset)
    spacings = _floats(table.pixel_spacings, 2, "PixelSpacing", dataset)
    # DICOM: moving one column goes PixelSpacing[1] along the row cosine, one row PixelSpacing[0] along the
    # column cosine.
    origin = volume.lps_to_index(positions)
    column_step = volume.lps_to_index(positions + orientations[:, :3] * spacings[:, 1:2]) - origin
    row_step = volume.lps_to_index(positions + orientations[:, 3:] * spacings[:, 0:1]) - origin
    column_axis, column_unit = _nearest_unit_step(column_step)
    row_axis, row_unit = _nearest_unit_step(row_step)
    off_axis = np.maximum(
        np.abs(column_step - column_unit).max(axis=1), np.abs(row_step - row_unit).max(axis=1)
    )
    misaligned = (off_axis > STEP_TOLERANCE) | (column_axis == row_axis)
    if misaligned.any():
        index = int(np.argmax(misaligned))
        raise SourceMismatchError(
            f"{_frame_name(index, table)} of SEG {_uid(dataset)} does not line up with the volume's voxels: "
            f"one column to the right moves {_fmt(column_step[index])} and one row down "
            f"{_fmt(row_step[index])} voxels in (i, j, k), where each must be one voxel along one axis "
            "(frame pixel spacing "
            f"{_fmt(spacings[index])} mm, orientation {_fmt(orientations[index])}; volume spacing "
            f"{_fmt(volume.spacing)} mm)"
        )
    corners = np.stack([origin, origin + (columns - 1) * column_step, origin + (rows - 1) * row_step])
    off_grid = np.abs(corners - np.rint(corners)).max(axis=(0, 2))
    if (off_grid > GRID_TOLERANCE).any():
        index = int(np.argmax(off_grid > GRID_TOLERANCE))
        raise SourceMismatchError(
            f"{_frame_name(index, table)} of SEG {_uid(dataset)} lies off the volume's grid: its first pixel "
            f"(at {_fmt(positions[index])} mm) falls at voxel (i, j, k) = {_fmt(origin[index])}, up to "
            f"{off_grid[index]:.2f} voxel away from voxel centres (tolerance {GRID_TOLERANCE})"
        )
    start = np.rint(origin).astype(np.int64)
    column_unit = column_unit.astype(np.int64)
    row_unit = row_unit.astype(np.int64)
    ends = np.stack([start, start + (columns - 1) * column_unit, start + (rows - 1) * row_unit])
    low, high = ends.min(axis=0), ends.max(axis=0)
    extent = np.array(volume.shape_ijk)
    outside = (low < 0).any(axis=1) | (high >= extent).any(axis=1)
    if outside.any():
        index = int(np.argmax(outside))
        covered = ", ".join(f"{axis} {low[index][n]}..{high[index][n]}" for n, axis in enumerate("ijk"))
        has = ", ".join(f"{axis} 0..{extent[n] - 1}" for n, axis in enumerate("ijk"))
        raise SourceMismatchError(
            f"{_frame_name(index, table)} of SEG {_uid(dataset)} lies outside the volume: it covers voxels "
            f"{covered} but the volume has {has} (frame position {_fmt(positions[index])} mm)"
        )
    strides = _strides(volume)
    normal_axis = 3 - column_axis - row_axis
    return _Placement(
        base=start @ strides,
        row_stride=row_unit @ strides,
        column_stride=column_unit @ strides,
        plane=start[np.arange(len(start)), normal_axis],
    )


def _nearest_unit_step(steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``steps`` (n, 3): the axis of its largest component and the ±1 unit vector along it."""
    axis = np.argmax(np.abs(steps), axis=1)
    unit = np.zeros_like(steps)
    rows = np.arange(len(steps))
    unit[rows, axis] = np.sign(steps[rows, axis])
    return axis, unit


def _strides(volume: Volume) -> np.ndarray:
    """How far one step in i, j and k moves in the flattened [k, j, i] array."""
    columns, rows, _ = volume.shape_ijk
    return np.array([1, columns, columns * rows], dtype=np.int64)


def _place_by_reference(dataset: Dataset, rows: int, columns: int, volume: Volume) -> _Placement:
    """Without any plane position, a frame can still be put on the slice it was derived from, pixel for
    pixel, when its source image reference names a slice of the volume and the sizes agree."""
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or []
    count = int(dataset.get("NumberOfFrames") or 1)
    if len(per_frame) != count or not any(_source_images(group) for group in per_frame):
        raise MissingGeometryError(
            f"SEG {_uid(dataset)} has no plane positions and no per-frame source image references, so its "
            "frames cannot be placed in space (a SEG of a projection image such as CR, or a damaged SEG)"
        )
    slice_of = {(source.sop_instance_uid, source.frame_number): k for k, source in enumerate(volume.sources)}
    slices = []
    for index, group in enumerate(per_frame):
        found = set()
        for uid, frame_number in _source_images(group):
            # A single-frame source is (uid, None) in the volume; a reference may still say frame 1.
            for key in {(uid, frame_number), (uid, None if frame_number == 1 else frame_number)}:
                if key in slice_of:
                    found.add(slice_of[key])
        if len(found) != 1:
            why = "none of its source images is" if not found else "its source images are several"
            raise MissingGeometryError(
                f"frame {index + 1} of SEG {_uid(dataset)} has no plane position and {why} a slice of the "
                f"volume of series {volume.series_instance_uid or '(unknown)'}, so it cannot be placed"
            )
        slices.append(found.pop())
    volume_columns, volume_rows, _ = volume.shape_ijk
    if (rows, columns) != (volume_rows, volume_columns):
        raise SourceMismatchError(
            f"SEG {_uid(dataset)} has no plane positions and its {rows}×{columns} frames are not the size of "
            f"the volume's {volume_rows}×{volume_columns} slices (rows×columns), so they cannot be placed"
        )
    strides = _strides(volume)
    planes = np.array(slices, dtype=np.int64)
    return _Placement(
        base=planes * strides[2],
        row_stride=np.full(count, strides[1]),
        column_stride=np.full(count, strides[0]),
        plane=planes,
    )


def _source_images(group: Dataset) -> list[tuple[str, int | None]]:
    """(SOP Instance UID, frame number or None) of a per-frame group's Derivation Image references."""
    found: list[tuple[str, int | None]] = []
    for derivation in group.get("DerivationImageSequence") or []:
        for source in derivation.get("SourceImageSequence") or []:
            uid = str(source.get("ReferencedSOPInstanceUID", "") or "").strip()
            frames = source.get("ReferencedFrameNumber")
            if frames is None or frames == "":
                found.append((uid, None))
            else:
                numbers = frames if isinstance(frames, Sequence) and not isinstance(frames, str) else [frames]
                found.extend((uid, int(number)) for number in numbers)
    return found


def _frame_name(index: int, table: _FrameTable) -> str:
    if table.segment_numbers is None:
        return f"frame {index + 1}"
    return f"frame {index + 1} (segment {table.segment_numbers[index]})"


def _fmt(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


# --- pixels ----------------------------------------------------------------------------------------


def _binary_frames(dataset: Dataset, kind: str, count: int, rows: int, columns: int) -> np.ndarray:
    """A BINARY or FRACTIONAL SEG's frames as bit-packed masks, one bit per pixel (least significant bit
    first), frame after frame without padding: the native layout of BINARY pixel data."""
    syntax = _transfer_syntax(dataset)
    bits = int(dataset.get("BitsAllocated") or 1)
    needed = math.ceil(count * rows * columns / 8)
    if kind == "BINARY" and bits == 1 and syntax in NATIVE_LITTLE_ENDIAN:
        packed = np.frombuffer(dataset.PixelData, dtype=np.uint8)
        if packed.size < needed:
            raise SegError(
                f"SEG {_uid(dataset)}: {packed.size} bytes of pixel data where {needed} are needed"
            )
        return packed[:needed]
    frames = _decode(dataset, syntax, count, rows, columns)
    if kind == "FRACTIONAL":
        maximum = int(dataset.get("MaximumFractionalValue") or 0)
        if maximum <= 0:
            raise SegError(f"FRACTIONAL SEG {_uid(dataset)} has no positive MaximumFractionalValue")
        # value / maximum >= 0.5, in integers: value >= ceil(maximum * 0.5).
        masks = frames >= math.ceil(maximum * FRACTIONAL_THRESHOLD)
    else:
        masks = frames != 0
    return np.packbits(masks.reshape(-1), bitorder="little")


def _labelmap_values(dataset: Dataset, count: int, rows: int, columns: int, known: set[int]) -> np.ndarray:
    """A LABELMAP's frames (count, rows, columns) of segment numbers, background (the Pixel Padding Value,
    and 0, which is never a segment here) set to 0; other values that name no segment are an error."""
    frames = _decode(dataset, _transfer_syntax(dataset), count, rows, columns)
    padding = _pixel_padding_value(dataset)
    if padding is not None and padding != 0:
        frames = np.where(frames == padding, 0, frames)
    allowed = np.zeros(max(int(frames.max(initial=0)), max(known)) + 1, dtype=bool)
    allowed[sorted(known)] = True
    allowed[0] = True
    valid = allowed[frames]
    if not valid.all():
        flat = int(np.argmin(valid.reshape(-1)))
        raise SegError(
            f"frame {flat // (rows * columns) + 1} of LABELMAP SEG {_uid(dataset)} has pixels of value "
            f"{frames.reshape(-1)[flat]}, which is neither a segment of its SegmentSequence nor background "
            "(0 or the Pixel Padding Value)"
        )
    return frames


def _paint_frames(
    values: np.ndarray, placement: _Placement, shape: tuple[int, ...], largest: int
) -> np.ndarray:
    """One layer with each frame's values written where the frame lies; for frames that cannot overlap."""
    layer = np.zeros(int(np.prod(shape)), dtype=np.uint8 if largest <= 255 else np.uint16)
    rows, columns = values.shape[1:]
    for frame, pixels in enumerate(values):
        # A view of the voxels under the frame: any flip or transposition is only a choice of strides. The
        # placement was checked to stay inside the volume, so the view cannot leave the array.
        target = np.lib.stride_tricks.as_strided(
            layer[placement.base[frame] :],
            shape=(rows, columns),
            strides=(
                placement.row_stride[frame] * layer.itemsize,
                placement.column_stride[frame] * layer.itemsize,
            ),
            writeable=True,
        )
        target[...] = pixels
    return layer.reshape(1, *shape)


def _voxels_of_pixels(pixels: np.ndarray, placement: _Placement, rows: int, columns: int) -> np.ndarray:
    """Flat voxel indices of frame pixels given as ``f * rows * columns + r * columns + c``."""
    frame, within = np.divmod(pixels, rows * columns)
    row, column = np.divmod(within, columns)
    return placement.base[frame] + row * placement.row_stride[frame] + column * placement.column_stride[frame]


def _transfer_syntax(dataset: Dataset) -> str:
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    # Without one (a data set built in memory) the pixel data can only be native.
    return str(syntax) if syntax else ExplicitVRLittleEndian


def _busy_bytes(packed: np.ndarray) -> np.ndarray:
    """Indices of the non-zero bytes of ``packed``, ascending. Segmentations are mostly empty, so the
    search runs over 8-byte words first."""
    whole = packed.size // 8 * 8
    words = np.flatnonzero(packed[:whole].view(np.uint64))
    candidates = (words[:, None] * 8 + np.arange(8)).reshape(-1)
    return np.concatenate([candidates[packed[candidates] != 0], whole + np.flatnonzero(packed[whole:])])


def _set_bits(packed: np.ndarray) -> np.ndarray:
    """Indices of the set bits of bit-packed data (least significant bit first), ascending. Only the
    non-zero bytes are unpacked."""
    busy = _busy_bytes(packed)
    bits = np.unpackbits(packed[busy][:, None], axis=1, bitorder="little")
    byte, bit = np.nonzero(bits)
    return busy[byte] * 8 + bit


def _decode(dataset: Dataset, syntax: str, count: int, rows: int, columns: int) -> np.ndarray:
    """All frames as an array (count, rows, columns) of stored values."""
    if syntax == DEFLATED_IMAGE_FRAME_COMPRESSION:
        return _inflate_frames(dataset, count, rows, columns)
    bits = int(dataset.get("BitsAllocated") or 1)
    if syntax == RLELossless and bits == 1:
        return _rle_bit_frames(dataset, count, rows, columns)
    if syntax in NATIVE_LITTLE_ENDIAN and bits in (8, 16):
        dtype = np.dtype(np.uint8 if bits == 8 else "<u2")
        if len(dataset.PixelData) < count * rows * columns * dtype.itemsize:
            raise SegError(
                f"SEG {_uid(dataset)}: {len(dataset.PixelData)} bytes of pixel data where "
                f"{count * rows * columns * dtype.itemsize} are needed"
            )
        frames = np.frombuffer(dataset.PixelData, dtype=dtype, count=count * rows * columns)
        return frames.reshape(count, rows, columns)
    try:
        frames = pixel_array(dataset, raw=True)
    except Exception as exc:  # pydicom raises several types for missing plugins and damaged data
        raise UnsupportedSegError(
            f"the pixel data of SEG {_uid(dataset)} ({UID(syntax).name}) cannot be decoded: {exc}"
        ) from exc
    if frames.size != count * rows * columns:
        raise SegError(f"SEG {_uid(dataset)}: decoded {frames.shape} pixels, not {count}×{rows}×{columns}")
    return frames.reshape(count, rows, columns)


def _inflate_frames(dataset: Dataset, count: int, rows: int, columns: int) -> np.ndarray:
    """Deflated Image Frame Compression: each frame one fragment, a raw deflate stream (RFC 1951) of the
    frame's native bytes; a 1-bit frame starts on a byte boundary."""
    bits = int(dataset.get("BitsAllocated") or 1)
    dtype = np.dtype("<u2") if bits == 16 else np.dtype(np.uint8)
    out = np.empty((count, rows * columns), dtype=dtype)
    size = math.ceil(rows * columns / 8) if bits == 1 else rows * columns * dtype.itemsize
    for index, fragment in enumerate(_fragments(dataset, count)):
        try:
            data = zlib.decompress(fragment, wbits=-zlib.MAX_WBITS)
        except zlib.error as exc:
            raise SegError(
                f"frame {index + 1} of SEG {_uid(dataset)}: the deflate stream is damaged: {exc}"
            ) from exc
        if len(data) < size:
            raise SegError(
                f"frame {index + 1} of SEG {_uid(dataset)} inflates to {len(data)} of {size} bytes"
            )
        if bits == 1:
            out[index] = np.unpackbits(np.frombuffer(data, np.uint8), count=rows * columns, bitorder="little")
        else:
            out[index] = np.frombuffer(data, dtype=dtype, count=rows * columns)
    return out.reshape(count, rows, columns)


def _fragments(dataset: Dataset, count: int) -> list[bytes]:
    """The encoded frames of encapsulated pixel data, exactly ``count`` of them."""
    try:
        frames = list(generate_frames(dataset.PixelData, number_of_frames=count))
    except (ValueError, struct.error) as exc:
        raise SegError(f"SEG {_uid(dataset)}: the encapsulated pixel data is damaged: {exc}") from exc
    if len(frames) != count:
        raise SegError(f"SEG {_uid(dataset)} holds {len(frames)} encoded frames, not {count}")
    return frames


def _rle_bit_frames(dataset: Dataset, count: int, rows: int, columns: int) -> np.ndarray:
    """RLE Lossless (PS3.5 Annex G) of 1-bit frames, which pydicom 3.0 does not decode: each frame one
    fragment, a 64-byte header and one PackBits segment holding the frame's bit-packed bytes."""
    out = np.empty((count, rows * columns), dtype=np.uint8)
    size = math.ceil(rows * columns / 8)
    for index, fragment in enumerate(_fragments(dataset, count)):
        if len(fragment) < 64:
            raise SegError(f"frame {index + 1} of SEG {_uid(dataset)}: the RLE header is cut short")
        segments, first = struct.unpack_from("<2L", fragment)
        if segments != 1:
            raise SegError(
                f"frame {index + 1} of SEG {_uid(dataset)}: RLE data of 1-bit pixels in {segments} "
                "segments (one is expected)"
            )
        packed = _unpack_bits_runs(fragment, first, size)
        if len(packed) < size:
            raise SegError(f"frame {index + 1} of SEG {_uid(dataset)}: the RLE data ends early")
        out[index] = np.unpackbits(
            np.frombuffer(packed, np.uint8, count=size), count=rows * columns, bitorder="little"
        )
    return out.reshape(count, rows, columns)


def _unpack_bits_runs(data: bytes, start: int, size: int) -> bytes:
    """PackBits: a header byte n copies the next n + 1 bytes (n < 128) or repeats the next byte 257 − n
    times (n > 128); 128 does nothing. Stops once ``size`` bytes are out."""
    out = bytearray()
    position, end = start, len(data)
    while position < end and len(out) < size:
        header = data[position]
        if header < 128:
            out += data[position + 1 : position + header + 2]
            position += header + 2
        elif header > 128:
            out += data[position + 1 : position + 2] * (257 - header)
            position += 2
        else:
            position += 1
    return bytes(out)


# --- segments → layers -----------------------------------------------------------------------------


def _check_frame_segments(segment_numbers: np.ndarray, known: set[int]) -> None:
    unknown = sorted(set(np.unique(segment_numbers).tolist()) - known)
    if unknown:
        index = int(np.argmax(np.isin(segment_numbers, unknown)))
        raise SegError(
            f"frame {index + 1} holds segment {unknown[0]}, which the SegmentSequence does not define"
        )


def _binary_layers(
    packed: np.ndarray,
    segment_numbers: np.ndarray,
    placement: _Placement,
    rows: int,
    columns: int,
    shape: tuple[int, ...],
) -> np.ndarray:
    largest = int(segment_numbers.max(initial=1))
    if _word_placeable(placement, segment_numbers, rows, columns, largest):
        return _pack_words(
            packed.reshape(len(segment_numbers), -1), segment_numbers, placement, shape, columns
        )
    pixels = _set_bits(packed)
    pixels = pixels[pixels < len(segment_numbers) * rows * columns]  # not the padding bits of the last byte
    numbers = segment_numbers[pixels // (rows * columns)]
    return _pack(_voxels_of_pixels(pixels, placement, rows, columns), numbers, shape, largest)


def _labelmap_layers(
    dataset: Dataset,
    placement: _Placement,
    count: int,
    rows: int,
    columns: int,
    known: set[int],
    shape: tuple[int, ...],
) -> np.ndarray:
    values = _labelmap_values(dataset, count, rows, columns, known)
    largest = max(known)
    # A LABELMAP frame holds every segment, so frames must not share a plane at all to be painted as they are.
    if _on_distinct_planes(placement, np.zeros(count, dtype=np.int64)):
        return _paint_frames(values, placement, shape, largest)
    pixels = np.flatnonzero(values)
    numbers = values.reshape(-1)[pixels].astype(np.int64)
    return _pack(_voxels_of_pixels(pixels, placement, rows, columns), numbers, shape, largest)


# Each value of a byte of bit-packed pixels spread to eight bytes of 0 or 1, one per pixel, as a uint64:
# OR-ing ``_SPREAD[byte] * number`` into a uint64 view of a layer writes eight voxels at once.
_SPREAD = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").view(np.uint64)[
    :, 0
]


def _word_placeable(
    placement: _Placement, segment_numbers: np.ndarray, rows: int, columns: int, largest: int
) -> bool:
    """Whether :func:`_pack_words` can place these frames: every byte of a frame's packed pixels lands on
    eight consecutive voxels that start a uint64 of the layer (frames not mirrored left-right, rows of whole
    bytes, 8-aligned offsets), all frames are parallel (same strides), no segment has two frames in one
    plane (so no voxel is written twice within a segment) and segment numbers fit a byte."""
    if largest > 255 or columns % 8 or (rows * columns) % 8:
        return False
    if not (placement.column_stride == 1).all():
        return False
    if placement.row_stride[0] % 8 or (placement.base % 8).any():
        return False
    return _on_distinct_planes(placement, segment_numbers)


def _on_distinct_planes(placement: _Placement, segment_numbers: np.ndarray) -> bool:
    """Whether all frames are parallel (same strides) and no two frames of one segment share a plane, so
    that no voxel is covered twice by a segment."""
    if not (placement.column_stride == placement.column_stride[0]).all():
        return False
    if not (placement.row_stride == placement.row_stride[0]).all():
        return False
    pairs = np.stack([segment_numbers, placement.plane], axis=1)
    return len(np.unique(pairs, axis=0)) == len(pairs)


def _pack_words(
    packed: np.ndarray,
    segment_numbers: np.ndarray,
    placement: _Placement,
    shape: tuple[int, ...],
    columns: int,
) -> np.ndarray:
    """:func:`_pack` for bit-packed frames (count, bytes per frame) that :func:`_word_placeable` accepts,
    working on eight voxels at a time and only where a frame has set bits."""
    count, frame_bytes = packed.shape
    flat = packed.reshape(-1)
    busy = _busy_bytes(flat)
    bounds = np.searchsorted(busy, np.arange(count + 1) * frame_bytes)
    row_bytes = columns // 8
    size = int(np.prod(shape))
    layers = [np.zeros(size // 8, dtype=np.uint64)]
    for number in np.unique(segment_numbers):
        words, masks = [], []
        for frame in np.flatnonzero(segment_numbers == number):
            start, end = bounds[frame], bounds[frame + 1]
            if start == end:
                continue
            row, byte = np.divmod(busy[start:end] - frame * frame_bytes, row_bytes)
            words.append((placement.base[frame] + row * placement.row_stride[frame]) // 8 + byte)
            masks.append(_SPREAD[flat[busy[start:end]]])
        if not words:
            continue
        word, mask = np.concatenate(words), np.concatenate(masks)
        occupied = mask * np.uint64(0xFF)
        for layer in layers:
            if not (layer[word] & occupied).any():
                break
        else:
            layer = np.zeros(size // 8, dtype=np.uint64)
            layers.append(layer)
        layer[word] |= mask * np.uint64(number)
    return _stack(layers).view(np.uint8).reshape(len(layers), *shape)


def _pack(voxels: np.ndarray, numbers: np.ndarray, shape: tuple[int, ...], largest: int) -> np.ndarray:
    """Layers [n, k, j, i] from (voxel, segment number) pairs: each segment goes, whole, to the first layer
    where it overlaps nothing (first fit in segment-number order, as :func:`pack_layers` does)."""
    dtype = np.uint8 if largest <= 255 else np.uint16
    size = int(np.prod(shape))
    layers = [np.zeros(size, dtype=dtype)]
    order = np.argsort(numbers, kind="stable")
    sorted_numbers = numbers[order]
    starts = np.flatnonzero(np.diff(sorted_numbers, prepend=-1))
    ends = np.append(starts[1:], len(order))
    for start, end in zip(starts, ends, strict=True):
        number = int(sorted_numbers[start])
        members = voxels[order[start:end]]
        for layer in layers:
            if not layer[members].any():
                break
        else:
            layer = np.zeros(size, dtype=dtype)
            layers.append(layer)
        layer[members] = number
    return _stack(layers).reshape(len(layers), *shape)


def _stack(layers: list[np.ndarray]) -> np.ndarray:
    # One layer is the common case: no copy of a volume-sized array for it.
    return layers[0][None] if len(layers) == 1 else np.stack(layers)
