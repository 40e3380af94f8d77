"""Import of DICOM files into the study database.

Every path in (command line, web upload, STOW-RS) ends in :func:`store_dicom`, which either stores one
instance completely (file and index rows) or rejects it with a reason and leaves nothing behind. Folders and zip
archives are expanded by :func:`iter_sources`, which rejects unsafe archive entries one by one.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import stat
import struct
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePosixPath

import pydicom
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.errors import InvalidDicomError

from .dicom_structure import StructureError, check_dataset_structure
from .models import Instance, Patient, Series, Study

log = logging.getLogger(__name__)

STORED = "stored"
ALREADY_PRESENT = "already present"
REJECTED = "rejected"

# A UID is digits and dots, at most 64 characters (PS3.5 9.1). Leading zeros in a component are tolerated
# because real scanners write them.
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
REQUIRED_UIDS = {
    "SOPClassUID": "SOP Class UID",
    "SOPInstanceUID": "SOP Instance UID",
    "StudyInstanceUID": "Study Instance UID",
    "SeriesInstanceUID": "Series Instance UID",
}
# Elements that are served as bulk data rather than inline in DICOM JSON.
BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
BULK_THRESHOLD = 1024
ZIP_MAGIC = b"PK\x03\x04"


class RejectedFile(Exception):
    """A file that cannot be stored; the message is the reason shown to the user."""


@dataclass(frozen=True)
class ImportOutcome:
    source: str
    status: str
    reason: str = ""
    sop_instance_uid: str = ""
    sop_class_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""

    @property
    def rejected(self) -> bool:
        return self.status == REJECTED

    def __str__(self) -> str:
        return f"{REJECTED}: {self.reason}" if self.rejected else self.status


@dataclass(frozen=True)
class Source:
    """One candidate file: a name to report and a way to read its bytes (which may itself reject it)."""

    name: str
    read: Callable[[], bytes]


# --- expanding paths, folders and archives -------------------------------------------------------------------


def _read_file_limited(path: Path) -> bytes:
    size = path.stat().st_size
    if size > settings.ANNOVOX_MAX_FILE_BYTES:
        raise RejectedFile(f"file is {size} bytes, over the limit of {settings.ANNOVOX_MAX_FILE_BYTES} bytes")
    return path.read_bytes()


def _unsafe_entry_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "archive entry has an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "archive entry path contains '..'"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "archive entry is a symbolic link"
    if info.file_size > settings.ANNOVOX_MAX_FILE_BYTES:
        return f"archive entry is {info.file_size} bytes, over the limit of {settings.ANNOVOX_MAX_FILE_BYTES} bytes"
    if info.compress_size and info.file_size / info.compress_size > settings.ANNOVOX_MAX_ZIP_RATIO:
        return (
            f"archive entry expands {info.file_size // max(info.compress_size, 1)}-fold "
            f"(limit {settings.ANNOVOX_MAX_ZIP_RATIO}): refused as a possible zip bomb"
        )
    return None


def _read_zip_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    # The sizes in the header are not trusted: read at most one byte past the limits and check what came out.
    limit = min(settings.ANNOVOX_MAX_FILE_BYTES, max(info.compress_size, 1) * settings.ANNOVOX_MAX_ZIP_RATIO)
    try:
        with archive.open(info) as entry:
            data = entry.read(limit + 1)
    except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError, OSError) as exc:
        raise RejectedFile(f"archive entry cannot be read: {exc}") from exc
    if len(data) > limit:
        raise RejectedFile("archive entry expands beyond its declared size or the limits: refused as a zip bomb")
    return data


def _iter_zip(name: str, data: bytes) -> Iterator[Source]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        yield Source(name, _raiser(f"damaged zip archive: {exc}"))
        return
    for info in infos:
        if info.is_dir():
            continue
        entry_name = f"{name}:{info.filename}"
        reason = _unsafe_entry_reason(info)
        if reason:
            yield Source(entry_name, _raiser(reason))
        else:
            yield Source(entry_name, lambda info=info: _read_zip_entry(archive, info))


def _raiser(reason: str) -> Callable[[], bytes]:
    def read() -> bytes:
        raise RejectedFile(reason)

    return read


def iter_sources(name: str, read: Callable[[], bytes]) -> Iterator[Source]:
    """One named input as DICOM candidates: zip archives are opened (one level), anything else is a file."""
    try:
        data = read()
    except RejectedFile as exc:
        yield Source(name, _raiser(str(exc)))
        return
    if data[:4] == ZIP_MAGIC:
        for source in _iter_zip(name, data):
            if source.name.lower().endswith(".zip"):
                yield Source(source.name, _raiser("archives inside archives are not opened"))
            else:
                yield source
    else:
        yield Source(name, lambda: data)


def iter_path_sources(paths: Iterable[str | Path]) -> Iterator[Source]:
    """Files, folders (recursively, in name order) and zip archives given on the command line."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files = [path]
        else:
            yield Source(str(path), _raiser("no such file or folder"))
            continue
        for file in files:
            yield from iter_sources(str(file), lambda file=file: _read_file_limited(file))


