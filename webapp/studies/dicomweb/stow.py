"""STOW-RS: store instances sent as ``multipart/related; type="application/dicom"`` (PS3.18 10.5).

Each part goes through the importer's :func:`store_dicom`, like every other way in. The response lists the
stored (or already present) instances in ReferencedSOPSequence and the others in FailedSOPSequence with a
Failure Reason code (PS3.18 Table I.2-2) and the importer's reason in Error Comment (0000,0902).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import pydicom

from ..importing import ALREADY_PRESENT, REJECTED, STORED, ImportOutcome, store_dicom
from .dicomjson import element
from .http import DicomWebError, bad_request, parse_media_type

DICOM = "application/dicom"
# Failure Reason (0008,1197) values.
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
STUDY_MISMATCH = 0xC409  # in the "cannot understand" range, as dcm4chee uses it
HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]
    body: bytes


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """The parts of a ``multipart/related`` body (RFC 2046), tolerating bare LF line ends."""
    media_type, params = parse_media_type(content_type)
    if media_type != "multipart/related":
        raise DicomWebError(415, f'send multipart/related; type="{DICOM}", not {media_type or "nothing"}')
    root_type = params.get("type", DICOM).lower()
    if root_type != DICOM:
        raise DicomWebError(
            415, f"only {DICOM} parts can be stored, not {root_type} (no metadata + bulk data)"
        )
    boundary = params.get("boundary", "").encode()
    if not boundary:
        raise bad_request("the Content-Type has no boundary parameter")
    delimiter = b"--" + boundary
    start = body.find(delimiter)
    if start < 0 or (start > 0 and body[start - 1 : start] != b"\n"):
        raise bad_request("the body does not start with the boundary given in the Content-Type")
    parts = []
    pos = start + len(delimiter)
    while not body.startswith(b"--", pos):
        line_end = body.find(b"\n", pos)
        if line_end < 0:
            raise bad_request("the body ends after a boundary")
        head_start = line_end + 1
        if body.startswith(b"\r\n", head_start) or body.startswith(b"\n", head_start):  # no headers
            match = re.compile(rb"\r?\n").match(body, head_start)
        else:
            match = HEADER_END.search(body, head_start)
        if match is None:
            raise bad_request("a part's headers do not end with an empty line")
        content_start = match.end()
        end = body.find(b"\r\n" + delimiter, content_start)
        end, skip = (end, 2) if end >= 0 else (body.find(b"\n" + delimiter, content_start), 1)
        if end < 0:
            raise bad_request("the body ends before the closing boundary (truncated upload?)")
        parts.append(Part(_headers(body[head_start : match.start()]), body[content_start:end]))
        pos = end + skip + len(delimiter)
    if not parts:
        raise bad_request("the body contains no parts")
    return parts


def _headers(block: bytes) -> dict[str, str]:
    headers = {}
    for line in block.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.strip():
            headers[name.strip().lower()] = value.strip()
    return headers


def failure_reason(reason: str) -> int:
    """A Failure Reason code for an importer rejection (the reason text stays in Error Comment)."""
    text = reason.lower()
    if "already stored with different content" in text:
        return DUPLICATE_SOP_INSTANCE
    if "over the limit" in text or "limit of" in text:
        return OUT_OF_RESOURCES
    if text.startswith("could not be stored"):
        return PROCESSING_FAILURE
    return CANNOT_UNDERSTAND


def _study_of(data: bytes) -> str | None:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
    except Exception:  # unreadable: the importer says why
        return None
    return str(ds.get("StudyInstanceUID", "") or "").strip() or None


def _store_part(index: int, part: Part, study: str | None) -> tuple[ImportOutcome, int | None]:
    """The importer's outcome for one part, and a Failure Reason when the part was refused before it."""
    source = f"part {index + 1}"
    media_type, _ = parse_media_type(part.headers.get("content-type", DICOM))
    if media_type != DICOM:
        reason = f"part has Content-Type {media_type}; only {DICOM} is stored"
        return ImportOutcome(source, REJECTED, reason), CANNOT_UNDERSTAND
    if study is not None:
        found = _study_of(part.body)
        if found is not None and found != study:
            reason = f"Study Instance UID {found} does not match the study of the request URL ({study})"
            return ImportOutcome(source, REJECTED, reason, study_instance_uid=found), STUDY_MISMATCH
    return store_dicom(part.body, source), None


def _optional(tag: str, value: str | None) -> dict:
    return element(tag, value) if value else element(tag)


def store(body: bytes, content_type: str, study: str | None, base_url: str) -> tuple[int, dict]:
    """Store every part; the HTTP status (200 all stored, 202 some, 409 none) and the response data set."""
    parts = parse_multipart(body, content_type)
    referenced, failed, studies = [], [], set()
    for index, part in enumerate(parts):
        outcome, code = _store_part(index, part, study)
        item = {
            "00081150": _optional("00081150", outcome.sop_class_uid),
            "00081155": _optional("00081155", outcome.sop_instance_uid),
        }
        if outcome.status in (STORED, ALREADY_PRESENT):
            studies.add(outcome.study_instance_uid)
            url = (
                f"{base_url}/studies/{outcome.study_instance_uid}/series/{outcome.series_instance_uid}"
                f"/instances/{outcome.sop_instance_uid}"
            )
            referenced.append({**item, "00081190": element("00081190", url)})
        else:
            code = code or failure_reason(outcome.reason)
            failed.append(
                {
                    **item,
                    "00081197": element("00081197", code),
                    "00000902": element("00000902", outcome.reason),
                }
            )
    retrieve_study = study or (next(iter(studies)) if len(studies) == 1 else None)
    response = {"00081190": _optional("00081190", retrieve_study and f"{base_url}/studies/{retrieve_study}")}
    if failed:
        response["00081198"] = element("00081198", *failed)
    if referenced:
        response["00081199"] = element("00081199", *referenced)
    status = 200 if not failed else 202 if referenced else 409
    return status, response
