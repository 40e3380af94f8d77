"""The DICOM importer with the real database and the real files in ../shared/data.

Every bad input must be rejected with a clear reason and leave nothing behind (no row, no stored file), while
the good files of the same batch are stored.
"""

import gzip
import hashlib
import io
import os
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pydicom
import pytest
from django.core.files.storage import FileSystemStorage
from django.core.management import CommandError, call_command
from django.db import DatabaseError

from tests.conftest import DATA, ROOT
from webapp.studies import importing
from webapp.studies.importing import (
    ALREADY_PRESENT,
    REJECTED,
    STORED,
    import_sources,
    iter_sources,
    store_dicom,
)
from webapp.studies.models import Instance, Patient, Series, Study

pytestmark = pytest.mark.django_db

CT_RAW = "ct_totalseg/dicom_raw_uidfixed"
CT_J2K = "ct_totalseg/dicom_j2k_uidfixed"
CT_BLANK = "ct_totalseg/dicom_original_blank_uids"
SEG_GZ = "ct_totalseg/seg_dcmqi/totalseg_example_seg_dcmqi_aligned.dcm.gz"
SMALL_CT = "dicom_seg_thirdparty/highdicom/ct_image.dcm"  # 39 kB
MR_HFS = "mr_dicom_decubitus/HFS_3_t1_fl2d_sag"


