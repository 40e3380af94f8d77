"""Import of DICOM files into the study database.

Every path in (command line, web upload, STOW-RS) ends in :func:`store_dicom`, which either stores one
instance completely (file and index rows) or rejects it with a reason and leaves nothing behind. Inputs are
turned into :class:`Source` candidates first: folders are walked, zip archives are read entry by entry (unsafe
entries and zip bombs are rejected one by one) and gzip files are inflated, all within the size limits.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import logging
import re
import stat
import threading
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path, PurePosixPath
from typing import IO, Any

import pydicom
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.errors import InvalidDicomError

from .dicom_structure import StructureError, check_dataset_structure, file_meta_end
from .models import Instance, Patient, Series, Study

log = logging.getLogger(__name__)

STORED = "stored"
ALREADY_PRESENT = "already present"
REJECTED = "rejected"
STATUSES = (STORED, ALREADY_PRESENT, REJECTED)

# A UID is digits and dots, at most 64 characters (PS3.5 9.1). Leading zeros in a component are tolerated
# because real scanners write them.
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
REQUIRED_UIDS = {
    "SOPClassUID": "SOP Class UID",
    "SOPInstanceUID": "SOP Instance UID",
    "StudyInstanceUID": "Study Instance UID",
    "SeriesInstanceUID": "Series Instance UID",
}
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
# Elements that are served as bulk data rather than inline in DICOM JSON.
BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
BULK_THRESHOLD = 1024
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
GZIP_MAGIC = b"\x1f\x8b"
ARCHIVE_SUFFIXES = (".zip", ".gz", ".tgz", ".tar", ".7z", ".rar", ".bz2", ".xz")


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

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{REJECTED}: {self.reason}" if self.rejected else self.status


@dataclass(frozen=True)
class Source:
    """One candidate file: a name to report and a way to read its bytes (which may itself reject it).

    Sources from an archive read from the open archive: call ``read`` before asking the iterator for the next
    source, as :func:`import_sources` does.
    """

    name: str
    read: Callable[[], bytes]


def count_outcomes(outcomes: Iterable[ImportOutcome]) -> dict[str, int]:
    counts = Counter(outcome.status for outcome in outcomes)
    return {status: counts[status] for status in STATUSES}


# --- expanding paths, uploads and archives ---------------------------------------------------------------


def _max_bytes() -> int:
    return int(settings.ANNOVOX_MAX_FILE_BYTES)


def _over_limit(size: int, what: str = "file is") -> str:
    return f"{what} {size} bytes, over the limit of {_max_bytes()} bytes per file"


def _raiser(reason: str) -> Callable[[], bytes]:
    def read() -> bytes:
        raise RejectedFile(reason)

    return read


def _read_limited(file: IO[bytes], size: int | None) -> bytes:
    limit = _max_bytes()
    if size is not None and size > limit:
        raise RejectedFile(_over_limit(size))
    file.seek(0)
    data = file.read(limit + 1)  # the declared size may be wrong: never read more than the limit
    if len(data) > limit:
        raise RejectedFile(
            _over_limit(len(data)) if size is None else f"file grew over the limit of {limit} bytes"
        )
    return data


def _inflate_gzip(file: IO[bytes]) -> bytes:
    limit = _max_bytes()
    file.seek(0)
    try:
        with gzip.GzipFile(fileobj=file, mode="rb") as inflated:  # closes the wrapper, not ``file``
            data = inflated.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise RejectedFile(f"damaged gzip file: {exc}") from exc
    if len(data) > limit:
        raise RejectedFile(f"gzip file inflates to more than the limit of {limit} bytes per file")
    if data[:4] in (ZIP_MAGIC, EMPTY_ZIP_MAGIC) or data[:2] == GZIP_MAGIC:
        raise RejectedFile("archives inside archives are not opened: extract the inner archive first")
    return data


def _unsafe_entry_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "archive entry has an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "archive entry path contains '..'"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "archive entry is a symbolic link"
    if info.flag_bits & 0x1:
        return "archive entry is encrypted"
    if name.lower().endswith(ARCHIVE_SUFFIXES):
        return "archives inside archives are not opened: extract the inner archive first"
    if info.file_size > _max_bytes():
        return _over_limit(info.file_size, "archive entry expands to")
    return None


def _read_zip_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    # zipfile stops at the size the central directory declares and then checks the CRC, so an entry whose
    # header lies about its size fails here instead of inflating without bound.
    try:
        with archive.open(info) as entry:
            data = entry.read(info.file_size + 1)
    except Exception as exc:  # zipfile, zlib, bz2 and lzma all raise their own types
        raise RejectedFile(f"damaged archive entry: {exc}") from exc
    if len(data) != info.file_size:
        raise RejectedFile(
            f"damaged archive entry: {len(data)} bytes instead of the declared {info.file_size}"
        )
    if data[:4] in (ZIP_MAGIC, EMPTY_ZIP_MAGIC) or data[:2] == GZIP_MAGIC:
        raise RejectedFile("archives inside archives are not opened: extract the inner archive first")
    return data


def _iter_zip(name: str, file: IO[bytes], size: int | None) -> Iterator[Source]:
    try:
        archive = zipfile.ZipFile(file)
        infos = [info for info in archive.infolist() if not info.is_dir()]
    except Exception as exc:  # BadZipFile, but also struct and value errors from damaged directories
        yield Source(name, _raiser(f"damaged zip archive: {exc}"))
        return
    if not infos:
        yield Source(name, _raiser("zip archive contains no files"))
        return
    # Zip bombs: each entry is bounded by the per-file limit (checked on the bytes that come out, not only
    # on the header), and the archive as a whole may expand to one maximal file or ANNOVOX_MAX_ZIP_RATIO
    # times its own size, whichever is larger. A per-entry ratio would refuse real files: a sparse DICOM SEG
    # deflates several hundred times.
    ratio = int(settings.ANNOVOX_MAX_ZIP_RATIO)
    budget = max(ratio * (size or 0), _max_bytes())
    expanded = 0
    with archive:
        for info in infos:
            entry_name = f"{name}:{info.filename}"
            reason = _unsafe_entry_reason(info)
            if reason is None:
                expanded += info.file_size
                if expanded > budget:
                    reason = (
                        f"the archive expands to more than {budget} bytes ({ratio} times its size): "
                        "refused as a possible zip bomb"
                    )
            if reason:
                yield Source(entry_name, _raiser(reason))
            else:
                yield Source(entry_name, functools.partial(_read_zip_entry, archive, info))


def iter_file_sources(name: str, file: IO[bytes], size: int | None = None) -> Iterator[Source]:
    """One open, seekable file (on disk or uploaded) as DICOM candidates.

    A zip archive yields its entries (one level), a gzip file its inflated content, anything else itself.
    """
    try:
        file.seek(0)
        head = file.read(4)
        file.seek(0)
    except OSError as exc:
        yield Source(name, _raiser(f"cannot be read: {exc}"))
        return
    if head in (ZIP_MAGIC, EMPTY_ZIP_MAGIC):
        yield from _iter_zip(name, file, size)
    elif head[:2] == GZIP_MAGIC:
        yield Source(name, lambda: _inflate_gzip(file))
    else:
        yield Source(name, lambda: _read_limited(file, size))


def iter_sources(name: str, read: Callable[[], bytes]) -> Iterator[Source]:
    """One named input held in memory as DICOM candidates (see :func:`iter_file_sources`)."""
    try:
        data = read()
    except RejectedFile as exc:
        yield Source(name, _raiser(str(exc)))
        return
    yield from iter_file_sources(name, io.BytesIO(data), len(data))


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """The files to import: folders are walked recursively in name order. Missing paths and empty folders are
    kept, so that :func:`iter_path_sources` reports them."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file())
            files.extend(found or [path])
        else:
            files.append(path)
    return files