# --- parsing and storing one file ----------------------------------------------------------------------------


def parse_dicom(data: bytes) -> Dataset:
    """Parse a complete DICOM Part 10 file, or raise :class:`RejectedFile` saying what is wrong with it."""
    if len(data) > settings.ANNOVOX_MAX_FILE_BYTES:
        raise RejectedFile(f"file is {len(data)} bytes, over the limit of {settings.ANNOVOX_MAX_FILE_BYTES} bytes")
    if len(data) < 132 or data[128:132] != b"DICM":
        raise RejectedFile("not a DICOM file (no DICM preamble)")
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        # Reading every element finds values cut short anywhere in the file.
        for _ in ds.iterall():
            pass
    except InvalidDicomError as exc:
        raise RejectedFile(f"not a DICOM file: {exc}") from exc
    except Exception as exc:  # pydicom raises many types for damaged files
        raise RejectedFile(f"damaged DICOM file: {exc}") from exc
    if "TransferSyntaxUID" not in ds.file_meta:
        raise RejectedFile("file meta information has no Transfer Syntax UID")
    syntax = ds.file_meta.TransferSyntaxUID
    if not str(syntax).startswith("1.2.840.10008.1.2"):
        raise RejectedFile(f"{syntax} is not a DICOM transfer syntax")
    # Syntaxes newer than pydicom (e.g. Deflated Image Frame Compression) are explicit VR little endian.
    known = syntax.is_transfer_syntax
    if not (known and syntax.is_deflated):  # a deflated body was checked by inflating it
        try:
            check_dataset_structure(
                data,
                _dataset_offset(data),
                implicit_vr=known and syntax.is_implicit_VR,
                little_endian=not known or syntax.is_little_endian,
            )
        except StructureError as exc:
            raise RejectedFile(f"truncated or damaged file: {exc}") from exc
    _check_complete(ds)
    for keyword, label in REQUIRED_UIDS.items():
        value = str(ds.get(keyword, "") or "").strip()
        if not value:
            raise RejectedFile(f"{label} is missing or empty")
        if len(value) > 64 or not UID_PATTERN.match(value):
            raise RejectedFile(f"{label} {value!r} is not a valid UID")
    return ds


def _dataset_offset(data: bytes) -> int:
    """Where the data set starts: after the preamble and the file meta group (whose length it declares)."""
    group_length = struct.unpack_from("<I", data, 132 + 8)[0]
    return 132 + 12 + group_length