def run_import(*paths: str | Path) -> tuple[int, list[str]]:
    """``manage.py import_dicom PATHS``: (exit status, lines printed)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("import_dicom", *[str(p) for p in paths], stdout=out, stderr=err)
        code = 0
    except CommandError as exc:
        code = exc.returncode
    return code, out.getvalue().splitlines()


def reports(lines: list[str]) -> dict[str, str]:
    """Per-file lines ``SOURCE: OUTCOME`` by source (the last line is the summary)."""
    result = {}
    for line in lines[:-1]:
        if f": {REJECTED}: " in line:
            source, _, reason = line.partition(f": {REJECTED}: ")
            result[source] = f"{REJECTED}: {reason}"
        else:
            source, _, status = line.rpartition(": ")
            result[source] = status
    return result


def stored_files(storage: Path) -> list[Path]:
    return sorted(p for p in storage.rglob("*") if p.is_file()) if storage.exists() else []


def assert_nothing_stored(storage: Path) -> None:
    assert stored_files(storage) == []
    assert not Instance.objects.exists()
    assert not Series.objects.exists()
    assert not Study.objects.exists()
    assert not Patient.objects.exists()


def assert_storage_matches_index(storage: Path) -> None:
    """Every row has its file with the original bytes, and every file has its row."""
    files = {p.relative_to(storage).as_posix() for p in stored_files(storage)}
    rows = dict(Instance.objects.values_list("file", "sha256"))
    assert files == set(rows)
    for name, digest in rows.items():
        assert hashlib.sha256((storage / name).read_bytes()).hexdigest() == digest


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def make_zip(path: Path, entries: Iterable[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
    return path


# --- the command line ---------------------------------------------------------------------------------------


def test_cli_imports_folders_files_and_zip_archives(shared_data, isolated_storage, tmp_path):
    ct = sorted((shared_data / CT_RAW).iterdir())
    mr = sorted((shared_data / MR_HFS).glob("*.dcm"))[:5]
    archive = make_zip(tmp_path / "mr.zip", [(f"series/{p.name}", p.read_bytes()) for p in mr])
    single = shared_data / SMALL_CT

    code, lines = run_import(shared_data / CT_RAW, archive, single)

    assert code == 0
    outcomes = reports(lines)
    assert outcomes == {
        **{str(p): STORED for p in ct},
        **{f"{archive}:series/{p.name}": STORED for p in mr},
        str(single): STORED,
    }
    assert lines[-1] == "26 files: 26 stored, 0 already present, 0 rejected"
    assert Instance.objects.count() == 26
    assert Series.objects.count() == 3
    # The original bytes are kept unchanged.
    for path in [*ct, *mr, single]:
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        stored = isolated_storage / Instance.objects.get(sop_instance_uid=uid).file
        assert stored.read_bytes() == path.read_bytes()
    assert_storage_matches_index(isolated_storage)


def test_cli_reimport_is_idempotent(shared_data, isolated_storage):
    assert run_import(shared_data / CT_RAW)[0] == 0
    files_before = stored_files(isolated_storage)
    rows_before = list(Instance.objects.values_list("id", "sop_instance_uid", "file").order_by("id"))

    code, lines = run_import(shared_data / CT_RAW)

    assert code == 0
    assert set(reports(lines).values()) == {ALREADY_PRESENT}
    assert lines[-1] == "20 files: 0 stored, 20 already present, 0 rejected"
    assert stored_files(isolated_storage) == files_before
    assert list(Instance.objects.values_list("id", "sop_instance_uid", "file").order_by("id")) == rows_before


def test_cli_exit_status_and_output_from_a_real_process(shared_data, tmp_path):
    """The command as a user runs it: its own process, its own embedded database."""
    env = {**os.environ, "ANNOVOX_DATA_DIR": str(tmp_path / "data")}
    env.pop("DATABASE_URL", None)  # never the configured database: a throwaway SQLite file
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True, cwd=ROOT)
    junk = write(tmp_path / "notes.txt", b"not an image")

    good = subprocess.run(
        [*manage, "import_dicom", str(shared_data / SMALL_CT)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    mixed = subprocess.run(
        [*manage, "import_dicom", str(shared_data / SMALL_CT), str(junk)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )

    assert good.returncode == 0, good.stderr
    assert good.stdout.splitlines() == [
        f"{shared_data / SMALL_CT}: stored",
        "1 files: 1 stored, 0 already present, 0 rejected",
    ]
    assert mixed.returncode == 1
    assert mixed.stdout.splitlines() == [
        f"{shared_data / SMALL_CT}: already present",
        f"{junk}: rejected: not a DICOM file (no DICM preamble)",
        "2 files: 0 stored, 1 already present, 1 rejected",
    ]
    assert "1 of 2 files were rejected" in mixed.stderr
    assert len(list((tmp_path / "data" / "files").rglob("*.dcm"))) == 1


def test_cli_reports_missing_paths_and_empty_folders(tmp_path, isolated_storage):
    (tmp_path / "empty").mkdir()
    code, lines = run_import(tmp_path / "missing.dcm", tmp_path / "empty")
    assert code == 1
    assert reports(lines) == {
        str(tmp_path / "missing.dcm"): "rejected: no such file or folder",
        str(tmp_path / "empty"): "rejected: folder contains no files",
    }
    assert_nothing_stored(isolated_storage)


# --- bad input, one case at a time, always next to a good file ----------------------------------------------


def import_with_good_file(shared_data: Path, folder: Path, bad: dict[str, bytes]) -> dict[str, str]:
    """Import ``bad`` files together with one good file; the good file must be stored, the rest rejected."""
    for name, data in bad.items():
        write(folder / name, data)
    good = write(folder / "zz_good.dcm", (shared_data / SMALL_CT).read_bytes())
    code, lines = run_import(folder)
    outcomes = reports(lines)
    assert code == 1
    assert outcomes.pop(str(good)) == STORED
    assert Instance.objects.count() == 1
    return {Path(source).name: outcome for source, outcome in outcomes.items()}


def test_non_dicom_files_are_rejected(shared_data, isolated_storage, tmp_path):
    nifti = (shared_data / "ct_totalseg/nifti/example_ct_sm.nii.gz").read_bytes()
    outcomes = import_with_good_file(
        shared_data,
        tmp_path / "in",
        {
            "empty.dcm": b"",
            "notes.txt": b"hello\n" * 100,
            "image.nii": gzip.decompress(nifti),
            "fake.dcm": b"\0" * 128 + b"DICM" + b"\xff" * 300,
        },
    )
    assert outcomes["empty.dcm"] == "rejected: not a DICOM file (no DICM preamble)"
    assert outcomes["notes.txt"] == "rejected: not a DICOM file (no DICM preamble)"
    assert outcomes["image.nii"] == "rejected: not a DICOM file (no DICM preamble)"
    assert outcomes["fake.dcm"] == "rejected: file meta information has no Transfer Syntax UID"
    assert_storage_matches_index(isolated_storage)


def _cuts(path: Path) -> dict[str, int]:
    """Cut points in a file, found with pydicom rather than with the importer's own parser."""
    data = path.read_bytes()
    ds = pydicom.dcmread(path)
    meta_end = 132 + 12 + ds.file_meta.FileMetaInformationGroupLength
    pixel = ds["PixelData"].file_tell  # where the pixel data value starts
    cuts = {
        "in the preamble": 100,
        "in the file meta information": 150,
        "right after the file meta information": meta_end,
        "in the data set header": meta_end + 40,
        "in the pixel data element header": pixel - 6,
        "at the start of the pixel data": pixel,
        "in the middle of the pixel data": (pixel + len(data)) // 2,
        "one byte short": len(data) - 1,
    }
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        fragment = pixel + 8 + struct.unpack_from("<I", data, pixel + 4)[0]  # after the basic offset table
        cuts["in the basic offset table"] = pixel + 4
        cuts["in a fragment header"] = fragment + 4
        cuts["inside the j2k codestream"] = fragment + 8 + 1000
        cuts["without the sequence delimiter"] = len(data) - 8
    return cuts