def iter_path_sources(paths: Iterable[str | Path]) -> Iterator[Source]:
    """Files, folders (recursively, in name order), zip archives and gzip files given on the command line."""
    for path in expand_paths(paths):
        if path.is_dir():
            yield Source(str(path), _raiser("folder contains no files"))
            continue
        if not path.is_file():
            yield Source(str(path), _raiser("no such file or folder"))
            continue
        try:
            with path.open("rb") as file:
                yield from iter_file_sources(str(path), file, path.stat().st_size)
        except OSError as exc:
            yield Source(str(path), _raiser(f"cannot be read: {exc}"))


def _clean_upload_name(name: str) -> str:
    # Only shown back to the user; nothing is stored under it.
    name = name.replace("\\", "/").lstrip("/")
    return name[:1024]


def iter_upload_sources(files: Sequence[UploadedFile], names: Sequence[str] = ()) -> Iterator[Source]:
    """Uploaded files as DICOM candidates. ``names`` are the relative paths a browser sends for a folder (the
    upload's own name has lost its folders); when they do not match the files one to one they are ignored."""
    use_names = len(names) == len(files)
    for index, upload in enumerate(files):
        name = _clean_upload_name(
            names[index] if use_names and names[index] else upload.name or f"file {index + 1}"
        )
        yield from iter_file_sources(name, upload.file, upload.size)