def _check_complete(ds: Dataset) -> None:
    """Reject files whose pixel data is shorter than rows × columns × frames × samples × bits promise."""
    pixel_keywords = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    if not any(k in ds for k in pixel_keywords):
        sop_class = ds.get("SOPClassUID")
        if sop_class is not None and "Image Storage" in sop_class.name:
            raise RejectedFile("truncated or incomplete file: an image object without pixel data")
        return
    if "PixelData" not in ds:
        return
    raw = ds["PixelData"].value
    if raw is None:
        raise RejectedFile("truncated file: pixel data is missing")
    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_transfer_syntax or syntax.is_compressed:
        _check_encapsulated(raw, int(ds.get("NumberOfFrames", 1) or 1))
        return
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        expected_bits = ds.Rows * ds.Columns * frames * ds.get("SamplesPerPixel", 1) * ds.BitsAllocated
    except (AttributeError, TypeError, ValueError) as exc:
        raise RejectedFile(f"pixel data without a complete image description: {exc}") from exc
    if len(raw) * 8 < expected_bits:
        raise RejectedFile(
            f"truncated file: pixel data has {len(raw)} bytes, {(expected_bits + 7) // 8} expected"
        )


def _check_encapsulated(raw: bytes, frames: int) -> None:
    try:
        fragments = sum(1 for _ in generate_fragments(raw))
    except Exception as exc:
        raise RejectedFile(f"truncated or damaged encapsulated pixel data: {exc}") from exc
    if fragments < frames:
        raise RejectedFile(f"truncated file: {fragments} pixel data fragments for {frames} frames")


def _bulk_uri(element: pydicom.DataElement) -> str:
    # Relative; the DICOMweb views prefix the instance URL.
    return f"bulkdata/{element.tag:08X}"


def dicom_json(ds: Dataset) -> dict:
    """DICOM JSON of ``ds`` with large binary values replaced by relative BulkDataURIs."""
    return ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=_bulk_uri)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _date(ds: Dataset, keyword: str) -> date | None:
    value = _text(ds, keyword)
    if len(value) >= 8 and value[:8].isdigit():
        try:
            return date(int(value[:4]), int(value[4:6]), int(value[6:8]))
        except ValueError:
            return None
    return None


def _storage_name(digest: str) -> str:
    return f"instances/{digest[:2]}/{digest[2:4]}/{digest}.dcm"


def _stored_intact(name: str, digest: str) -> bool:
    """Whether ``name`` already holds exactly these bytes; a partial file left by a crash is removed."""
    if not default_storage.exists(name):
        return False
    sha = hashlib.sha256()
    with default_storage.open(name, "rb") as existing:
        for chunk in iter(lambda: existing.read(1 << 20), b""):
            sha.update(chunk)
    if sha.hexdigest() == digest:
        return True
    default_storage.delete(name)
    return False


def store_dicom(data: bytes, source: str = "") -> ImportOutcome:
    """Store one DICOM file, idempotently by SOP Instance UID. Never raises for bad input."""
    try:
        ds = parse_dicom(data)
    except RejectedFile as exc:
        return ImportOutcome(source, REJECTED, str(exc))
    ids = {
        "sop_instance_uid": str(ds.SOPInstanceUID).strip(),
        "sop_class_uid": str(ds.SOPClassUID).strip(),
        "study_instance_uid": str(ds.StudyInstanceUID).strip(),
        "series_instance_uid": str(ds.SeriesInstanceUID).strip(),
    }
    digest = hashlib.sha256(data).hexdigest()
    existing = Instance.objects.filter(sop_instance_uid=ids["sop_instance_uid"]).first()
    if existing is not None:
        return _outcome_for_existing(existing, digest, source, ids)

    name = _storage_name(digest)
    saved_name = None
    try:
        if not _stored_intact(name, digest):
            saved_name = default_storage.save(name, ContentFile(data))
            if saved_name != name:  # a concurrent writer got there first with the same bytes
                default_storage.delete(saved_name)
                saved_name = None
        with transaction.atomic():
            _index(ds, ids, name, len(data), digest)
    except RejectedFile as exc:
        if saved_name and not Instance.objects.filter(file=name).exists():
            default_storage.delete(saved_name)
        return ImportOutcome(source, REJECTED, str(exc), **ids)
    except IntegrityError:
        # A concurrent import of the same UID won the race: report against what it stored.
        existing = Instance.objects.filter(sop_instance_uid=ids["sop_instance_uid"]).first()
        if saved_name and not Instance.objects.filter(file=name).exists():
            default_storage.delete(saved_name)
        if existing is not None:
            return _outcome_for_existing(existing, digest, source, ids)
        return ImportOutcome(source, REJECTED, "conflicts with an instance stored at the same time", **ids)
    except Exception as exc:
        if saved_name:
            default_storage.delete(saved_name)
        log.exception("storing %s failed", source)
        return ImportOutcome(source, REJECTED, f"could not be stored: {exc}", **ids)
    return ImportOutcome(source, STORED, **ids)


