"""Frames and rendered images from stored files.

A viewer fetches every frame of a series in parallel, so the common case must not parse data sets: the pixel
data element is found by walking element headers from the start of the file (a few hundred bytes of reads,
skipping values), and its position is cached per stored file (files are content-addressed, so never change).
Native little-endian frames are then byte ranges of the file. Encapsulated frames are the fragments between
item headers, found the same way. Everything else (decoding compressed frames, big endian, deflated data sets,
rendering) goes through pydicom and its pixel data plugins.
"""

from __future__ import annotations

import io
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pydicom
from django.core.files.storage import default_storage
from PIL import Image, ImageOps
from pydicom.encaps import get_frame
from pydicom.pixels import iter_pixels
from pydicom.pixels.processing import apply_color_lut
from pydicom.uid import UID

from ..dicom_structure import ITEM, SEQUENCE_END, UNDEFINED, StructureError, element_header, skip_sequence
from .dicomjson import first_value

EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_FRAMES = "1.2.840.10008.1.2.8.1"  # Deflated Image Frame Compression
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
NATIVE_LE = {"1.2.840.10008.1.2", EXPLICIT_LE}
PIXEL_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
LAST_PIXEL_TAG = 0x7FE00010
# Media types of compressed frames (PS3.18 Table 8.7.3-5).
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


class PixelDataError(Exception):
    """The stored file has no usable pixel data for the request; the message says why."""


@dataclass(frozen=True)
class StoredImage:
    """What the index knows about a stored image, enough to cut frames out of its file."""

    name: str  # in the default storage
    transfer_syntax: str
    frames: int
    rows: int
    columns: int
    samples: int
    bits_allocated: int
    photometric: str

    @property
    def encapsulated(self) -> bool:
        syntax = UID(self.transfer_syntax)
        # Syntaxes newer than pydicom are compressed pixel data in explicit VR little endian.
        return syntax.is_encapsulated if syntax.is_transfer_syntax else True

    @property
    def frame_bits(self) -> int:
        # Native YBR_FULL_422 shares the two chroma samples between two pixels (PS3.3 C.7.6.3.1.2).
        samples = 2 if self.samples == 3 and self.photometric == "YBR_FULL_422" else self.samples
        return self.rows * self.columns * samples * self.bits_allocated


@dataclass(frozen=True)
class Frame:
    data: bytes
    transfer_syntax: str  # of ``data``: explicit VR little endian for native pixels


@dataclass(frozen=True)
class _Location:
    tag: int
    offset: int  # of the value in the file
    length: int  # UNDEFINED for encapsulated pixel data
    # For encapsulated pixel data: (offset, length) of the fragments of each frame, when they can be told
    # apart from item headers alone; None when only a JPEG marker scan (pydicom) can split them.
    frames: tuple[tuple[tuple[int, int], ...], ...] | None = None


