"""DICOMweb at /dicomweb/ through Django's test client, on real files from ../shared/data."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client, override_settings
from PIL import Image
from pydicom.encaps import generate_frames

from tests.conftest import study_reader
from webapp.accounts.models import ApiToken
from webapp.studies.dicomweb.wado import absolute_uris_in_text
from webapp.studies.importing import STORED, store_dicom
from webapp.studies.models import Instance, Series, Study

pytestmark = pytest.mark.django_db

CT_RAW = "ct_totalseg/dicom_raw_uidfixed"
CT_J2K = "ct_totalseg/dicom_j2k_uidfixed"
CT_BLANK = "ct_totalseg/dicom_original_blank_uids"
DCMQI = "dicom_seg_thirdparty/dcmqi/segmentations"
HIGHDICOM = "dicom_seg_thirdparty/highdicom"
PYDICOM_DATA = "dicom_seg_thirdparty/pydicom_data"
STS_PET = "sts_ibsi/dicom/STS_001/PET"
J2K_SYNTAX = "1.2.840.10008.1.2.4.90"
NATIVE = "1.2.840.10008.1.2.1"
OCTET_STREAM = 'multipart/related; type="application/octet-stream"'
# A small archive with several patients, dates, accession numbers and modalities.
QIDO_SET = [
    f"{DCMQI}/23x38x3",
    f"{DCMQI}/ct-3slice/01.dcm",
    f"{HIGHDICOM}/ct_image.dcm",
    f"{HIGHDICOM}/seg_image_ct_binary.dcm",
    f"{HIGHDICOM}/seg_image_sm_numbers.dcm",
    *(f"{STS_PET}/image/00000{n}.dcm" for n in range(3)),
]


# --- helpers ------------------------------------------------------------------------------------------------


def read(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def dicom_files(root: Path, *names: str) -> list[Path]:
    files = []
    for name in names:
        path = root / name
        found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        files += [p for p in found if read(p)[128:132] == b"DICM"]
    return files


def store(root: Path, *names: str) -> list[Path]:
    files = dicom_files(root, *names)
    for path in files:
        outcome = store_dicom(read(path), str(path))
        assert outcome.status == STORED, (path, outcome)
    return files


def body_of(response) -> bytes:  # type: ignore[no-untyped-def]
    if not response.streaming:
        return response.content

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(collect)()


def parts_of(response) -> list[tuple[str, bytes]]:  # type: ignore[no-untyped-def]
    """(Content-Type, body) of each part of a multipart/related response."""
    media_type, _, params = response["Content-Type"].partition(";")
    assert media_type == "multipart/related", response["Content-Type"]
    boundary = re.search(r'boundary="?([^";]+)', params).group(1).encode()
    pieces = body_of(response).split(b"--" + boundary)
    assert pieces[-1].strip() == b"--"
    parts = []
    for piece in pieces[1:-1]:
        head, _, content = piece.partition(b"\r\n\r\n")
        assert content.endswith(b"\r\n")
        content_type = re.search(rb"Content-Type: *([^\r\n]+)", head, re.IGNORECASE).group(1).decode()
        parts.append((content_type, content[:-2]))
    return parts


def values(dataset: dict, tag: str) -> list:
    return dataset.get(tag, {}).get("Value", [])


def uids(results: list[dict], tag: str = "0020000D") -> set[str]:
    return {values(r, tag)[0] for r in results}


def dataset(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(read(path)))


def instance_url(ds: pydicom.Dataset) -> str:
    return (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )


@pytest.fixture
def token(django_user_model) -> str:  # type: ignore[no-untyped-def]
    user = study_reader("reader", password="a-long-password-1")
    return ApiToken.objects.issue(user)


@pytest.fixture
def api(client: Client, token: str) -> Client:
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def qido_set(shared_data: Path) -> list[Path]:
    return store(shared_data, *QIDO_SET)


def search(api: Client, url: str, **params: str | list[str]) -> list[dict]:
    response = api.get(url, params)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/dicom+json"
    return json.loads(response.content)


# --- authentication and CORS --------------------------------------------------------------------------------

ENDPOINTS = [
    "/dicomweb/studies",
    "/dicomweb/series",
    "/dicomweb/instances",
    "/dicomweb/studies/1.2.3",
    "/dicomweb/studies/1.2.3/metadata",
    "/dicomweb/studies/1.2.3/series",
    "/dicomweb/studies/1.2.3/series/4.5",
    "/dicomweb/studies/1.2.3/series/4.5/metadata",
    "/dicomweb/studies/1.2.3/series/4.5/instances",
    "/dicomweb/studies/1.2.3/series/4.5/instances/6.7",
    "/dicomweb/studies/1.2.3/series/4.5/instances/6.7/metadata",
    "/dicomweb/studies/1.2.3/series/4.5/instances/6.7/frames/1",
    "/dicomweb/studies/1.2.3/series/4.5/instances/6.7/frames/1/rendered",
    "/dicomweb/studies/1.2.3/series/4.5/instances/6.7/rendered",
    "/dicomweb/studies/1.2.3/series/4.5/instances/6.7/bulkdata/7FE00010",
]


@pytest.mark.parametrize("url", ENDPOINTS)
def test_every_endpoint_needs_authentication(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in response.json()["detail"]


def test_users_without_the_view_permission_get_403(client: Client, django_user_model) -> None:  # type: ignore[no-untyped-def]
    outsider = django_user_model.objects.create_user("outsider", password="a-long-password-1")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.objects.issue(outsider)}"}
    for url in ("/dicomweb/studies", "/api/studies/"):
        response = client.get(url, **headers)
        assert response.status_code == 403, url
        assert "studies.view_series" in response.content.decode()
    client.force_login(outsider)
    assert client.get("/dicomweb/studies").status_code == 403


def test_anonymous_stow_gets_401_not_a_csrf_error(client: Client) -> None:
    response = client.post("/dicomweb/studies", b"", content_type="multipart/related; boundary=x")
    assert response.status_code == 401


def test_bearer_token_and_session_login_are_accepted(client: Client, token: str, django_user_model) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/dicomweb/studies", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    assert client.get("/dicomweb/studies", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    client.force_login(django_user_model.objects.get(username="reader"))
    assert client.get("/dicomweb/studies").status_code == 200


def test_session_stow_needs_the_csrf_token(shared_data: Path, django_user_model) -> None:  # type: ignore[no-untyped-def]
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(study_reader("annotator", password="a-long-password-1"))
    body, content_type = multipart_request([read(dicom_files(shared_data, CT_RAW)[0])])
    assert browser.post("/dicomweb/studies", body, content_type=content_type).status_code == 403


@override_settings(CORS_ALLOWED_ORIGINS=["https://viewer.example"])
def test_cors_preflight_and_response_headers(api: Client) -> None:
    preflight = api.options(
        "/dicomweb/studies/1.2/series/3.4/instances/5.6/frames/1",
        HTTP_ORIGIN="https://viewer.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, accept",
    )
    assert preflight.status_code == 200
    assert preflight["Access-Control-Allow-Origin"] == "https://viewer.example"
    assert "authorization" in preflight["Access-Control-Allow-Headers"]
    response = api.get("/dicomweb/studies", HTTP_ORIGIN="https://viewer.example")
    assert response["Access-Control-Allow-Origin"] == "https://viewer.example"
    other = api.get("/dicomweb/studies", HTTP_ORIGIN="https://elsewhere.example")
    assert "Access-Control-Allow-Origin" not in other


# --- QIDO-RS ------------------------------------------------------------------------------------------------


def test_empty_database_answers_an_empty_list(api: Client) -> None:
    assert search(api, "/dicomweb/studies") == []


def test_study_results_have_the_standard_attributes_and_counts(api: Client, qido_set: list[Path]) -> None:
    results = search(api, "/dicomweb/studies")
    assert len(results) == Study.objects.count() == 6
    for result in results:
        for tag, vr in {
            "00080020": "DA",
            "00080030": "TM",
            "00080050": "SH",
            "00080056": "CS",
            "00080061": "CS",
            "00080090": "PN",
            "00081190": "UR",
            "00100010": "PN",
            "00100020": "LO",
            "00100030": "DA",
            "00100040": "CS",
            "0020000D": "UI",
            "00200010": "SH",
            "00201206": "IS",
            "00201208": "IS",
        }.items():
            assert result[tag]["vr"] == vr, tag
        study = Study.objects.get(study_instance_uid=values(result, "0020000D")[0])
        assert values(result, "00201206") == [study.series.count()]
        assert values(result, "00201208") == [Instance.objects.filter(series__study=study).count()]
        assert values(result, "00081190") == [
            f"http://testserver/dicomweb/studies/{study.study_instance_uid}"
        ]
    tiny = next(r for r in results if values(r, "00100020") == ["123456"])
    assert values(tiny, "00080061") == ["CT", "SEG"]
    assert values(tiny, "00100010") == [{"Alphabetic": "Anonymous"}]
    assert values(tiny, "00080020") == ["20060101"]


def test_patient_id_matching_with_keyword_or_tag_and_wildcards(api: Client, qido_set: list[Path]) -> None:
    assert len(search(api, "/dicomweb/studies", PatientID="123456")) == 1
    assert search(api, "/dicomweb/studies", **{"00100020": "123456"}) == search(
        api, "/dicomweb/studies", PatientID="123456"
    )
    assert {values(r, "00100020")[0] for r in search(api, "/dicomweb/studies", PatientID="*0*")} == {
        "99000",
        "77654033",
        "AA01",
        "STS_001",
    }
    assert search(api, "/dicomweb/studies", PatientID="12345") == []
    assert search(api, "/dicomweb/studies", PatientID="sts_001") == []  # case-sensitive, as in Orthanc


def test_patient_name_wildcards_ignore_case(api: Client, qido_set: list[Path]) -> None:
    def names(value: str) -> set[str]:
        results = search(api, "/dicomweb/studies", PatientName=value)
        return {values(r, "00100010")[0]["Alphabetic"] for r in results}

    assert names("doe*") == {"Doe^Archibald"}
    assert names("*PATIENT") == {"Test^Patient"}
    assert names("?nonymous") == {"Anonymous"}
    assert names("ANONYMOUS") == {"Anonymous"}
    assert names("Anonymou") == set()
    assert len(search(api, "/dicomweb/studies", PatientName="*")) == 6  # universal matching


def test_study_date_single_and_ranges(api: Client, qido_set: list[Path]) -> None:
    def dates(value: str) -> set[str]:
        return {values(r, "00080020")[0] for r in search(api, "/dicomweb/studies", StudyDate=value)}

    assert dates("20060101") == {"20060101"}
    assert dates("20030101-20061231") == {"20030417", "20040119", "20060101"}
    assert dates("-20031231") == {"19950903", "20000907", "20030417"}
    assert dates("20040119-") == {"20040119", "20060101", "20190604"}
    assert dates("19990101") == set()


def test_modalities_accession_and_uid_lists(api: Client, qido_set: list[Path]) -> None:
    with_seg = search(api, "/dicomweb/studies", ModalitiesInStudy="SEG")
    assert {values(r, "00100020")[0] for r in with_seg} == {"123456", "77654033", "AA01"}
    assert {
        values(r, "00100020")[0] for r in search(api, "/dicomweb/studies", ModalitiesInStudy="PT,CT")
    } == {
        "123456",
        "99000",
        "1CT1",
        "STS_001",
    }
    assert [values(r, "00100020") for r in search(api, "/dicomweb/studies", AccessionNumber="03086212")] == [
        ["99000"]
    ]
    two = sorted(Study.objects.values_list("study_instance_uid", flat=True))[:2]
    assert uids(search(api, "/dicomweb/studies", StudyInstanceUID=",".join(two))) == set(two)
    assert uids(search(api, "/dicomweb/studies", StudyInstanceUID="\\".join(two))) == set(two)
    assert uids(search(api, "/dicomweb/studies", StudyInstanceUID=two)) == set(two)  # repeated parameter


def test_series_search_and_matching(api: Client, qido_set: list[Path]) -> None:
    segs = search(api, "/dicomweb/series", Modality="SEG")
    assert len(segs) == Series.objects.filter(modality="SEG").count() == 3
    for result in segs:
        assert values(result, "00080060") == ["SEG"]
        # Across studies, the study attributes come with each series.
        assert result["00100020"]["vr"] == "LO" and result["0020000D"]["vr"] == "UI"
    study = Study.objects.get(patient__patient_id="123456")
    in_study = search(api, f"/dicomweb/studies/{study.study_instance_uid}/series")
    assert {values(r, "00080060")[0] for r in in_study} == {"CT", "SEG"}
    assert (
        sum(values(r, "00201209")[0] for r in in_study)
        == Instance.objects.filter(series__study=study).count()
    )
    ct = next(r for r in in_study if values(r, "00080060") == ["CT"] and values(r, "00201209") == [3])
    series_uid = values(ct, "0020000E")[0]
    assert values(ct, "00081190") == [
        f"http://testserver/dicomweb/studies/{study.study_instance_uid}/series/{series_uid}"
    ]
    assert uids(search(api, "/dicomweb/series", SeriesInstanceUID=series_uid), "0020000E") == {series_uid}
    numbered = search(api, "/dicomweb/series", SeriesNumber="300")
    assert numbered and all(values(r, "00200011") == [300] for r in numbered)


def test_instance_search_and_matching(api: Client, qido_set: list[Path]) -> None:
    instance = Instance.objects.get(series__modality="CT", number_of_frames=3)  # the dcmqi multi-frame CT
    series, study = instance.series, instance.series.study
    url = f"/dicomweb/studies/{study.study_instance_uid}/series/{series.series_instance_uid}/instances"
    (result,) = search(api, url)
    assert values(result, "00080018") == [instance.sop_instance_uid]
    assert values(result, "00280008") == [3]
    assert values(result, "00280010") == [instance.rows] and result["00280010"]["vr"] == "US"
    assert values(result, "00280100") == [16]
    assert values(result, "00081190") == [f"http://testserver{url}/{instance.sop_instance_uid}"]
    assert uids(search(api, "/dicomweb/instances", SOPInstanceUID=instance.sop_instance_uid), "00080018") == {
        instance.sop_instance_uid
    }
    in_study = search(api, f"/dicomweb/studies/{study.study_instance_uid}/instances", InstanceNumber="2")
    assert all(values(r, "00200013") == [2] for r in in_study) and in_study
    assert values(in_study[0], "0008103E")  # series attributes come along within a study
    pets = search(api, "/dicomweb/instances", Modality="PT")
    assert len(pets) == 3
    seg_class = "1.2.840.10008.5.1.4.1.1.66.4"
    assert len(search(api, "/dicomweb/instances", SOPClassUID=seg_class)) == 3


def test_includefield_and_all(api: Client, qido_set: list[Path]) -> None:
    plain = search(api, "/dicomweb/studies", PatientID="STS_001")[0]
    assert "00180050" not in plain
    included = search(
        api,
        "/dicomweb/studies",
        PatientID="STS_001",
        includefield=["00180050,Manufacturer", "BodyPartExamined"],
    )[0]
    assert included["00180050"]["vr"] == "DS" and included["00080070"]["vr"] == "LO"
    everything = search(api, "/dicomweb/studies", PatientID="STS_001", includefield="all")[0]
    assert set(included) <= set(everything) and len(everything) > 40
    assert all(e["vr"] != "SQ" and "BulkDataURI" not in e for e in everything.values())
    instance = search(api, "/dicomweb/instances", Modality="PT", limit="1", includefield="all")[0]
    assert "00280030" in instance  # pixel spacing, from the instance's own metadata


def test_limit_and_offset(api: Client, qido_set: list[Path]) -> None:
    every = search(api, "/dicomweb/instances")
    assert len(every) == Instance.objects.count()
    assert search(api, "/dicomweb/instances", limit="10") == every[:10]
    assert search(api, "/dicomweb/instances", limit="4", offset="15") == every[15:19]
    assert search(api, "/dicomweb/instances", offset=str(len(every))) == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "-1"}, "limit"),
        ({"offset": "many"}, "offset"),
        ({"Colour": "red"}, "unknown query parameter"),
        ({"includefield": "NoSuchThing"}, "includefield"),
        ({"StudyDate": "2006"}, "not a date"),
        ({"StudyDate": "20061301"}, "not a date"),
        ({"StudyDate": "-"}, "range"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"),
    ],
)
def test_bad_query_parameters_get_400(api: Client, params: dict, message: str) -> None:
    response = api.get("/dicomweb/studies", params)
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_bad_number_gets_400_and_unsupported_keys_a_warning(api: Client, qido_set: list[Path]) -> None:
    assert api.get("/dicomweb/series", {"SeriesNumber": "two"}).status_code == 400
    response = api.get("/dicomweb/studies", {"Modality": "CT"})
    assert response.status_code == 200 and len(response.json()) == 6
    assert response["Warning"].startswith("299 ") and "Modality" in response["Warning"]
    assert api.get("/dicomweb/studies", HTTP_ACCEPT="application/dicom+xml").status_code == 406


# --- WADO-RS: retrieve, metadata, bulk data -----------------------------------------------------------------


def test_retrieve_returns_the_stored_files_unchanged(api: Client, shared_data: Path) -> None:
    files = store(shared_data, f"{CT_J2K}/CT_0267.dcm", f"{CT_J2K}/CT_0268.dcm", f"{DCMQI}/23x38x3")
    by_sop = {str(dataset(p).SOPInstanceUID): read(p) for p in files}
    ds = dataset(files[0])
    study_url = f"/dicomweb/studies/{ds.StudyInstanceUID}"
    study_parts = parts_of(api.get(study_url))
    assert sorted(data for _, data in study_parts) == sorted(read(p) for p in files[:2])
    assert {ctype for ctype, _ in study_parts} == {f"application/dicom; transfer-syntax={J2K_SYNTAX}"}
    series_parts = parts_of(api.get(f"{study_url}/series/{ds.SeriesInstanceUID}"))
    assert len(series_parts) == 2
    response = api.get(instance_url(ds), HTTP_ACCEPT='multipart/related; type="application/dicom"')
    assert response["Content-Type"].startswith('multipart/related; type="application/dicom"; boundary=')
    assert [data for _, data in parts_of(response)] == [by_sop[str(ds.SOPInstanceUID)]]
    tiny = dataset(files[2])
    tiny_parts = parts_of(api.get(f"/dicomweb/studies/{tiny.StudyInstanceUID}", HTTP_ACCEPT="*/*"))
    assert sorted(data for _, data in tiny_parts) == sorted(read(p) for p in files[2:])


def test_retrieve_errors(api: Client, shared_data: Path) -> None:
    ds = dataset(store(shared_data, f"{CT_RAW}/CT_0267.dcm")[0])
    for url in (
        "/dicomweb/studies/1.2.3",
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/1.2.3",
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/1.2.3",
        f"/dicomweb/studies/1.2.3/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
        "/dicomweb/studies/1.2.3/metadata",
    ):
        response = api.get(url)
        assert response.status_code == 404, url
        assert "1.2.3" in response.json()["detail"]
    other_syntax = f'multipart/related; type="application/dicom"; transfer-syntax={J2K_SYNTAX}'
    response = api.get(instance_url(ds), HTTP_ACCEPT=other_syntax)
    assert response.status_code == 406 and "transfer-syntax=*" in response.json()["detail"]
    assert api.get(instance_url(ds), HTTP_ACCEPT="image/png").status_code == 406
    assert api.delete(instance_url(ds)).status_code == 405


def test_metadata_refers_to_bulk_data_and_matches_the_stored_json(api: Client, shared_data: Path) -> None:
    files = store(shared_data, *(f"{CT_RAW}/CT_02{n}.dcm" for n in (67, 68, 69)))
    ds = dataset(files[0])
    series_url = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    response = api.get(f"{series_url}/metadata")
    assert response["Content-Type"] == "application/dicom+json"
    metadata = response.json()
    assert len(metadata) == 3
    first = next(m for m in metadata if values(m, "00080018") == [ds.SOPInstanceUID])
    stored = Instance.objects.get(sop_instance_uid=ds.SOPInstanceUID).metadata
    assert set(first) == set(stored)
    assert all(first[t] == stored[t] for t in stored if "BulkDataURI" not in stored[t])
    pixel_uri = first["7FE00010"]["BulkDataURI"]
    assert pixel_uri == f"http://testserver{instance_url(ds)}/bulkdata/7FE00010"
    assert all("InlineBinary" not in m["7FE00010"] for m in metadata)
    (part,) = parts_of(api.get(pixel_uri.removeprefix("http://testserver")))
    assert part == (f"application/octet-stream; transfer-syntax={NATIVE}", ds.PixelData)
    private = first["00291010"]["BulkDataURI"].removeprefix("http://testserver")
    assert parts_of(api.get(private)) == [("application/octet-stream", ds[0x00291010].value)]
    assert len(api.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/metadata").json()) == 3
    (one,) = api.get(f"{instance_url(ds)}/metadata").json()
    assert one == first
    assert api.get(f"{instance_url(ds)}/bulkdata/00431029").status_code == 404


def test_bulk_data_uris_in_any_json_spacing() -> None:
    url = "https://pacs.example/dicomweb/studies/1/series/2/instances/3"
    for text in (
        '{"a": {"vr": "OB", "BulkDataURI": "bulkdata/00291010"}}',
        '{"a":{"vr":"OB","BulkDataURI":"bulkdata/00291010"}}',
    ):
        assert json.loads(absolute_uris_in_text(text, url))["a"]["BulkDataURI"] == f"{url}/bulkdata/00291010"


def test_public_url_setting_sets_the_base_of_urls(api: Client, shared_data: Path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ANNOVOX_PUBLIC_URL = "https://annovox.example.org"
    ds = dataset(store(shared_data, f"{CT_RAW}/CT_0267.dcm")[0])
    (study,) = search(api, "/dicomweb/studies")
    assert values(study, "00081190") == [
        f"https://annovox.example.org/dicomweb/studies/{ds.StudyInstanceUID}"
    ]
    (metadata,) = api.get(f"{instance_url(ds)}/metadata").json()
    assert (
        metadata["7FE00010"]["BulkDataURI"]
        == f"https://annovox.example.org{instance_url(ds)}/bulkdata/7FE00010"
    )


def test_small_inline_pixel_data_is_still_bulk_data_in_metadata(api: Client, shared_data: Path) -> None:
    (path,) = store(shared_data, f"{HIGHDICOM}/seg_image_ct_binary.dcm")
    ds = dataset(path)
    assert "InlineBinary" in Instance.objects.get().metadata["7FE00010"]
    (metadata,) = api.get(f"{instance_url(ds)}/metadata").json()
    assert metadata["7FE00010"]["BulkDataURI"].endswith(f"{instance_url(ds)}/bulkdata/7FE00010")
    (part,) = parts_of(api.get(f"{instance_url(ds)}/bulkdata/7FE00010"))
    assert part[1] == ds.PixelData


# --- WADO-RS: frames and rendered ---------------------------------------------------------------------------


def test_native_frame_is_the_stored_pixel_data(api: Client, shared_data: Path) -> None:
    (path,) = store(shared_data, f"{CT_RAW}/CT_0270.dcm")
    ds = dataset(path)
    for accept in (None, 'multipart/related; type="application/octet-stream"; transfer-syntax=*'):
        headers = {"HTTP_ACCEPT": accept} if accept else {}
        response = api.get(f"{instance_url(ds)}/frames/1", **headers)
        assert response["Content-Type"].startswith('multipart/related; type="application/octet-stream"')
        assert parts_of(response) == [(f"application/octet-stream; transfer-syntax={NATIVE}", ds.PixelData)]


def test_j2k_frames_as_stored_or_decompressed(api: Client, shared_data: Path) -> None:
    (path,) = store(shared_data, f"{CT_J2K}/CT_0270.dcm")
    ds = dataset(path)
    raw = dataset(shared_data / CT_RAW / "CT_0270.dcm")
    url = f"{instance_url(ds)}/frames/1"
    (stored,) = generate_frames(ds.PixelData, number_of_frames=1)

    as_stored = api.get(
        url, HTTP_ACCEPT='multipart/related; type="application/octet-stream"; transfer-syntax=*'
    )
    assert parts_of(as_stored) == [(f"application/octet-stream; transfer-syntax={J2K_SYNTAX}", stored)]
    as_jp2 = api.get(url, HTTP_ACCEPT='multipart/related; type="image/jp2"')
    assert as_jp2["Content-Type"].startswith('multipart/related; type="image/jp2"')
    assert parts_of(as_jp2) == [(f"image/jp2; transfer-syntax={J2K_SYNTAX}", stored)]
    decompressed = api.get(url, HTTP_ACCEPT='multipart/related; type="application/octet-stream"')
    assert parts_of(decompressed) == [(f"application/octet-stream; transfer-syntax={NATIVE}", raw.PixelData)]
    anything = api.get(url)  # no Accept header: */*, served as stored and labelled
    assert parts_of(anything) == [(f"image/jp2; transfer-syntax={J2K_SYNTAX}", stored)]
    assert api.get(url, HTTP_ACCEPT='multipart/related; type="image/jpeg"').status_code == 406


def test_multi_frame_seg_frames(api: Client, shared_data: Path) -> None:
    names = ["liver.dcm", "liver_nonbyte_aligned.dcm", "liver_rle.dcm", "liver_deflate.dcm", "liver_j2k.dcm"]
    paths = store(shared_data, *(f"{PYDICOM_DATA}/{name}" for name in names[1:]))
    reference = dataset(shared_data / PYDICOM_DATA / "liver_nonbyte_aligned.dcm").pixel_array
    expected = [np.packbits(reference[i].ravel(), bitorder="little").tobytes() for i in range(3)]
    aligned = dataset(shared_data / PYDICOM_DATA / names[0]).pixel_array
    for path in paths:
        ds = dataset(path)
        response = api.get(f"{instance_url(ds)}/frames/3,1", HTTP_ACCEPT=OCTET_STREAM)
        assert response.status_code == 200, (path.name, response.content[:300])
        frames = [data for _, data in parts_of(response)]
        if ds.Rows == 510:
            assert frames == [expected[2], expected[0]], path.name
        else:
            assert frames == [np.packbits(aligned[i].ravel(), bitorder="little").tobytes() for i in (2, 0)]
    nonbyte = dataset(paths[0])
    response = api.get(f"{instance_url(nonbyte)}/frames/4")
    assert response.status_code == 404 and "3 frame" in response.json()["detail"]
    assert api.get(f"{instance_url(nonbyte)}/frames/0").status_code == 400
    assert api.get(f"{instance_url(nonbyte)}/frames/1,x").status_code == 400


# --- frames served without Django's request handler (webapp.studies.dicomweb.frame_server) -----------------


def asgi_get(path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """A GET through the ASGI application that Daphne serves, as status, headers and body.

    Like Django's test client, it keeps the request signals from closing the test's database connection."""
    from webapp.asgi import application

    raw_headers = [(b"host", b"testserver"), *((k.lower().encode(), v.encode()) for k, v in headers.items())]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }  # fmt: skip
    messages: list[dict] = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict:
        if requests:
            return requests.pop()
        await asyncio.Event().wait()  # the client stays connected; the server cancels this when it is done
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        messages.append(message)

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        async_to_sync(application)(scope, receive, send)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    start = messages[0]
    answer_headers = {name.decode().lower(): value.decode() for name, value in start["headers"]}
    return start["status"], answer_headers, b"".join(m.get("body", b"") for m in messages[1:])


def test_frames_without_the_request_handler_match_the_view(
    api: Client, shared_data: Path, token: str, django_user_model
) -> None:  # type: ignore[no-untyped-def]
    paths = store(shared_data, f"{CT_RAW}/CT_0270.dcm", f"{PYDICOM_DATA}/liver_rle.dcm")
    browser = Client()
    browser.force_login(django_user_model.objects.get(username="reader"))
    session = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"
    for path, frames in zip(paths, ("1", "3,1"), strict=True):
        url = f"{instance_url(dataset(path))}/frames/{frames}"
        expected = api.get(url, HTTP_ACCEPT=OCTET_STREAM)
        for credentials in ({"Authorization": f"Bearer {token}"}, {"Cookie": session}):
            status, headers, body = asgi_get(url, {"Accept": OCTET_STREAM, **credentials})
            assert status == 200
            assert headers["content-length"] == str(len(body))
            assert headers["x-content-type-options"] == "nosniff"
            boundary = headers["content-type"].split("boundary=")[1].strip('"')
            expected_boundary = expected["Content-Type"].split("boundary=")[1].strip('"')
            assert body == expected.content.replace(expected_boundary.encode(), boundary.encode())
    browser.logout()  # forgets the remembered session user at once
    assert asgi_get(url, {"Accept": OCTET_STREAM, "Cookie": session})[0] == 401


def test_frames_without_the_request_handler_refuse_like_the_view(token: str, shared_data: Path) -> None:
    (path,) = store(shared_data, f"{CT_RAW}/CT_0270.dcm")
    url = f"{instance_url(dataset(path))}/frames/1"
    status, headers, body = asgi_get(url, {})
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert asgi_get(url, {"Authorization": "Bearer wrong"})[0] == 401
    assert asgi_get(url, {"Cookie": f"{settings.SESSION_COOKIE_NAME}=no-such-session"})[0] == 401
    status, _, body = asgi_get(url.replace("/frames/1", "/frames/2"), {"Authorization": f"Bearer {token}"})
    assert status == 404 and b"1 frame" in body
    assert asgi_get(url, {"Authorization": f"Bearer {token}", "Accept": "image/png"})[0] == 406


@override_settings(CORS_ALLOWED_ORIGINS=["https://viewer.example"])
def test_cross_origin_frames_go_through_django_for_cors() -> None:
    url = "/dicomweb/studies/1.2/series/3.4/instances/5.6/frames/1"
    status, headers, _ = asgi_get(url, {"Origin": "https://viewer.example"})
    assert status == 401
    assert headers["access-control-allow-origin"] == "https://viewer.example"


def test_many_frames_of_a_large_seg(api: Client, shared_data: Path) -> None:
    (path,) = store(shared_data, "ct_totalseg/seg_dcmqi/totalseg_example_seg_dcmqi_aligned.dcm.gz")
    ds = dataset(path)
    picks = [1, 2, 260, 519, 520]
    response = api.get(f"{instance_url(ds)}/frames/{','.join(map(str, picks))}")
    frame_bytes = ds.Rows * ds.Columns // 8
    assert [data for _, data in parts_of(response)] == [
        ds.PixelData[(n - 1) * frame_bytes : n * frame_bytes] for n in picks
    ]


def test_rendered_png_jpeg_viewport_and_window(api: Client, shared_data: Path) -> None:
    ct, seg = store(shared_data, f"{CT_J2K}/CT_0270.dcm", f"{HIGHDICOM}/seg_image_ct_binary_overlap.dcm")
    url = instance_url(dataset(ct))
    response = api.get(f"{url}/rendered")
    assert response["Content-Type"] == "image/png"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.size == (512, 512) and picture.mode == "L"
    assert 0 < np.asarray(picture).mean() < 255
    thumbnail = Image.open(io.BytesIO(api.get(f"{url}/rendered", {"viewport": "128,128"}).content))
    assert thumbnail.size == (128, 128)
    jpeg = api.get(f"{url}/frames/1/rendered", HTTP_ACCEPT="image/jpeg")
    assert jpeg["Content-Type"] == "image/jpeg" and Image.open(io.BytesIO(jpeg.content)).format == "JPEG"
    narrow = np.asarray(Image.open(io.BytesIO(api.get(f"{url}/rendered", {"window": "40,80"}).content)))
    wide = np.asarray(Image.open(io.BytesIO(api.get(f"{url}/rendered", {"window": "40,4000"}).content)))
    assert (narrow == 255).sum() > (wide == 255).sum()
    seg_url = instance_url(dataset(seg))
    frames = [
        np.asarray(Image.open(io.BytesIO(api.get(f"{seg_url}/frames/{n}/rendered").content))) for n in (1, 2)
    ]
    assert all(set(np.unique(f)) <= {0, 255} for f in frames)
    assert api.get(f"{url}/rendered", HTTP_ACCEPT="image/gif").status_code == 406
    assert api.get(f"{url}/rendered", {"viewport": "0,10"}).status_code == 400


def test_frames_of_a_non_image_are_404(api: Client, shared_data: Path) -> None:
    (path,) = store(shared_data, "dicom_seg_thirdparty/dcmqi/sr-example/sr.dcm")
    response = api.get(f"{instance_url(dataset(path))}/frames/1")
    assert response.status_code == 404 and "no pixel data" in response.json()["detail"]


# --- STOW-RS ------------------------------------------------------------------------------------------------


def multipart_request(parts: list[bytes], part_type: str = "application/dicom") -> tuple[bytes, str]:
    boundary = "stow-test-boundary"
    body = b"".join(
        b"--" + boundary.encode() + f"\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
        for part in parts
    )
    return (
        body + f"--{boundary}--\r\n".encode(),
        f'multipart/related; type="application/dicom"; boundary={boundary}',
    )


def stow(api: Client, parts: list[bytes], url: str = "/dicomweb/studies"):  # type: ignore[no-untyped-def]
    body, content_type = multipart_request(parts)
    return api.post(url, body, content_type=content_type, HTTP_ACCEPT="application/dicom+json")


def test_stow_stores_every_part(api: Client, shared_data: Path) -> None:
    files = dicom_files(shared_data, f"{CT_RAW}/CT_0267.dcm", f"{CT_RAW}/CT_0268.dcm", f"{DCMQI}/liver.dcm")
    response = stow(api, [read(p) for p in files])
    assert response.status_code == 200
    result = response.json()
    referenced = values(result, "00081199")
    assert len(referenced) == 3 and "00081198" not in result
    assert result["00081190"] == {"vr": "UR"}  # two studies: no single study URL
    for path, item in zip(files, referenced, strict=True):
        ds = dataset(path)
        assert values(item, "00081155") == [ds.SOPInstanceUID]
        assert values(item, "00081150") == [ds.SOPClassUID]
        assert values(item, "00081190") == [f"http://testserver{instance_url(ds)}"]
        assert parts_of(api.get(values(item, "00081190")[0].removeprefix("http://testserver")))[0][1] == read(
            path
        )
    again = stow(api, [read(files[0])])  # already present counts as success
    assert again.status_code == 200
    assert values(again.json(), "00081190") == [
        f"http://testserver/dicomweb/studies/{dataset(files[0]).StudyInstanceUID}"
    ]


def test_stow_partial_failure_gives_202_with_reasons(api: Client, shared_data: Path) -> None:
    good = read(shared_data / CT_RAW / "CT_0267.dcm")
    blank = read(dicom_files(shared_data, CT_BLANK)[0])
    response = stow(api, [good, blank, b"not a DICOM file at all"])
    assert response.status_code == 202
    result = response.json()
    assert len(values(result, "00081199")) == 1
    failed = values(result, "00081198")
    assert [values(f, "00081197") for f in failed] == [[0xC000], [0xC000]]
    assert "SOP Instance UID" in values(failed[0], "00000902")[0]
    assert "not a DICOM file" in values(failed[1], "00000902")[0]
    assert failed[0]["00081155"] == {"vr": "UI"}
    assert Instance.objects.count() == 1


def test_stow_conflict_and_study_mismatch_give_409(api: Client, shared_data: Path) -> None:
    store(shared_data, f"{CT_RAW}/CT_0267.dcm")
    response = stow(api, [read(shared_data / CT_J2K / "CT_0267.dcm")])
    assert response.status_code == 409
    (failed,) = values(response.json(), "00081198")
    assert values(failed, "00081197") == [0x0111]
    assert "already stored with different content" in values(failed, "00000902")[0]
    other = read(shared_data / DCMQI / "liver.dcm")
    mismatch = stow(api, [other], url="/dicomweb/studies/1.2.3.4")
    assert mismatch.status_code == 409
    (failed,) = values(mismatch.json(), "00081198")
    assert values(failed, "00081197") == [0xC409] and "does not match" in values(failed, "00000902")[0]
    matching = stow(
        api, [other], url=f"/dicomweb/studies/{dataset(shared_data / DCMQI / 'liver.dcm').StudyInstanceUID}"
    )
    assert matching.status_code == 200


def test_stow_rejects_malformed_requests(api: Client, shared_data: Path) -> None:
    data = read(shared_data / CT_RAW / "CT_0267.dcm")
    body, content_type = multipart_request([data])
    assert api.post("/dicomweb/studies", body, content_type="application/dicom").status_code == 415
    xml = content_type.replace("application/dicom", "application/dicom+xml")
    assert api.post("/dicomweb/studies", body, content_type=xml).status_code == 415
    no_boundary = 'multipart/related; type="application/dicom"'
    assert api.post("/dicomweb/studies", body, content_type=no_boundary).status_code == 400
    truncated = api.post("/dicomweb/studies", body[: len(body) // 2], content_type=content_type)
    assert truncated.status_code == 400 and "closing boundary" in truncated.json()["detail"]
    assert Instance.objects.count() == 0
    # Bare LF line ends and a preamble are tolerated.
    lf_body = b"preamble\n--b\nContent-Type: application/dicom\n\n" + data + b"\n--b--\n"
    response = api.post("/dicomweb/studies", lf_body, content_type="multipart/related; boundary=b")
    assert response.status_code == 200, response.content
