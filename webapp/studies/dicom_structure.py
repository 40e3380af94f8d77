"""Walks over the element structure of DICOM files, without decoding values.

One walker serves two uses: the import's strict check (pydicom reads a file that ends in the middle of an
element without complaint, so a file cut short in its header would be stored as if complete; every element,
item and sequence must end where its length says, and the data set exactly at the end of the file),
and finding the pixel data of a stored file without reading the values before it (DICOMweb frames).
"""

import struct
from collections.abc import Callable

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
# Explicit VRs whose length field is 4 bytes (after 2 reserved bytes).
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


class StructureError(ValueError):
    pass


Read = Callable[[int, int], bytes]
"""``read(pos, size)``: the bytes at ``pos``; raises when the file ends first."""


def bytes_reader(data: bytes) -> Read:
    view = memoryview(data)

    def read(pos: int, size: int) -> bytes:
        if pos + size > len(view):
            raise StructureError(f"element header cut short at byte {pos}")
        return bytes(view[pos : pos + size])

    return read


def element_header(
    read: Read, pos: int, explicit: bool, order: str, lenient_vr: bool = False
) -> tuple[int, bytes, int, int]:
    """Tag, VR (b"" when implicit), value length and header size of the element at ``pos``.

    ``lenient_vr`` reads an element whose VR is not two capital letters as implicit VR, as a few old writers
    put implicit VR elements where explicit ones belong.
    """
    group, elem = struct.unpack(order + "HH", read(pos, 4))
    tag = (group << 16) | elem
    vr = read(pos + 4, 2) if explicit and group != 0xFFFE else b""
    if lenient_vr and vr and not (vr.isalpha() and vr.isupper()):
        vr = b""
    if not vr:
        return tag, vr, struct.unpack(order + "I", read(pos + 4, 4))[0], 8
    if vr in LONG_VRS:
        return tag, vr, struct.unpack(order + "I", read(pos + 8, 4))[0], 12
    return tag, vr, struct.unpack(order + "H", read(pos + 6, 2))[0], 8


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def skip_elements(
    read: Read,
    pos: int,
    explicit: bool,
    order: str,
    end: int | None = None,
    until_item_end: bool = False,
    lenient_vr: bool = False,
) -> int:
    """Walk elements from ``pos`` to ``end`` or, in an undefined-length item, to its delimiter.

    With ``end`` given, every value must fit before it; without, the walk goes on until ``read`` fails.
    """
    while end is None or pos < end:
        tag, vr, length, size = element_header(read, pos, explicit, order, lenient_vr)
        if tag == ITEM_END and until_item_end:
            return pos + size
        pos += size
        if length == UNDEFINED:
            # An undefined-length UN holds implicit VR little endian (PS3.5 6.2.2).
            is_un = vr == b"UN"
            pos = skip_sequence(read, pos, explicit and not is_un, "<" if is_un else order, end, lenient_vr)
        else:
            if end is not None and pos + length > end:
                raise StructureError(
                    f"element {_tag_text(tag)} needs {length} bytes, only {end - pos} remain"
                )
            pos += length
    if until_item_end:
        raise StructureError("item without its delimiter: the file ends inside a sequence")
    return pos


def skip_sequence(
    read: Read, pos: int, explicit: bool, order: str, end: int | None = None, lenient_vr: bool = False
) -> int:
    """Items of an undefined-length sequence (or encapsulated pixel data) up to the sequence delimiter."""
    while True:
        tag, _, length, size = element_header(read, pos, False, order)
        pos += size
        if tag == SEQUENCE_END:
            return pos
        if tag != ITEM:
            raise StructureError(f"unexpected tag {_tag_text(tag)} inside a sequence")
        if length == UNDEFINED:
            pos = skip_elements(read, pos, explicit, order, end, until_item_end=True, lenient_vr=lenient_vr)
        else:
            if end is not None and pos + length > end:
                raise StructureError(f"sequence item needs {length} bytes, only {end - pos} remain")
            pos += length


def file_meta_end(data: bytes) -> int:
    """Offset of the data set: the end of the group 0002 elements after the preamble.

    The group length element is not trusted (some writers omit it or get it wrong): the elements are walked.
    File meta information is explicit VR little endian; a few old writers used implicit VR.
    """
    read = bytes_reader(data)
    pos, end = 132, len(data)
    while pos + 8 <= end:
        if struct.unpack("<H", read(pos, 2))[0] != 0x0002:
            return pos
        tag, _, length, size = element_header(read, pos, True, "<", lenient_vr=True)
        pos += size
        if length == UNDEFINED or pos + length > end:
            raise StructureError(f"file meta element {_tag_text(tag)} is cut short")
        pos += length
    if pos == end:
        return pos
    raise StructureError(f"file meta information cut short at byte {pos}")


def check_dataset_structure(data: bytes, offset: int, implicit_vr: bool, little_endian: bool) -> None:
    """Raise :class:`StructureError` unless ``data[offset:]`` is one complete data set."""
    end = skip_elements(
        bytes_reader(data), offset, not implicit_vr, "<" if little_endian else ">", end=len(data)
    )
    if end != len(data):
        raise StructureError(f"data set ends at byte {end} of {len(data)}")