class _Cache:
    """A small thread-safe LRU of pixel data locations by storage name."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[str, _Location] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> _Location | None:
        with self.lock:
            value = self.items.get(key)
            if value is not None:
                self.items.move_to_end(key)
            return value

    def put(self, key: str, value: _Location) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


_locations = _Cache(size=20000)


# --- walking element headers -------------------------------------------------------------------------------


class _Reader:
    """Reads a file through a window, so that walking headers costs a few reads however large the values."""

    CHUNK = 64 * 1024

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.base = 0
        self.buffer = b""

    def read(self, pos: int, size: int) -> bytes:
        start = pos - self.base
        if start < 0 or start + size > len(self.buffer):
            self.file.seek(pos)
            self.buffer, self.base, start = self.file.read(max(size, self.CHUNK)), pos, 0
            if len(self.buffer) < size:
                raise PixelDataError("the stored file ends inside an element header")
        return self.buffer[start : start + size]

    def unpack(self, fmt: str, pos: int) -> tuple[Any, ...]:
        return struct.unpack(fmt, self.read(pos, struct.calcsize(fmt)))


def _locate(file: IO[bytes], transfer_syntax: str) -> _Location:
    """Position of the top-level pixel data element of a Part 10 file."""
    reader = _Reader(file)
    if reader.read(128, 4) != b"DICM":
        raise PixelDataError("the stored file has no DICM preamble")
    pos = 132
    syntax = UID(transfer_syntax)
    explicit = not (syntax.is_transfer_syntax and syntax.is_implicit_VR)
    order = ">" if syntax.is_transfer_syntax and not syntax.is_little_endian else "<"
    try:
        while True:
            try:
                group = reader.unpack("<H", pos)[0]
            except PixelDataError:
                raise PixelDataError("the stored file has no pixel data") from None
            in_meta = group == 0x0002  # file meta information is always explicit VR little endian
            tag, vr, length, size = element_header(
                reader.read, pos, True if in_meta else explicit, "<" if in_meta else order, lenient_vr=True
            )
            if tag in PIXEL_TAGS:
                location = _Location(tag, pos + size, length)
                return _with_fragments(reader, location) if length == UNDEFINED else location
            if tag > LAST_PIXEL_TAG and not in_meta:
                raise PixelDataError("the stored file has no pixel data")
            pos += size
            if length == UNDEFINED:
                is_un = vr == b"UN"
                pos = skip_sequence(
                    reader.read, pos, explicit and not is_un, "<" if is_un else order, lenient_vr=True
                )
            else:
                pos += length
    except StructureError as exc:
        raise PixelDataError(f"damaged stored file: {exc}") from exc


def _with_fragments(reader: _Reader, location: _Location) -> _Location:
    """Add the fragments of each frame of encapsulated pixel data, from the item headers."""
    pos = location.offset
    tag, _, length, _ = element_header(reader.read, pos, False, "<")
    if tag != ITEM:
        raise PixelDataError("encapsulated pixel data does not start with an offset table item")
    offsets = list(struct.unpack(f"<{length // 4}I", reader.read(pos + 8, length))) if length else []
    pos += 8 + length
    first_item = pos
    fragments = []  # (start of the item relative to the first fragment, value offset, length)
    while True:
        tag, _, length, _ = element_header(reader.read, pos, False, "<")
        if tag == SEQUENCE_END:
            break
        if tag != ITEM or length == UNDEFINED:
            raise PixelDataError("damaged encapsulated pixel data")
        fragments.append((pos - first_item, pos + 8, length))
        pos += 8 + length
    return _Location(location.tag, location.offset, location.length, _group_fragments(offsets, fragments))


def _group_fragments(
    offsets: list[int], fragments: list[tuple[int, int, int]]
) -> tuple[tuple[tuple[int, int], ...], ...] | None:
    # Without a usable Basic Offset Table, one fragment per frame is the only split items reveal; the frame
    # count decides later whether it applies.
    if not offsets or offsets[0] != 0 or offsets != sorted(offsets):
        return tuple(((offset, length),) for _, offset, length in fragments)
    frames: list[list[tuple[int, int]]] = []
    starts = set(offsets)
    for start, offset, length in fragments:
        if start in starts or not frames:
            frames.append([])
        frames[-1].append((offset, length))
    return tuple(tuple(frame) for frame in frames) if len(frames) == len(offsets) else None


def _location(image: StoredImage, file: IO[bytes]) -> _Location:
    location = _locations.get(image.name)
    if location is None:
        location = _locate(file, image.transfer_syntax)
        _locations.put(image.name, location)
    return location


# --- frames ------------------------------------------------------------------------------------------------


def read_frames(image: StoredImage, indices: list[int], keep_compressed: bool) -> list[Frame]:
    """Frames (0-based ``indices``): the stored compressed bytes when ``keep_compressed`` and the pixel data
    is encapsulated, otherwise native little-endian pixels."""
    with default_storage.open(image.name, "rb") as file:
        if image.encapsulated and keep_compressed:
            return [Frame(data, image.transfer_syntax) for data in _compressed(image, file, indices)]
        if (decode := _own_decoder(image)) is not None:
            return [Frame(decode(data), EXPLICIT_LE) for data in _compressed(image, file, indices)]
        if image.transfer_syntax in NATIVE_LE and image.bits_allocated in (1, 8, 16, 32, 64):
            location = _location(image, file)
            return [Frame(_native(image, file, location, i), EXPLICIT_LE) for i in indices]
        return [Frame(_array_bytes(array, image), EXPLICIT_LE) for array in decoded(image, file, indices)]


def read_pixel_value(image: StoredImage) -> bytes:
    """The whole native little-endian pixel data value (bulk data of a native instance)."""
    with default_storage.open(image.name, "rb") as file:
        location = _location(image, file)
        file.seek(location.offset)
        return file.read(location.length)


def _native(image: StoredImage, file: IO[bytes], location: _Location, index: int) -> bytes:
    bits = image.frame_bits
    start_bit = index * bits
    start, shift = divmod(start_bit, 8)
    size = (shift + bits + 7) // 8
    if start + size > location.length:
        raise PixelDataError(f"the pixel data is too short for frame {index + 1}")
    file.seek(location.offset + start)
    data = file.read(size)
    if shift:  # a bit-packed frame that starts inside a byte: realign it to bit 0 of its first byte
        unpacked = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[shift : shift + bits]
        data = np.packbits(unpacked, bitorder="little").tobytes()
    return data


def _own_decoder(image: StoredImage) -> Callable[[bytes], bytes] | None:
    """Decoders for what pydicom cannot decode: frames in Deflated Image Frame Compression (newer than
    pydicom) and bit-packed RLE (a DICOM SEG)."""
    if image.transfer_syntax == DEFLATED_FRAMES:
        return _inflate
    if image.transfer_syntax == RLE_LOSSLESS and image.bits_allocated == 1 and image.samples == 1:
        return lambda data: _rle_bits(data, (image.frame_bits + 7) // 8)
    return None


def _rle_bits(data: bytes, size: int) -> bytes:
    """A bit-packed RLE frame: one segment holding the packed bytes, PackBits-encoded (PS3.5 G.3.1)."""
    if len(data) < 64 or struct.unpack_from("<I", data)[0] != 1:
        raise PixelDataError("an RLE frame of 1-bit pixels must have exactly one segment")
    (start,) = struct.unpack_from("<I", data, 4)
    out = bytearray()
    pos = start
    while pos < len(data) and len(out) < size:
        header = data[pos]
        if header < 128:  # a literal run of header + 1 bytes
            out += data[pos + 1 : pos + header + 2]
            pos += header + 2
        elif header > 128:  # one byte repeated 257 - header times
            out += data[pos + 1 : pos + 2] * (257 - header)
            pos += 2
        else:
            pos += 1
    if len(out) < size:
        raise PixelDataError("a bit-packed RLE frame decodes to fewer bytes than the frame holds")
    return bytes(out[:size])


def _inflate(data: bytes) -> bytes:
    try:
        return zlib.decompress(data, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise PixelDataError(f"damaged deflated frame: {exc}") from exc


def _compressed(image: StoredImage, file: IO[bytes], indices: list[int]) -> list[bytes]:
    location = _location(image, file)
    if location.frames is not None and image.frames == 1:
        spans = [tuple(f for frame in location.frames for f in frame)]
    elif location.frames is not None and len(location.frames) == image.frames:
        spans = list(location.frames)
    else:  # fragments split by JPEG markers or an extended offset table: let pydicom find the frames
        ds = pydicom.dcmread(file)
        extended = None
        if "ExtendedOffsetTable" in ds:
            extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        return [
            get_frame(ds.PixelData, i, number_of_frames=image.frames, extended_offsets=extended)
            for i in indices
        ]
    result = []
    for index in indices:
        parts = []
        for offset, length in spans[index]:
            file.seek(offset)
            parts.append(file.read(length))
        result.append(b"".join(parts))
    return result


def decoded(image: StoredImage, file: IO[bytes], indices: list[int]) -> list[np.ndarray]:
    """Decoded frames as pydicom returns them (YCbCr converted to RGB, bit-packed data unpacked)."""
    if (decode := _own_decoder(image)) is not None:
        return [_unsigned_array(decode(data), image) for data in _compressed(image, file, indices)]
    syntax = UID(image.transfer_syntax)
    # pydicom reads a deflated data set only as a whole; other files frame by frame.
    source: Any = pydicom.dcmread(file) if syntax.is_transfer_syntax and syntax.is_deflated else file
    try:
        return list(iter_pixels(source, indices=indices))
    except Exception as exc:  # pydicom and its plugins raise many types for what they cannot decode
        raise PixelDataError(f"cannot decode {syntax.name} pixel data: {exc}") from exc


def _unsigned_array(data: bytes, image: StoredImage) -> np.ndarray:
    shape = (image.rows, image.columns, image.samples) if image.samples > 1 else (image.rows, image.columns)
    count = int(np.prod(shape))
    if image.bits_allocated == 1:
        return np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[:count].reshape(shape)
    dtype = np.dtype(f"<u{image.bits_allocated // 8}")
    return np.frombuffer(data, dtype, count=count).reshape(shape)


def _array_bytes(array: np.ndarray, image: StoredImage) -> bytes:
    if image.bits_allocated == 1:
        return np.packbits(array.astype(bool).ravel(), bitorder="little").tobytes()
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


# --- rendering ---------------------------------------------------------------------------------------------


def _frame_number(metadata: dict[str, Any], index: int, sequence: str, tag: str) -> float | None:
    """A value for one frame: per-frame functional groups, then shared ones, then the top level."""
    for groups, item in (("52009230", index), ("52009229", 0)):
        try:
            value = metadata[groups]["Value"][item][sequence]["Value"][0][tag]["Value"][0]
            return float(value)
        except (KeyError, IndexError, TypeError, ValueError):
            pass
    value = first_value(metadata, tag)
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def render(
    image: StoredImage,
    metadata: dict[str, Any],
    index: int,
    media_type: str,
    window: tuple[float, float] | None = None,
    viewport: tuple[int, int] | None = None,
    quality: int = 90,
) -> bytes:
    """A frame as PNG or JPEG: rescaled, windowed (the given window, the stored one, or the value range)."""
    with default_storage.open(image.name, "rb") as file:
        array = decoded(image, file, [index])[0]
        if image.photometric == "PALETTE COLOR":
            file.seek(0)
            array = apply_color_lut(array, pydicom.dcmread(file, stop_before_pixels=True))
    if array.ndim == 3:  # colour: RGB already, scaled to 8 bits
        bits = array.dtype.itemsize * 8
        pixels = (array >> (bits - 8) if bits > 8 else array).astype(np.uint8)
    else:
        pixels = _windowed(array, metadata, index, window)
        if image.photometric == "MONOCHROME1":
            pixels = 255 - pixels
    picture = Image.fromarray(pixels)
    if viewport:
        picture = ImageOps.contain(picture, viewport)
    out = io.BytesIO()
    if media_type == "image/jpeg":
        picture.convert("RGB" if picture.mode == "RGB" else "L").save(out, "JPEG", quality=quality)
    else:
        picture.save(out, "PNG")
    return out.getvalue()


def _windowed(
    array: np.ndarray, metadata: dict[str, Any], index: int, window: tuple[float, float] | None
) -> np.ndarray:
    slope = _frame_number(metadata, index, "00289145", "00281053") or 1.0
    intercept = _frame_number(metadata, index, "00289145", "00281052") or 0.0
    values = array.astype(np.float64) * slope + intercept
    if window is None:
        center = _frame_number(metadata, index, "00289132", "00281050")
        width = _frame_number(metadata, index, "00289132", "00281051")
        if center is not None and width is not None and width > 0:
            window = (center, width)
    if window is None:
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        window = ((low + high + 1) / 2, max(high - low + 1, 1.0))
    center, width = window[0], max(window[1], 1.0)
    # The linear VOI function of PS3.3 C.11.2.1.2.1.
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    scaled = ((values - (center - 0.5)) / max(width - 1, 1e-9) + 0.5) * 255
    return np.where(values <= low, 0, np.where(values > high, 255, np.clip(scaled, 0, 255))).astype(np.uint8)