def _outcome_for_existing(existing: Instance, digest: str, source: str, ids: dict[str, str]) -> ImportOutcome:
    if existing.sha256 == digest:
        return ImportOutcome(source, ALREADY_PRESENT, **ids)
    return ImportOutcome(
        source,
        REJECTED,
        f"SOP Instance UID {ids['sop_instance_uid']} is already stored with different content",
        **ids,
    )


def _index(ds: Dataset, ids: dict[str, str], name: str, size: int, digest: str) -> Instance:
    patient, _ = Patient.objects.get_or_create(
        patient_id=_text(ds, "PatientID")[:64],
        defaults={
            "patient_name": _text(ds, "PatientName"),
            "birth_date": _date(ds, "PatientBirthDate"),
            "sex": _text(ds, "PatientSex"),
        },
    )
    study, _ = Study.objects.get_or_create(
        study_instance_uid=ids["study_instance_uid"],
        defaults={
            "patient": patient,
            "study_date": _date(ds, "StudyDate"),
            "study_time": _text(ds, "StudyTime"),
            "accession_number": _text(ds, "AccessionNumber")[:64],
            "study_id": _text(ds, "StudyID")[:64],
            "study_description": _text(ds, "StudyDescription")[:256],
            "referring_physician_name": _text(ds, "ReferringPhysicianName"),
        },
    )
    if study.patient_id != patient.pk:
        raise RejectedFile(
            f"study {ids['study_instance_uid']} is stored for another Patient ID ({study.patient.patient_id!r})"
        )
    series, _ = Series.objects.get_or_create(
        series_instance_uid=ids["series_instance_uid"],
        defaults={
            "study": study,
            "modality": _text(ds, "Modality")[:16],
            "series_number": _int(ds, "SeriesNumber"),
            "series_description": _text(ds, "SeriesDescription")[:256],
            "body_part_examined": _text(ds, "BodyPartExamined")[:64],
            "frame_of_reference_uid": _text(ds, "FrameOfReferenceUID")[:64],
        },
    )
    if series.study_id != study.pk:
        raise RejectedFile(f"series {ids['series_instance_uid']} is stored under another study")
    return Instance.objects.create(
        series=series,
        sop_instance_uid=ids["sop_instance_uid"],
        sop_class_uid=ids["sop_class_uid"],
        instance_number=_int(ds, "InstanceNumber"),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        number_of_frames=_int(ds, "NumberOfFrames") or 1,
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        file=name,
        file_size=size,
        sha256=digest,
        metadata=dicom_json(ds),
    )


def import_sources(
    sources: Iterable[Source], on_outcome: Callable[[ImportOutcome], None] | None = None
) -> list[ImportOutcome]:
    """Store every source; a source that cannot even be read is rejected with the reason."""
    outcomes = []
    for source in sources:
        try:
            outcome = store_dicom(source.read(), source.name)
        except RejectedFile as exc:
            outcome = ImportOutcome(source.name, REJECTED, str(exc))
        except OSError as exc:
            outcome = ImportOutcome(source.name, REJECTED, f"cannot be read: {exc}")
        outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome)
    return outcomes