# --- parsing and storing one file -----------------------------------------------------------------------


def parse_dicom(data: bytes) -> Dataset:
    """Parse a complete DICOM Part 10 file, or raise :class:`RejectedFile` saying what is wrong with it."""
    if len(data) > _max_bytes():
        raise RejectedFile(_over_limit(len(data)))
    if len(data) < 132 or data[128:132] != b"DICM":
        raise RejectedFile("not a DICOM file (no DICM preamble)")
    try:
        offset = file_meta_end(data)
    except StructureError as exc:
        raise RejectedFile(f"truncated or damaged file: {exc}") from exc
    if offset >= len(data):
        raise RejectedFile("truncated file: nothing follows the file meta information")
    try:
        with _lenient():
            ds = pydicom.dcmread(io.BytesIO(data))
            # Reading every element finds values cut short anywhere in the file.
            for _ in ds.iterall():
                pass
    except InvalidDicomError as exc:
        raise RejectedFile(f"not a DICOM file: {exc}") from exc
    except Exception as exc:  # pydicom raises many types for damaged files
        raise RejectedFile(f"truncated or damaged file: {exc}") from exc
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
                offset,
                implicit_vr=known and syntax.is_implicit_VR,
                little_endian=not known or syntax.is_little_endian,
            )
        except StructureError as exc:
            raise RejectedFile(f"truncated or damaged file: {exc}") from exc
    _check_uids(ds)
    _check_complete(ds)
    return ds


def _check_uids(ds: Dataset) -> None:
    sop_class = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
    if str(sop_class or "").strip() == MEDIA_STORAGE_DIRECTORY:
        raise RejectedFile(
            "a DICOMDIR (the index of a DICOM medium), not an instance: import the files it lists"
        )
    missing = [
        label for keyword, label in REQUIRED_UIDS.items() if not str(ds.get(keyword, "") or "").strip()
    ]
    if missing:
        raise RejectedFile(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing or empty")
    for keyword, label in REQUIRED_UIDS.items():
        value = str(ds.get(keyword)).strip()
        if len(value) > 64 or not UID_PATTERN.match(value):
            raise RejectedFile(f"{label} {value!r} is not a valid UID")


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
        _check_encapsulated(raw, _int(ds, "NumberOfFrames") or 1)
        return
    try:
        frames = _int(ds, "NumberOfFrames") or 1
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        # Native YBR_FULL_422 shares the two chroma samples between two pixels (PS3.3 C.7.6.3.1.2).
        if samples == 3 and str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
            samples = 2
        expected_bits = int(ds.Rows) * int(ds.Columns) * frames * samples * int(ds.BitsAllocated)
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


def _without_nul(value: Any) -> Any:
    # PostgreSQL refuses NUL characters in text and in jsonb; some writers pad strings with them.
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {key: _without_nul(item) for key, item in value.items()}
    return value


_leniency = threading.local()


class _QuietWhileLenient(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_leniency, "active", False)


logging.getLogger("pydicom").addFilter(_QuietWhileLenient())


@contextmanager
def _lenient() -> Iterator[None]:
    """Silence pydicom while it reads for the importer, in this thread only.

    pydicom warns and logs about every value that breaks a VR's rules; real files are full of them (e.g. an
    18-character StudyID) and are kept as they are. Damage that matters is reported as the rejection reason.
    """
    _leniency.active = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        _leniency.active = False


def dicom_json(ds: Dataset) -> dict:
    """DICOM JSON of ``ds`` with large binary values replaced by relative BulkDataURIs."""
    with _lenient():
        return _without_nul(
            ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=_bulk_uri)
        )