def _truncation_cases() -> list[tuple[str, str]]:
    cases = []
    for relative in (
        CT_RAW + "/CT_0270.dcm",
        CT_J2K + "/CT_0270.dcm",
        "dicom_seg_thirdparty/pydicom_data/liver_expb.dcm",
    ):
        path = DATA / relative
        # Without the shared data the cases still exist, and skip through the fixture.
        names = list(_cuts(path)) if path.exists() else ["in the middle of the pixel data"]
        cases += [(relative, name) for name in names]
    return cases


@pytest.mark.parametrize(("relative", "cut"), _truncation_cases())
def test_truncated_files_are_rejected(shared_data, isolated_storage, tmp_path, relative, cut):
    source = shared_data / relative
    data = source.read_bytes()[: _cuts(source)[cut]]

    outcomes = import_with_good_file(shared_data, tmp_path / "in", {"cut.dcm": data})

    reason = outcomes["cut.dcm"]
    if cut == "in the preamble":
        assert reason == "rejected: not a DICOM file (no DICM preamble)"
    else:
        assert reason.startswith(("rejected: truncated", "rejected: truncated or damaged")), reason
    assert_storage_matches_index(isolated_storage)


def test_truncated_deflated_file_is_rejected(shared_data, isolated_storage, tmp_path):
    data = (shared_data / "dicom_seg_thirdparty/pydicom_data/liver_deflate.dcm").read_bytes()
    outcomes = import_with_good_file(
        shared_data, tmp_path / "in", {"half.dcm": data[: len(data) // 2], "short.dcm": data[:-20]}
    )
    assert all(reason.startswith("rejected: truncated or damaged file") for reason in outcomes.values()), (
        outcomes
    )


def test_files_with_blank_uids_are_rejected(shared_data, isolated_storage):
    code, lines = run_import(shared_data / CT_BLANK)

    assert code == 1
    outcomes = reports(lines)
    assert len(outcomes) == 20
    all_four = "SOP Class UID, SOP Instance UID, Study Instance UID, Series Instance UID"
    assert set(outcomes.values()) == {f"rejected: {all_four} are missing or empty"}
    assert lines[-1] == "20 files: 0 stored, 0 already present, 20 rejected"
    assert_nothing_stored(isolated_storage)


@pytest.mark.filterwarnings("ignore:.*VR UI:UserWarning")
@pytest.mark.parametrize(
    ("keyword", "value", "reason"),
    [
        ("SOPClassUID", None, "SOP Class UID is missing or empty"),
        ("SOPInstanceUID", None, "SOP Instance UID is missing or empty"),
        ("StudyInstanceUID", None, "Study Instance UID is missing or empty"),
        ("SeriesInstanceUID", None, "Series Instance UID is missing or empty"),
        ("SeriesInstanceUID", "", "Series Instance UID is missing or empty"),
        ("StudyInstanceUID", "1.2.abc", "Study Instance UID '1.2.abc' is not a valid UID"),
        ("SOPInstanceUID", "1." + "2" * 70, "SOP Instance UID '1." + "2" * 70 + "' is not a valid UID"),
    ],
)
def test_each_required_uid_is_checked(shared_data, isolated_storage, tmp_path, keyword, value, reason):
    ds = pydicom.dcmread(shared_data / SMALL_CT)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()  # not the good file's UID
    if value is None:
        del ds[keyword]
    else:
        ds[keyword].value = value
    outcomes = import_with_good_file(shared_data, tmp_path / "in", {"bad.dcm": dicom_bytes(ds)})
    assert outcomes["bad.dcm"] == f"rejected: {reason}"
    assert_storage_matches_index(isolated_storage)


def test_uid_stored_with_different_content_is_rejected(shared_data, isolated_storage):
    assert run_import(shared_data / CT_RAW)[0] == 0
    files_before = stored_files(isolated_storage)

    code, lines = run_import(shared_data / CT_J2K)

    assert code == 1
    for source, outcome in reports(lines).items():
        uid = pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID
        assert outcome == f"rejected: SOP Instance UID {uid} is already stored with different content"
    assert stored_files(isolated_storage) == files_before
    # The first copy stays as it was.
    for path in (shared_data / CT_RAW).iterdir():
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        instance = Instance.objects.get(sop_instance_uid=uid)
        assert instance.sha256 == sha(path.read_bytes())
        assert instance.transfer_syntax_uid == pydicom.uid.ExplicitVRLittleEndian


def test_study_of_another_patient_is_rejected(shared_data, isolated_storage, tmp_path):
    assert run_import(shared_data / SMALL_CT)[0] == 0
    ds = pydicom.dcmread(shared_data / SMALL_CT)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.PatientID = "SOMEONE-ELSE"
    other = write(tmp_path / "other.dcm", dicom_bytes(ds))

    code, lines = run_import(other)

    assert code == 1
    assert reports(lines) == {
        str(other): f"rejected: study {ds.StudyInstanceUID} is stored for another Patient ID ('1CT1')"
    }
    assert Patient.objects.count() == 1
    assert Instance.objects.count() == 1
    assert_storage_matches_index(isolated_storage)


def test_dicomdir_is_rejected_with_a_clear_reason(shared_data, isolated_storage, tmp_path):
    from pydicom.fileset import FileSet

    fileset = FileSet()
    fileset.add(shared_data / SMALL_CT)
    fileset.write(tmp_path / "medium")
    code, lines = run_import(tmp_path / "medium" / "DICOMDIR")
    assert code == 1
    assert reports(lines)[str(tmp_path / "medium" / "DICOMDIR")].startswith("rejected: a DICOMDIR")
    assert_nothing_stored(isolated_storage)


# --- archives -----------------------------------------------------------------------------------------------


def test_unsafe_and_nested_zip_entries_are_rejected(shared_data, isolated_storage, tmp_path):
    good = (shared_data / SMALL_CT).read_bytes()
    other = sorted((shared_data / MR_HFS).glob("*.dcm"))
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as nested:
        nested.writestr("inner.dcm", other[0].read_bytes())
    link = zipfile.ZipInfo("link.dcm")
    link.external_attr = (0o120777 << 16) | 0  # a symbolic link entry
    entries = [
        ("ok/good.dcm", good),
        (zipfile.ZipInfo("/etc/abs.dcm"), other[1].read_bytes()),
        (zipfile.ZipInfo("C:/windows/abs.dcm"), other[2].read_bytes()),
        ("../escape.dcm", other[3].read_bytes()),
        ("ok/../../escape2.dcm", other[4].read_bytes()),
        (link, b"/etc/passwd"),
        ("nested.zip", inner.getvalue()),
        ("disguised.dcm", inner.getvalue()),
        ("compressed.dcm.gz", gzip.compress(other[5].read_bytes())),
        ("ok/", b""),  # a folder entry: nothing to report
    ]
    archive = make_zip(tmp_path / "batch.zip", entries)

    code, lines = run_import(archive)

    assert code == 1
    outcomes = {source.partition(":")[2]: outcome for source, outcome in reports(lines).items()}
    nested_reason = "rejected: archives inside archives are not opened: extract the inner archive first"
    assert outcomes == {
        "ok/good.dcm": STORED,
        "/etc/abs.dcm": "rejected: archive entry has an absolute path",
        "C:/windows/abs.dcm": "rejected: archive entry has an absolute path",
        "../escape.dcm": "rejected: archive entry path contains '..'",
        "ok/../../escape2.dcm": "rejected: archive entry path contains '..'",
        "link.dcm": "rejected: archive entry is a symbolic link",
        "nested.zip": nested_reason,
        "disguised.dcm": nested_reason,
        "compressed.dcm.gz": nested_reason,
    }
    assert Instance.objects.get().sha256 == sha(good)
    assert_storage_matches_index(isolated_storage)
    assert not (tmp_path / "escape.dcm").exists() and not (tmp_path.parent / "escape2.dcm").exists()


def test_zip_bomb_entry_is_rejected(shared_data, isolated_storage, tmp_path, settings):
    settings.ANNOVOX_MAX_FILE_BYTES = 1 << 20
    bomb = b"\0" * 128 + b"DICM" + b"\0" * (64 << 20)  # 64 MiB that deflate to about 64 kB
    archive = make_zip(
        tmp_path / "bomb.zip", [("bomb.dcm", bomb), ("good.dcm", (shared_data / SMALL_CT).read_bytes())]
    )
    assert archive.stat().st_size < 200_000

    code, lines = run_import(archive)

    assert code == 1
    limit = "over the limit of 1048576 bytes per file"
    assert reports(lines) == {
        f"{archive}:bomb.dcm": f"rejected: archive entry expands to {len(bomb)} bytes, {limit}",
        f"{archive}:good.dcm": STORED,
    }
    assert_storage_matches_index(isolated_storage)


def test_archive_that_expands_beyond_its_ratio_is_rejected(shared_data, isolated_storage, tmp_path, settings):
    """Many entries, each under the per-file limit, that together expand far more than the ratio allows."""
    settings.ANNOVOX_MAX_FILE_BYTES = 1 << 20
    settings.ANNOVOX_MAX_ZIP_RATIO = 200
    good = (shared_data / SMALL_CT).read_bytes()
    filler = b"\0" * (1 << 20)
    archive = make_zip(
        tmp_path / "wide.zip", [("good.dcm", good)] + [(f"part{i:03}.dcm", filler) for i in range(100)]
    )
    budget = 200 * archive.stat().st_size

    code, lines = run_import(archive)

    assert code == 1
    outcomes = reports(lines)
    assert outcomes.pop(f"{archive}:good.dcm") == STORED
    bomb = [name for name, reason in outcomes.items() if "zip bomb" in reason]
    assert len(bomb) == 100 - (budget - len(good)) // len(filler)
    assert outcomes[bomb[0]] == (
        f"rejected: the archive expands to more than {budget} bytes (200 times its size): "
        "refused as a possible zip bomb"
    )
    assert_storage_matches_index(isolated_storage)


def _declare_size(archive: Path, real_size: int, declared: int) -> bytes:
    """The archive with its entry's uncompressed size changed in the local header and central directory."""
    data = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(signature)
        assert struct.unpack_from("<I", data, at + offset)[0] == real_size
        struct.pack_into("<I", data, at + offset, declared)
    return bytes(data)


def test_zip_entry_whose_header_lies_about_its_size_is_rejected(shared_data, isolated_storage, tmp_path):
    real_size = 10 << 20
    archive = make_zip(tmp_path / "liar.zip", [("liar.dcm", b"\0" * real_size)])
    small = write(tmp_path / "in" / "small.zip", _declare_size(archive, real_size, 1000))
    huge = write(tmp_path / "in" / "huge.zip", _declare_size(archive, real_size, 3_000_000_000))
    good = write(tmp_path / "in" / "good.dcm", (shared_data / SMALL_CT).read_bytes())

    code, lines = run_import(tmp_path / "in")

    assert code == 1
    outcomes = reports(lines)
    assert outcomes[str(good)] == STORED
    # Declared smaller: zipfile stops at the declared size, and the CRC no longer matches.
    assert outcomes[f"{small}:liar.dcm"].startswith("rejected: damaged archive entry: Bad CRC-32")
    # Declared larger than the limit (default settings): refused before anything is inflated.
    limit = "over the limit of 2147483648 bytes per file"
    assert outcomes[f"{huge}:liar.dcm"] == f"rejected: archive entry expands to 3000000000 bytes, {limit}"
    assert_storage_matches_index(isolated_storage)


def test_damaged_and_empty_archives_are_rejected(shared_data, isolated_storage, tmp_path):
    good = (shared_data / SMALL_CT).read_bytes()
    whole = make_zip(tmp_path / "whole.zip", [("a.dcm", good)]).read_bytes()
    write(tmp_path / "in" / "cut.zip", whole[: len(whole) // 2])
    make_zip(tmp_path / "in" / "empty.zip", [])
    write(tmp_path / "in" / "cut.dcm.gz", gzip.compress(good)[:-100])
    code, lines = run_import(tmp_path / "in")
    assert code == 1
    outcomes = {Path(source).name: outcome for source, outcome in reports(lines).items()}
    assert outcomes["cut.zip"].startswith("rejected: damaged zip archive")
    assert outcomes["empty.zip"] == "rejected: zip archive contains no files"
    assert outcomes["cut.dcm.gz"].startswith("rejected: damaged gzip file")
    assert_nothing_stored(isolated_storage)


def test_sparse_segmentation_in_a_zip_is_not_mistaken_for_a_bomb(shared_data, isolated_storage, tmp_path):
    """The dcmqi SEG deflates about 390-fold: the ratio limit must not refuse a real file."""
    seg = gzip.decompress((shared_data / SEG_GZ).read_bytes())
    archive = make_zip(tmp_path / "seg.zip", [("seg.dcm", seg)])
    assert len(seg) / archive.stat().st_size > 200

    code, lines = run_import(archive, shared_data / SEG_GZ)

    assert code == 0
    assert reports(lines) == {f"{archive}:seg.dcm": STORED, str(shared_data / SEG_GZ): ALREADY_PRESENT}
    assert Instance.objects.get().sha256 == sha(seg)  # the inflated file, as it was before gzip


def test_files_over_the_size_limit_are_rejected(shared_data, isolated_storage, tmp_path, settings):
    settings.ANNOVOX_MAX_FILE_BYTES = 100_000
    big = shared_data / CT_RAW / "CT_0270.dcm"  # 529 kB
    archive = make_zip(tmp_path / "big.zip", [("big.dcm", big.read_bytes())])
    gz = write(tmp_path / "big.dcm.gz", gzip.compress(big.read_bytes()))
    small = shared_data / SMALL_CT

    code, lines = run_import(big, archive, gz, small)

    assert code == 1
    size = big.stat().st_size
    limit = "over the limit of 100000 bytes per file"
    assert reports(lines) == {
        str(big): f"rejected: file is {size} bytes, {limit}",
        f"{archive}:big.dcm": f"rejected: archive entry expands to {size} bytes, {limit}",
        str(gz): "rejected: gzip file inflates to more than the limit of 100000 bytes per file",
        str(small): STORED,
    }
    assert_storage_matches_index(isolated_storage)


# --- failures while storing ---------------------------------------------------------------------------------


def test_failed_database_insert_leaves_no_file(shared_data, isolated_storage, monkeypatch):
    data = (shared_data / SMALL_CT).read_bytes()

    def fail(*args, **kwargs):
        raise DatabaseError("disk I/O error (simulated)")

    monkeypatch.setattr(Instance, "save", fail)
    outcome = store_dicom(data, "ct.dcm")

    assert outcome.status == REJECTED
    assert outcome.reason == "could not be stored: disk I/O error (simulated)"
    assert_nothing_stored(isolated_storage)

    monkeypatch.undo()
    assert store_dicom(data, "ct.dcm").status == STORED
    assert_storage_matches_index(isolated_storage)


def test_failed_file_write_leaves_no_row(shared_data, isolated_storage, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FileSystemStorage, "save", fail)
    outcome = store_dicom((shared_data / SMALL_CT).read_bytes(), "ct.dcm")
    assert outcome.status == REJECTED
    assert "No space left on device" in outcome.reason
    assert_nothing_stored(isolated_storage)


def test_concurrent_import_of_the_same_uid_keeps_one_file(shared_data, isolated_storage, monkeypatch):
    """Another import stores the UID between our check and our insert: ours is discarded, theirs kept."""
    data = (shared_data / SMALL_CT).read_bytes()
    assert store_dicom(data).status == STORED
    real_filter = Instance.objects.filter
    calls = []

    def misses_once(*args, **kwargs):
        calls.append(kwargs)
        queryset = real_filter(*args, **kwargs)
        return queryset.none() if len(calls) == 1 else queryset

    monkeypatch.setattr(Instance.objects, "filter", misses_once)
    assert store_dicom(data, "again.dcm").status == ALREADY_PRESENT
    assert len(stored_files(isolated_storage)) == 1
    assert_storage_matches_index(isolated_storage)


def test_unreadable_source_does_not_end_the_batch(shared_data, isolated_storage):
    good = (shared_data / SMALL_CT).read_bytes()

    def broken() -> bytes:
        raise ValueError("device went away")

    sources = [importing.Source("broken", broken), *iter_sources("good.dcm", lambda: good)]
    outcomes = import_sources(sources)
    assert [(o.source, str(o)) for o in outcomes] == [
        ("broken", "rejected: cannot be read: device went away"),
        ("good.dcm", STORED),
    ]


# --- all the real data --------------------------------------------------------------------------------------


def _dicom_content(path: Path) -> bytes | None:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data if data[128:132] == b"DICM" else None


def test_every_dicom_file_in_the_shared_data_imports(shared_data, isolated_storage, tmp_path):
    """Everything but the blank-UID set and the j2k copy of the CT. Files that reuse a UID with different
    content (the data has a few: one SEG in another byte order, two SEGs sharing one UID) are rejected."""
    skip = {shared_data / CT_BLANK, shared_data / CT_J2K}
    files = [
        p
        for p in sorted(shared_data.rglob("*"))
        if p.is_file() and p.parent not in skip and _dicom_content(p) is not None
    ]
    assert len(files) > 250

    code, lines = run_import(*files)

    # What to expect, worked out with pydicom: the first file with a UID is stored, a later copy with the same
    # bytes is already present, and a later file with other bytes is a conflict.
    first: dict[str, bytes] = {}
    expected = {}
    for path in files:
        data = _dicom_content(path)
        uid = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID
        if uid not in first:
            first[uid] = data
            expected[str(path)] = STORED
        elif first[uid] == data:
            expected[str(path)] = ALREADY_PRESENT
        else:
            expected[str(path)] = f"rejected: SOP Instance UID {uid} is already stored with different content"
    conflicts = [p for p, outcome in expected.items() if outcome.startswith(REJECTED)]
    assert len(conflicts) <= 3, conflicts
    assert reports(lines) == expected
    assert code == (1 if conflicts else 0)
    assert Instance.objects.count() == len(first)
    assert_storage_matches_index(isolated_storage)
    modalities = set(Series.objects.values_list("modality", flat=True))
    assert {"CT", "MR", "PT", "SEG", "RTSTRUCT"} <= modalities


def test_files_are_kept_byte_identical_in_every_transfer_syntax(shared_data, isolated_storage):
    folder = shared_data / "dicom_seg_thirdparty/pydicom_data"
    files = sorted(folder.glob("liver_*.dcm"))
    code, lines = run_import(*files)
    assert code == 0, lines
    syntaxes = {pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID for p in files}
    assert len(syntaxes) >= 4  # big endian, JPEG 2000, RLE, deflated image frames
    assert set(Instance.objects.values_list("transfer_syntax_uid", flat=True)) == syntaxes
    assert_storage_matches_index(isolated_storage)
