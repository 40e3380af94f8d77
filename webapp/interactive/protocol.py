"""The interactive protocol (docs/protocol.md): message schemas and the binary mask frame.

Client messages are JSON objects checked against ``CLIENT_SCHEMA`` (one JSON Schema per ``type``); a mask goes
either way as a binary frame:

    offset  size  field
    0       4     magic b"AVXM"
    4       1     version (1)
    5       1     flags: bit 0 REPLACE (every voxel outside the region is 0, not "unchanged")
    6       2     reserved, 0
    8       4     request id (uint32; 0 when the server sends a mask nobody asked for: open, recovery)
    12      12    start k, j, i (uint32 each)
    24      12    stop k, j, i (uint32 each; half-open, start == stop for "nothing changed")
    36      ...   zlib(numpy.packbits(region mask, C order, big-endian bit order))

All integers are little-endian. The region is in voxel indices [k, j, i] of the series' grid (DESIGN.md).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from jsonschema import Draft202012Validator

PROTOCOL_VERSION = 1
MAGIC = b"AVXM"
FLAG_REPLACE = 1
_HEADER = struct.Struct("<4sBBHI3I3I")
HEADER_BYTES = _HEADER.size  # 36

# Limits of what one message may hold; larger ones get an error and change nothing.
MAX_TEXT_BYTES = 256 * 1024
MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_OUTLINE_POINTS = 4096


class ProtocolError(ValueError):
    """A message that breaks the protocol; ``code`` is the error code the client gets."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_index = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 3, "maxItems": 3}
_request = {"type": "integer", "minimum": 1, "maximum": 2**32 - 1}
_axis = {"type": "integer", "enum": [0, 1, 2]}
_outline = {"type": "array", "items": _index, "minItems": 1, "maxItems": MAX_OUTLINE_POINTS}


def _message(kind: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"type": {"const": kind}, **properties},
        "required": ["type", *required],
        "additionalProperties": False,
    }


_common = {"request": _request}
_slice: dict[str, Any] = {"axis": _axis, "slice": {"type": "integer", "minimum": 0}, "points": _outline}
_PROMPT_FIELDS: list[tuple[str, dict[str, Any]]] = [
    ("point", {"index": _index}),
    ("box", {"start": _index, "stop": _index}),
    ("scribble", _slice),
    ("lasso", _slice),
]
MESSAGE_SCHEMAS: dict[str, dict[str, Any]] = {
    "open": _message(
        "open",
        {
            "series": {"type": "string", "minLength": 1, "maxLength": 64},
            "segmentation": {"type": "integer", "minimum": 1},
            "segment": {"type": "integer", "minimum": 1},
            "model": {"type": "string", "minLength": 1, "maxLength": 200},
        },
        ["series", "segmentation", "segment"],
    ),
    **{
        f"prompt.{kind}": _message(
            "prompt",
            {"request": _request, "kind": {"const": kind}, "positive": {"type": "boolean"}, **fields},
            ["request", "kind", "positive", *fields],
        )
        for kind, fields in _PROMPT_FIELDS
    },
    "undo": _message("undo", _common, ["request"]),
    "reset": _message("reset", _common, ["request"]),
    "close": _message("close", {}, []),
}
CLIENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": f"Annovox interactive protocol v{PROTOCOL_VERSION}: client messages",
    "oneOf": list(MESSAGE_SCHEMAS.values()),
}
_validators = {kind: Draft202012Validator(schema) for kind, schema in MESSAGE_SCHEMAS.items()}
_TYPES = {kind.split(".")[0] for kind in MESSAGE_SCHEMAS}


