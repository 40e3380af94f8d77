"""WADO-RS: instances, metadata, frames, bulk data and rendered images (PS3.18 10.4).

Everything here is synchronous (database and file work); the views run it in the request's worker thread.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pydicom
from django.core.files.storage import default_storage
from django.db.models import TextField
from django.db.models.functions import Cast
from django.http import QueryDict

from ..models import Instance
from .dicomjson import BULK_URI, JsonMember, absolute_bulk_uris, first_value
from .http import DicomWebError, MediaRange, bad_request, not_acceptable, not_found, parse_accept
from .pixels import (
    EXPLICIT_LE,
    FRAME_MEDIA_TYPES,
    NATIVE_LE,
    PIXEL_TAGS,
    PixelDataError,
    StoredImage,
    read_frames,
    read_pixel_value,
    render,
)
from .prepared import PreparedQuery

OCTET_STREAM = "application/octet-stream"
METADATA_BATCH = 500
# Small pixel data is inline in the stored metadata; WADO-RS metadata always refers to it as bulk data.
INLINE_PIXELS = re.compile(r'"7FE000(?:10|08|09)":\s*\{"vr":\s*"\w\w",\s*"InlineBinary"')
PIXEL_KEYS = ("7FE00010", "7FE00008", "7FE00009")


@dataclass(frozen=True)
class StoredFile:
    name: str
    transfer_syntax: str


def _instances(study: str, series: str | None = None, sop: str | None = None) -> Any:
    queryset = Instance.objects.filter(series__study__study_instance_uid=study)
    if series is not None:
        queryset = queryset.filter(series__series_instance_uid=series)
    if sop is not None:
        queryset = queryset.filter(sop_instance_uid=sop)
    return queryset.order_by("series__series_number", "series_id", "instance_number", "pk")


def _missing(study: str, series: str | None = None, sop: str | None = None) -> DicomWebError:
    if sop is not None:
        return not_found(f"instance {sop} of series {series} in study {study} is not stored here")
    if series is not None:
        return not_found(f"series {series} of study {study} is not stored here")
    return not_found(f"study {study} is not stored here")


# --- instances ---------------------------------------------------------------------------------------------


def stored_files(study: str, series: str | None = None, sop: str | None = None) -> list[StoredFile]:
    rows = list(_instances(study, series, sop).values_list("file", "transfer_syntax_uid"))
    if not rows:
        raise _missing(study, series, sop)
    return [StoredFile(name, syntax) for name, syntax in rows]


def check_retrieve_accept(header: str | None, files: list[StoredFile]) -> None:
    """Stored files are sent as they are; a client that names a transfer syntax must accept theirs."""
    for accepted in parse_accept(header):
        if accepted.media_type not in ("*/*", "application/dicom") and accepted.part_type not in (
            "application/dicom",
            "*/*",
        ):
            continue
        syntax = accepted.transfer_syntax
        if syntax in (None, "*") or all(f.transfer_syntax == syntax for f in files):
            return
    syntaxes = ", ".join(sorted({f.transfer_syntax for f in files}))
    raise not_acceptable(
        'instances are sent as stored (no transcoding): accept multipart/related; type="application/dicom" '
        f"with transfer-syntax=* or the stored syntax ({syntaxes})"
    )


# --- metadata ----------------------------------------------------------------------------------------------


def metadata_pks(study: str, series: str | None = None, sop: str | None = None) -> list[list[int]]:
    """The instances of a metadata request, in batches for :func:`metadata_json`."""
    pks = list(_instances(study, series, sop).values_list("pk", flat=True))
    if not pks:
        raise _missing(study, series, sop)
    return [pks[i : i + METADATA_BATCH] for i in range(0, len(pks), METADATA_BATCH)]


def metadata_json(pks: list[int], base_url: str) -> bytes:
    """The stored DICOM JSON of these instances, comma-separated, with absolute BulkDataURIs.

    The JSON text is edited rather than parsed and serialised again: this is the series metadata request every
    viewer makes first, and the stored JSON only needs its relative bulk data references completed.
    """
    rows = Instance.objects.filter(pk__in=pks).values_list(
        "pk",
        "series__study__study_instance_uid",
        "series__series_instance_uid",
        "sop_instance_uid",
        Cast("metadata", TextField()),
    )
    texts = {}
    for pk, study, series, sop, text in rows:
        url = f"{base_url}/studies/{study}/series/{series}/instances/{sop}"
        if _inline_pixels(text):
            texts[pk] = json.dumps(_pixels_as_bulk(json.loads(text), url), separators=(",", ":"))
            continue
        texts[pk] = absolute_uris_in_text(text, url)
    return ",".join(texts[pk] for pk in pks).encode()


def absolute_uris_in_text(text: str, instance_url: str) -> str:
    """Stored DICOM JSON text with its relative BulkDataURIs made absolute."""
    replacement = f'"BulkDataURI": "{instance_url}/bulkdata/'
    # Both SQLite (Django's json.dumps) and PostgreSQL (jsonb) write this spacing; the regex is the slower
    # fallback for any other.
    text = text.replace('"BulkDataURI": "bulkdata/', replacement)
    if '"bulkdata/' in text:
        text = BULK_URI.sub(replacement.replace("\\", "\\\\"), text)
    return text


def _inline_pixels(text: str) -> bool:
    # Pixel data is the last or nearly last element: look from the end.
    for tag in PIXEL_KEYS:
        at = text.rfind(f'"{tag}"')
        if at >= 0 and INLINE_PIXELS.match(text, at):
            return True
    return False


def _pixels_as_bulk(metadata: dict[str, Any], url: str) -> dict[str, Any]:
    for tag in PIXEL_KEYS:
        if tag in metadata:
            metadata[tag] = {"vr": metadata[tag].get("vr", "OW"), "BulkDataURI": f"bulkdata/{tag}"}
    return absolute_bulk_uris(metadata, url)


# --- frames, bulk data, rendered ---------------------------------------------------------------------------


def _number(element: Any, default: int | None = None) -> int | None:
    value = first_value({"x": element}, "x") if element else None
    try:
        return default if value is None else int(value)
    except (TypeError, ValueError):
        return default


def _image_query(with_metadata: bool) -> PreparedQuery:
    def build(study: str, series: str, sop: str) -> Any:
        fields = ["file", "transfer_syntax_uid", "number_of_frames", "rows", "columns"]
        return _instances(study, series, sop).values(
            *fields,
            *(["metadata"] if with_metadata else []),
            samples=JsonMember("metadata", "00280002"),
            photometric=JsonMember("metadata", "00280004"),
            bits=JsonMember("metadata", "00280100"),
        )

    columns = ("samples", "photometric", "bits", *(["metadata"] if with_metadata else []))
    return PreparedQuery(build, 3, json_columns=columns)


_IMAGE = {False: _image_query(False), True: _image_query(True)}


def stored_image(study: str, series: str, sop: str, with_metadata: bool = False) -> tuple[StoredImage, dict]:
    found = _IMAGE[with_metadata].first(study, series, sop)
    if found is None:
        raise _missing(study, series, sop)
    bits = _number(found["bits"])
    if not (found["rows"] and found["columns"] and bits):
        raise not_found(f"instance {sop} is not an image: it has no pixel data")
    image = StoredImage(
        name=found["file"],
        transfer_syntax=found["transfer_syntax_uid"],
        frames=found["number_of_frames"] or 1,
        rows=found["rows"],
        columns=found["columns"],
        samples=_number(found["samples"], 1) or 1,
        bits_allocated=bits,
        photometric=str(first_value({"x": found["photometric"]}, "x") or "MONOCHROME2").strip(),
    )
    return image, found.get("metadata") or {}


def frame_indices(frame_list: str, frames: int) -> list[int]:
    """0-based indices of a 1-based, comma-separated frame list."""
    indices = []
    for item in frame_list.split(","):
        if not item.strip().isdigit() or int(item) < 1:
            raise bad_request(f"frame numbers are positive integers separated by commas, not {frame_list!r}")
        if int(item) > frames:
            raise not_found(f"frame {int(item)} does not exist: the instance has {frames} frame(s)")
        indices.append(int(item) - 1)
    return indices


@dataclass(frozen=True)
class PixelChoice:
    keep_compressed: bool
    media_type: str  # of compressed parts


def negotiate_pixels(header: str | None, image: StoredImage) -> PixelChoice:
    """Stored (compressed) or native pixels, from the Accept header (PS3.18 8.7.3.5)."""
    stored = image.transfer_syntax
    image_type = FRAME_MEDIA_TYPES.get(stored, OCTET_STREAM)
    for accepted in parse_accept(header):
        if not accepted.multipart:
            continue
        choice = _pixel_choice(accepted, stored, image_type, image.encapsulated)
        if choice is not None:
            return choice
    raise not_acceptable(
        f'pixel data is stored as {stored}: accept multipart/related; type="application/octet-stream" '
        f"(decompressed), with transfer-syntax=* (as stored), or {image_type} for the stored frames"
    )


def _pixel_choice(
    accepted: MediaRange, stored: str, image_type: str, encapsulated: bool
) -> PixelChoice | None:
    part, syntax = accepted.part_type, accepted.transfer_syntax
    native = PixelChoice(False, OCTET_STREAM)
    if part in ("*/*", OCTET_STREAM):
        if syntax == "*" or (syntax is None and part == "*/*"):
            return (
                PixelChoice(True, image_type if part == "*/*" else OCTET_STREAM) if encapsulated else native
            )
        if syntax in (None, EXPLICIT_LE) or (syntax in NATIVE_LE and not encapsulated):
            return native
        if syntax == stored:
            return PixelChoice(True, OCTET_STREAM)
        return None
    if encapsulated and part in (image_type, "image/*") and syntax in (None, "*", stored):
        return PixelChoice(True, image_type)
    return None


def _part_type(syntax: str, choice: PixelChoice) -> str:
    media_type = OCTET_STREAM if syntax == EXPLICIT_LE else choice.media_type
    return f"{media_type}; transfer-syntax={syntax}"


def frames(
    study: str, series: str, sop: str, frame_list: str, accept: str | None
) -> tuple[str, list[tuple[str, bytes]]]:
    """The parts of a frames response and their media type."""
    image, _ = stored_image(study, series, sop)
    indices = frame_indices(frame_list, image.frames)
    choice = negotiate_pixels(accept, image)
    try:
        result = read_frames(image, indices, choice.keep_compressed)
    except PixelDataError as exc:
        raise not_acceptable(f"{exc}; ask for transfer-syntax=* to get the stored frames") from exc
    parts = [(_part_type(frame.transfer_syntax, choice), frame.data) for frame in result]
    return parts[0][0].split(";")[0], parts


def bulkdata(
    study: str, series: str, sop: str, tag: str, accept: str | None
) -> tuple[str, list[tuple[str, bytes]]]:
    number = int(tag, 16)
    if number in PIXEL_TAGS:
        image, _ = stored_image(study, series, sop)
        choice = negotiate_pixels(accept, image)
        if image.transfer_syntax in NATIVE_LE:
            return OCTET_STREAM, [(_part_type(EXPLICIT_LE, choice), read_pixel_value(image))]
        every_frame = ",".join(str(i + 1) for i in range(image.frames))
        media_type, parts = frames(study, series, sop, every_frame, accept)
        if choice.keep_compressed:  # one part per compressed frame, as for frames
            return media_type, parts
        return OCTET_STREAM, [(parts[0][0], b"".join(data for _, data in parts))]  # one native value
    if not any(r.media_type == "*/*" or r.part_type in (OCTET_STREAM, "*/*") for r in parse_accept(accept)):
        raise not_acceptable('bulk data is sent as multipart/related; type="application/octet-stream"')
    (stored,) = stored_files(study, series, sop)
    return OCTET_STREAM, [(OCTET_STREAM, _element_bytes(stored, number, sop))]


def _element_bytes(stored: StoredFile, tag: int, sop: str) -> bytes:
    with default_storage.open(stored.name, "rb") as file:
        ds = pydicom.dcmread(file, stop_before_pixels=tag < min(PIXEL_TAGS))
    element = ds.get(tag) or next((e for e in ds.iterall() if e.tag == tag), None)
    if element is None or not isinstance(element.value, bytes):
        raise not_found(f"instance {sop} has no bulk data element ({tag >> 16:04X},{tag & 0xFFFF:04X})")
    data: bytes = element.value
    width = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}.get(element.VR, 1)
    if width > 1 and not ds.original_encoding[1]:  # big endian file: bulk data is sent little endian
        data = b"".join(data[i : i + width][::-1] for i in range(0, len(data), width))
    return data


RENDERED_TYPES = ("image/png", "image/jpeg")


def rendered(
    study: str, series: str, sop: str, frame: str | None, params: QueryDict, accept: str | None
) -> tuple[str, bytes]:
    image, metadata = stored_image(study, series, sop, with_metadata=True)
    index = frame_indices(frame, image.frames)[0] if frame is not None else 0
    media_type = _rendered_type(accept)
    try:
        data = render(
            image,
            metadata,
            index,
            media_type,
            window=_window(params.get("window")),
            viewport=_viewport(params.get("viewport")),
            quality=_quality(params.get("quality")),
        )
    except PixelDataError as exc:
        raise not_acceptable(str(exc)) from exc
    return media_type, data


def _rendered_type(header: str | None) -> str:
    for accepted in parse_accept(header):
        if accepted.media_type in RENDERED_TYPES:
            return accepted.media_type
        if accepted.media_type in ("*/*", "image/*"):
            return "image/png"
    raise not_acceptable(f"rendered images are available as {' or '.join(RENDERED_TYPES)}")


def _numbers(text: str, name: str, count: int) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")[:count]]
    except ValueError:
        values = []
    if len(values) != count:
        raise bad_request(f"{name} needs {count} comma-separated numbers, not {text!r}")
    return values


def _window(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    center, width = _numbers(text, "window", 2)  # center,width[,function]: only linear is applied
    if width <= 0:
        raise bad_request("window width must be positive")
    return center, width


def _viewport(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    width, height = (int(v) for v in _numbers(text, "viewport", 2))
    if not (0 < width <= 4096 and 0 < height <= 4096):
        raise bad_request("viewport width and height must be between 1 and 4096")
    return width, height


def _quality(text: str | None) -> int:
    if not text:
        return 90
    (quality,) = _numbers(text, "quality", 1)
    if not 1 <= quality <= 100:
        raise bad_request("quality must be between 1 and 100")
    return int(quality)