def _text(ds: Dataset, keyword: str, max_length: int) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).replace("\x00", "").strip()[:max_length]


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _date(ds: Dataset, keyword: str) -> date | None:
    value = _text(ds, keyword, 32)
    if len(value) >= 8 and value[:8].isdigit():
        try:
            return date(int(value[:4]), int(value[4:6]), int(value[6:8]))
        except ValueError:
            return None
    return None


def _storage_name(digest: str) -> str:
    return f"instances/{digest[:2]}/{digest[2:4]}/{digest}.dcm"


def store_dicom(data: bytes, source: str = "") -> ImportOutcome:
    """Store one DICOM file, idempotently by SOP Instance UID. Never raises for bad input.

    The file is written first, under a name that this call alone owns (the storage adds a suffix when the name
    is taken, e.g. by a concurrent import of the same bytes or a file left by a crash), and the index rows are
    inserted after it in one transaction. Whatever fails, the file is removed again, so no row points to a
    missing file and no file is left without a row.
    """
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

    saved_name: str | None = None
    try:
        saved_name = default_storage.save(_storage_name(digest), ContentFile(data))
        with transaction.atomic():
            _index(ds, ids, saved_name, len(data), digest)
    except RejectedFile as exc:
        _discard(saved_name)
        return ImportOutcome(source, REJECTED, str(exc), **ids)
    except IntegrityError:
        # A concurrent import of the same UID won the race: report against what it stored.
        _discard(saved_name)
        existing = Instance.objects.filter(sop_instance_uid=ids["sop_instance_uid"]).first()
        if existing is not None:
            return _outcome_for_existing(existing, digest, source, ids)
        return ImportOutcome(source, REJECTED, "conflicts with an instance stored at the same time", **ids)
    except Exception as exc:
        _discard(saved_name)
        log.exception("storing %s failed", source)
        return ImportOutcome(source, REJECTED, f"could not be stored: {exc}", **ids)
    return ImportOutcome(source, STORED, **ids)


def _discard(name: str | None) -> None:
    if name is None:
        return
    try:
        default_storage.delete(name)
    except Exception:
        log.exception("could not remove %s after a failed import", name)


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
        patient_id=_text(ds, "PatientID", 64),
        defaults={
            "patient_name": _text(ds, "PatientName", 324),
            "birth_date": _date(ds, "PatientBirthDate"),
            "sex": _text(ds, "PatientSex", 16),
        },
    )
    study, _ = Study.objects.get_or_create(
        study_instance_uid=ids["study_instance_uid"],
        defaults={
            "patient": patient,
            "study_date": _date(ds, "StudyDate"),
            "study_time": _text(ds, "StudyTime", 32),
            "accession_number": _text(ds, "AccessionNumber", 64),
            "study_id": _text(ds, "StudyID", 64),
            "study_description": _text(ds, "StudyDescription", 256),
            "referring_physician_name": _text(ds, "ReferringPhysicianName", 324),
        },
    )
    if study.patient_id != patient.pk:
        other = study.patient.patient_id
        raise RejectedFile(f"study {ids['study_instance_uid']} is stored for another Patient ID ({other!r})")
    series, _ = Series.objects.get_or_create(
        series_instance_uid=ids["series_instance_uid"],
        defaults={
            "study": study,
            "modality": _text(ds, "Modality", 16),
            "series_number": _int(ds, "SeriesNumber"),
            "series_description": _text(ds, "SeriesDescription", 256),
            "body_part_examined": _text(ds, "BodyPartExamined", 64),
            "frame_of_reference_uid": _text(ds, "FrameOfReferenceUID", 64),
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
        except Exception as exc:  # one unreadable input must not end the batch
            log.exception("reading %s failed", source.name)
            outcome = ImportOutcome(source.name, REJECTED, f"cannot be read: {exc}")
        outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome)
    return outcomes


def import_uploads(files: Sequence[UploadedFile], names: Sequence[str] = ()) -> list[ImportOutcome]:
    """The web upload: files, a folder sent as files with relative ``names``, or zip archives."""
    return import_sources(iter_upload_sources(files, names))
