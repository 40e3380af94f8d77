"""The web upload (POST /api/studies/import/) and the study list (GET /api/studies/), through the Django test
client with real files, bearer tokens and session logins."""

import gzip
import io
import zipfile
from pathlib import Path

import pydicom
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from tests.conftest import study_reader
from webapp.accounts.models import ApiToken
from webapp.studies.models import Instance, Study

pytestmark = pytest.mark.django_db

IMPORT_URL = "/api/studies/import/"
STUDIES_URL = "/api/studies/"
CT_RAW = "ct_totalseg/dicom_raw_uidfixed"
SMALL_CT = "dicom_seg_thirdparty/highdicom/ct_image.dcm"


@pytest.fixture
def user():
    return study_reader("annotator", password="a long test password")


@pytest.fixture
def token(user) -> str:
    return ApiToken.objects.issue(user, name="tests")


@pytest.fixture
def bearer(token) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.fixture
def browser(user) -> Client:
    """A signed-in browser: session cookie, and CSRF checks as in production."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def upload(path: Path, name: str | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes(), content_type="application/dicom")


def stored_files(storage: Path) -> list[Path]:
    return sorted(p for p in storage.rglob("*") if p.is_file()) if storage.exists() else []


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_mixed_batch_with_a_bearer_token(bearer, shared_data, isolated_storage):
    ct = sorted((shared_data / CT_RAW).iterdir())[:3]
    truncated = ct[0].read_bytes()[:-1000]
    archive = zip_bytes({"a/small.dcm": (shared_data / SMALL_CT).read_bytes(), "../evil.dcm": truncated})
    files = [
        *[upload(p) for p in ct],
        SimpleUploadedFile("notes.txt", b"not DICOM"),
        SimpleUploadedFile("cut.dcm", truncated),
        SimpleUploadedFile("batch.zip", archive, content_type="application/zip"),
    ]

    response = bearer.post(IMPORT_URL, {"files": files})

    assert response.status_code == 200, response.content
    body = response.json()
    outcomes = [(o["source"], o["status"], o["reason"]) for o in body["outcomes"]]
    assert outcomes[:3] == [(p.name, "stored", "") for p in ct]
    assert outcomes[3] == ("notes.txt", "rejected", "not a DICOM file (no DICM preamble)")
    assert outcomes[4][:2] == ("cut.dcm", "rejected") and outcomes[4][2].startswith("truncated")
    assert outcomes[5] == ("batch.zip:a/small.dcm", "stored", "")
    assert outcomes[6] == ("batch.zip:../evil.dcm", "rejected", "archive entry path contains '..'")
    assert body["counts"] == {"stored": 4, "already_present": 0, "rejected": 3}
    first = pydicom.dcmread(ct[0], stop_before_pixels=True)
    assert body["outcomes"][0] == {
        "source": ct[0].name,
        "status": "stored",
        "reason": "",
        "sop_instance_uid": first.SOPInstanceUID,
        "sop_class_uid": first.SOPClassUID,
        "study_instance_uid": first.StudyInstanceUID,
        "series_instance_uid": first.SeriesInstanceUID,
    }
    assert Instance.objects.count() == 4
    assert len(stored_files(isolated_storage)) == 4


def test_folder_upload_reports_relative_paths_and_is_idempotent(bearer, shared_data, isolated_storage):
    ct = sorted((shared_data / CT_RAW).iterdir())[:4]
    paths = [f"scan/{CT_RAW}/{p.name}" for p in ct]

    first = bearer.post(IMPORT_URL, {"files": [upload(p) for p in ct], "paths": paths})
    again = bearer.post(IMPORT_URL, {"files": [upload(p) for p in ct], "paths": paths})

    assert [o["source"] for o in first.json()["outcomes"]] == paths
    assert {o["status"] for o in first.json()["outcomes"]} == {"stored"}
    assert [(o["source"], o["status"]) for o in again.json()["outcomes"]] == [
        (p, "already present") for p in paths
    ]
    assert again.json()["counts"] == {"stored": 0, "already_present": 4, "rejected": 0}
    assert len(stored_files(isolated_storage)) == 4


def test_session_upload_needs_the_csrf_token(browser, shared_data, isolated_storage):
    without = browser.post(IMPORT_URL, {"files": [upload(shared_data / SMALL_CT)]})
    assert without.status_code == 403
    assert "CSRF" in without.json()["detail"]
    assert not Instance.objects.exists()

    me = browser.get("/api/me/")  # what the page loads first; it sets the CSRF cookie
    assert me.json()["username"] == "annotator"
    csrf = browser.cookies["csrftoken"].value
    with_token = browser.post(IMPORT_URL, {"files": [upload(shared_data / SMALL_CT)]}, HTTP_X_CSRFTOKEN=csrf)

    assert with_token.status_code == 200
    assert with_token.json()["counts"]["stored"] == 1


def test_upload_needs_authentication(shared_data, isolated_storage):
    anonymous = Client().post(IMPORT_URL, {"files": [upload(shared_data / SMALL_CT)]})
    wrong = Client(HTTP_AUTHORIZATION="Bearer avx_not-a-token").post(
        IMPORT_URL, {"files": [upload(shared_data / SMALL_CT)]}
    )
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"] == "Bearer"
    assert wrong.status_code == 401
    assert not Instance.objects.exists()
    assert stored_files(isolated_storage) == []


def test_upload_applies_the_size_limits(bearer, shared_data, isolated_storage, settings):
    settings.ANNOVOX_MAX_FILE_BYTES = 100_000
    big = shared_data / CT_RAW / "CT_0270.dcm"
    bomb = zip_bytes({"bomb.dcm": b"\0" * (8 << 20)})
    files = [
        upload(big),
        SimpleUploadedFile("bomb.zip", bomb),
        SimpleUploadedFile("big.dcm.gz", gzip.compress(big.read_bytes())),
        upload(shared_data / SMALL_CT),
    ]

    body = bearer.post(IMPORT_URL, {"files": files}).json()

    limit = "over the limit of 100000 bytes per file"
    assert [(o["source"], o["status"], o["reason"]) for o in body["outcomes"]] == [
        (big.name, "rejected", f"file is {big.stat().st_size} bytes, {limit}"),
        ("bomb.zip:bomb.dcm", "rejected", f"archive entry expands to {8 << 20} bytes, {limit}"),
        ("big.dcm.gz", "rejected", "gzip file inflates to more than the limit of 100000 bytes per file"),
        (SMALL_CT.rsplit("/", 1)[1], "stored", ""),
    ]
    assert len(stored_files(isolated_storage)) == 1


def test_too_many_files_or_none_get_a_clear_400(bearer, shared_data, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    files = [upload(p) for p in sorted((shared_data / CT_RAW).iterdir())[:3]]

    too_many = bearer.post(IMPORT_URL, {"files": files})
    none = bearer.post(IMPORT_URL, {"comment": "nothing"})

    assert too_many.status_code == 400
    assert too_many.json() == {"detail": "too many files in one request: send at most 2 at a time"}
    assert none.status_code == 400
    assert "no files" in none.json()["detail"]
    assert not Instance.objects.exists()


def test_study_list_with_search_and_filters(bearer, shared_data):
    sts = shared_data / "sts_ibsi/dicom/STS_001"
    files = [
        *[upload(p, f"ct{i}.dcm") for i, p in enumerate(sorted((sts / "CT/image").iterdir())[:2])],
        *[upload(p, f"mr{i}.dcm") for i, p in enumerate(sorted((sts / "MR_T1/image").iterdir())[:2])],
        upload(sorted((sts / "PET/image").iterdir())[0], "pet.dcm"),
        upload(sts / "CT/mask/RS.dcm", "rs.dcm"),
        upload(shared_data / SMALL_CT),
        *[upload(p) for p in sorted((shared_data / CT_RAW).iterdir())[:2]],
    ]
    assert bearer.post(IMPORT_URL, {"files": files}).json()["counts"]["rejected"] == 0

    everything = bearer.get(STUDIES_URL).json()
    by_uid = {study["study_instance_uid"]: study for study in everything["results"]}
    sts_uid = pydicom.dcmread(sts / "CT/image/000000.dcm", stop_before_pixels=True).StudyInstanceUID
    sts_study = by_uid[sts_uid]

    assert everything["count"] == 3
    assert [s["study_date"] for s in everything["results"]] == sorted(
        (s["study_date"] for s in everything["results"]), key=lambda d: d or "", reverse=True
    )
    assert sts_study["patient_name"] == "STS_001"
    assert sts_study["patient_id"] == "STS_001"
    assert sts_study["study_date"] == "2000-09-07"
    assert sts_study["modalities"] == ["CT", "MR", "PT", "RTSTRUCT"]
    assert sts_study["series_count"] == 4
    assert sts_study["instance_count"] == 6
    assert sts_study["study_description"] == Study.objects.get(study_instance_uid=sts_uid).study_description

    def uids(**params: str) -> set[str]:
        return {s["study_instance_uid"] for s in bearer.get(STUDIES_URL, params).json()["results"]}

    assert uids(search="sts_001") == {sts_uid}
    assert uids(search="TotalSegmentator example") == {
        pydicom.dcmread(sorted((shared_data / CT_RAW).iterdir())[0], stop_before_pixels=True).StudyInstanceUID
    }
    assert uids(search="nobody-has-this-name") == set()
    assert uids(modality="pt") == {sts_uid}
    assert len(uids(modality="CT")) == 3
    assert uids(date_from="2000-09-07", date_to="2000-09-07") == {sts_uid}
    assert sts_uid not in uids(date_from="2000-09-08") and sts_uid not in uids(date_to="2000-09-06")
    assert bearer.get(STUDIES_URL, {"date_from": "7.9.2000"}).status_code == 400
    page = bearer.get(STUDIES_URL, {"limit": 1, "offset": 1}).json()
    assert page["count"] == 3 and len(page["results"]) == 1 and page["next"] and page["previous"] is not None


def test_study_list_needs_authentication():
    assert Client().get(STUDIES_URL).status_code == 401


def test_openapi_schema_describes_the_endpoints(bearer):
    response = bearer.get("/api/schema/")
    assert response.status_code == 200
    schema = response.content.decode()
    for path in ("/api/studies/:", "/api/studies/import/:", "/api/me/:"):
        assert path in schema
    assert "multipart/form-data" in schema