def parse_message(text: str) -> dict[str, Any]:
    """A client's JSON message, checked against its schema; raises ProtocolError otherwise."""
    if len(text) > MAX_TEXT_BYTES:
        raise ProtocolError("too_large", f"a text message may hold at most {MAX_TEXT_BYTES} bytes")
    try:
        message = json.loads(text)
    except json.JSONDecodeError as error:
        raise ProtocolError("bad_json", f"not valid JSON: {error.msg} at character {error.pos}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("bad_message", 'a message is a JSON object with a string "type"')
    kind = message["type"]
    if kind not in _TYPES:
        known = ", ".join(sorted(_TYPES))
        raise ProtocolError("unknown_type", f"unknown message type {kind!r} (known: {known})")
    if kind == "prompt":
        prompt_kind = message.get("kind")
        kind = f"prompt.{prompt_kind}" if isinstance(prompt_kind, str) else "prompt"
        if kind not in _validators:
            raise ProtocolError("bad_message", 'prompt: "kind" is one of point, box, scribble, lasso')
    validator = _validators[kind]
    failure = next(iter(sorted(validator.iter_errors(message), key=lambda e: e.path)), None)
    if failure is not None:
        where = "/".join(str(p) for p in failure.absolute_path) or "message"
        raise ProtocolError("bad_message", f"{message['type']}: {where}: {_short(failure.message)}")
    return message


def request_of(text: str | None, data: bytes | None) -> int:
    """The request id a message carries, read without validating the message: errors about a message
    that is refused (malformed, oversized, rate-limited) still name its request when it has one."""
    if data is not None:
        if len(data) >= 12 and data[:4] == MAGIC:
            return int(struct.unpack_from("<I", data, 8)[0])
        return 0
    if text is None or len(text) > MAX_TEXT_BYTES:
        return 0
    try:
        request = json.loads(text).get("request", 0)
    except (ValueError, AttributeError):
        return 0
    valid = isinstance(request, int) and not isinstance(request, bool) and 0 < request < 2**32
    return request if valid else 0


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class MaskFrame:
    """A mask region as it travels: [start, stop) and the values inside (bool, shape stop - start)."""

    request: int
    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    mask: np.ndarray
    replace: bool = False


def encode_frame(frame: MaskFrame) -> bytes:
    shape = tuple(b - a for a, b in zip(frame.start, frame.stop, strict=True))
    if tuple(frame.mask.shape) != shape:
        raise ValueError(f"mask of shape {frame.mask.shape} for a region of shape {shape}")
    header = _HEADER.pack(
        MAGIC,
        PROTOCOL_VERSION,
        FLAG_REPLACE if frame.replace else 0,
        0,
        frame.request,
        *frame.start,
        *frame.stop,
    )
    bits = np.packbits(np.ascontiguousarray(frame.mask, dtype=bool), axis=None)
    return header + zlib.compress(bits.tobytes(), 1)


def decode_frame(data: bytes, volume_shape: tuple[int, int, int] | None = None) -> MaskFrame:
    """A frame back into a mask region; raises ProtocolError for anything malformed or outside the volume."""
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError("too_large", f"a binary frame may hold at most {MAX_FRAME_BYTES} bytes")
    if len(data) < HEADER_BYTES:
        raise ProtocolError("bad_frame", f"a mask frame has a {HEADER_BYTES}-byte header")
    magic, version, flags, _, request, *corners = _HEADER.unpack_from(data)
    if magic != MAGIC or version != PROTOCOL_VERSION:
        raise ProtocolError("bad_frame", f"not a version {PROTOCOL_VERSION} mask frame (magic {magic!r})")
    start, stop = tuple(corners[:3]), tuple(corners[3:])
    if any(b < a for a, b in zip(start, stop, strict=True)):
        raise ProtocolError("bad_frame", f"the region {list(start)}..{list(stop)} is reversed")
    if volume_shape is not None and any(b > s for b, s in zip(stop, volume_shape, strict=True)):
        raise ProtocolError(
            "out_of_bounds", f"the region ends at {list(stop)}, outside the volume {list(volume_shape)}"
        )
    shape = tuple(b - a for a, b in zip(start, stop, strict=True))
    count = int(np.prod(shape))
    expected = (count + 7) // 8
    try:
        # Bounded: a frame cannot claim more bits than its region holds (zip bombs).
        inflater = zlib.decompressobj()
        bits = inflater.decompress(data[HEADER_BYTES:], expected + 1)
    except zlib.error as error:
        raise ProtocolError("bad_frame", f"the mask is not zlib data: {error}") from None
    if len(bits) != expected or inflater.unconsumed_tail or not inflater.eof:
        raise ProtocolError("bad_frame", f"the mask holds {len(bits)} bytes, the region needs {expected}")
    values = np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=count).astype(bool).reshape(shape)
    return MaskFrame(
        request,
        (start[0], start[1], start[2]),
        (stop[0], stop[1], stop[2]),
        values,
        bool(flags & FLAG_REPLACE),
    )


def with_request(frame: bytes, request: int) -> bytes:
    """The same frame answering another request id."""
    return frame[:8] + struct.pack("<I", request) + frame[12:]
