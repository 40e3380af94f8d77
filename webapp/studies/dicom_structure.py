"""A strict walk over the element structure of a DICOM data set.

pydicom reads a file that ends in the middle of an element without complaint, so a file cut short in its
header would be stored as if complete. This walk checks that every element, item and sequence ends where its
length says, and that the data set ends exactly at the end of the file.
"""

import struct

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
# Explicit VRs whose length field is 4 bytes (after 2 reserved bytes).
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


class StructureError(ValueError):
    pass


def file_meta_end(data: bytes) -> int:
    """Offset of the data set: the end of the group 0002 elements after the preamble.

    The group length element is not trusted (some writers omit it or get it wrong): the elements are walked.
    File meta information is explicit VR little endian; a few old writers used implicit VR, which shows as a
    VR that is not two capital letters.
    """
    buf = memoryview(data)
    pos, end = 132, len(data)
    while pos + 8 <= end:
        group, elem = struct.unpack_from("<HH", buf, pos)
        if group != 0x0002:
            return pos
        vr = bytes(buf[pos + 4 : pos + 6])
        if not (vr.isalpha() and vr.isupper()):
            (length,) = struct.unpack_from("<I", buf, pos + 4)
            pos += 8
        elif vr in LONG_VRS:
            if pos + 12 > end:
                break
            (length,) = struct.unpack_from("<I", buf, pos + 8)
            pos += 12
        else:
            (length,) = struct.unpack_from("<H", buf, pos + 6)
            pos += 8
        if length == UNDEFINED or pos + length > end:
            raise StructureError(f"file meta element (0002,{elem:04X}) is cut short")
        pos += length
    if pos == end:
        return pos
    raise StructureError(f"file meta information cut short at byte {pos}")


def check_dataset_structure(data: bytes, offset: int, implicit_vr: bool, little_endian: bool) -> None:
    """Raise :class:`StructureError` unless ``data[offset:]`` is one complete data set."""
    end = _walk(memoryview(data), offset, len(data), implicit_vr, "<" if little_endian else ">", nested=False)
    if end != len(data):
        raise StructureError(f"data set ends at byte {end} of {len(data)}")


def _walk(buf: memoryview, pos: int, end: int, implicit: bool, order: str, nested: bool) -> int:
    """Walk elements from ``pos`` until ``end``; in an undefined-length item, until its delimiter."""
    while pos < end:
        if pos + 8 > end:
            raise StructureError(f"element header cut short at byte {pos}")
        group, elem = struct.unpack_from(order + "HH", buf, pos)
        tag = (group << 16) | elem
        if tag == ITEM_END and nested:
            return pos + 8
        if implicit or group == 0xFFFE:
            (length,) = struct.unpack_from(order + "I", buf, pos + 4)
            vr = b""
            pos += 8
        else:
            vr = bytes(buf[pos + 4 : pos + 6])
            if vr in LONG_VRS:
                if pos + 12 > end:
                    raise StructureError(f"element header cut short at byte {pos}")
                (length,) = struct.unpack_from(order + "I", buf, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from(order + "H", buf, pos + 6)
                pos += 8
        if length == UNDEFINED:
            pos = _walk_sequence(buf, pos, end, implicit, order, explicit_little=(vr == b"UN"))
        else:
            if pos + length > end:
                raise StructureError(
                    f"element ({group:04X},{elem:04X}) needs {length} bytes, only {end - pos} remain"
                )
            pos += length
    if nested:
        raise StructureError("item without its delimiter: the file ends inside a sequence")
    return pos


def _walk_sequence(
    buf: memoryview, pos: int, end: int, implicit: bool, order: str, explicit_little: bool
) -> int:
    """Items of an undefined-length sequence (or encapsulated pixel data) up to the sequence delimiter."""
    if explicit_little:  # an undefined-length UN is implicit VR little endian inside (PS3.5 6.2.2)
        implicit, order = True, "<"
    while True:
        if pos + 8 > end:
            raise StructureError("sequence without its delimiter: the file ends inside it")
        group, elem, length = struct.unpack_from(order + "HHI", buf, pos)
        tag = (group << 16) | elem
        pos += 8
        if tag == SEQUENCE_END:
            return pos
        if tag != ITEM:
            raise StructureError(f"unexpected tag ({group:04X},{elem:04X}) inside a sequence")
        if length == UNDEFINED:
            pos = _walk(buf, pos, end, implicit, order, nested=True)
        else:
            if pos + length > end:
                raise StructureError(f"sequence item needs {length} bytes, only {end - pos} remain")
            pos += length
