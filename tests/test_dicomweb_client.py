"""Interoperability: dicomweb-client, a real DICOMweb client, stores, finds and retrieves every DICOM file in
../shared/data through a live server, and gets every file back byte for byte.

The JPEG 2000 and the raw copy of the ct_totalseg CT (and two pairs of third-party SEGs) share SOP Instance
UIDs with different content, so the second copy of each is rejected as a conflict: those are stored in a test
of their own, with its own database.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient

from tests.conftest import study_reader
from webapp.accounts.models import ApiToken

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # Django's WSGI test server buffers the async streamed responses that Daphne streams.
    pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators"),
]

BLANK_UIDS = "ct_totalseg/dicom_original_blank_uids"
STOW_BATCH = 40  # files per STOW-RS request


def read(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def all_dicom_files(root: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = read(path)
        if data[128:132] == b"DICM":
            yield path, data


def partition(root: Path) -> tuple[dict[Path, bytes], dict[Path, bytes], dict[Path, bytes]]:
    """Files that can share one archive, the later copies that conflict with them, and the blank-UID ones."""
    first, second, blank = {}, {}, {}
    digests: dict[str, str] = {}
    for path, data in all_dicom_files(root):
        if BLANK_UIDS in path.as_posix():
            blank[path] = data
            continue
        uid = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        digest = hashlib.sha256(data).hexdigest()
        if digests.setdefault(uid, digest) == digest:
            first[path] = data  # identical copies are simply "already present"
        else:
            second[path] = data
    return first, second, blank


@pytest.fixture
def dicomweb(live_server, django_user_model, settings) -> Iterator[DICOMwebClient]:  # type: ignore[no-untyped-def]
    # dicomweb-client sends a Host header without the port, so URLs in responses need the public URL.
    settings.ANNOVOX_PUBLIC_URL = live_server.url
    user = study_reader("pacs-tool", password="a-long-password-1")
    # Closing the session ends the server's keep-alive threads and their database connections.
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {ApiToken.objects.issue(user)}"
        # Django's live test server (WSGI) cannot read chunked request bodies, which the client sends for a
        # body over chunk_size; Daphne can, so this only keeps the test server happy.
        yield DICOMwebClient(url=f"{live_server.url}/dicomweb", session=session, chunk_size=1 << 30)


def stow_bytes(client: DICOMwebClient, files: list[bytes]) -> pydicom.Dataset:
    # store_instances() re-encodes pydicom data sets, which pydicom cannot do for every file here (Deflated
    # Image Frame Compression is newer than it) nor promises to do byte for byte, so the original bytes go
    # through the client's own STOW-RS request.
    return client._http_post_multipart_application_dicom(f"{client.base_url}/studies", files)


def stow_refused(client: DICOMwebClient, files: list[bytes]) -> tuple[int, dict]:
    """Status and body of a STOW-RS request the server refuses (the client raises for it)."""
    try:
        stow_bytes(client, files)
    except requests.HTTPError as exc:
        # Only the status and body are kept: a kept exception holds the connection, and with it a live server
        # thread and its database session, open until the end of the test session.
        return exc.response.status_code, exc.response.json()
    raise AssertionError("the server stored what it should have refused")


def stored_uids(result: pydicom.Dataset) -> list[str]:
    return [item.ReferencedSOPInstanceUID for item in result.get("ReferencedSOPSequence", [])]


def raw_parts(client: DICOMwebClient, url: str) -> list[bytes]:
    """Retrieved instances as bytes, decoded by the client's own multipart reader."""
    response = client._http_get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
    return list(client._decode_multipart_message(response, stream=False))


def check_round_trip(client: DICOMwebClient, expected: dict[str, bytes]) -> None:
    """Find every stored instance by QIDO-RS and retrieve every series with WADO-RS."""
    found: dict[str, tuple[str, str]] = {}
    for study in client.search_for_studies():
        study_uid = study["0020000D"]["Value"][0]
        series_list = client.search_for_series(study_uid)
        assert study["00201206"]["Value"] == [len(series_list)]
        for series in series_list:
            series_uid = series["0020000E"]["Value"][0]
            for instance in client.search_for_instances(study_uid, series_uid):
                found[instance["00080018"]["Value"][0]] = (study_uid, series_uid)
    assert set(found) == set(expected)
    retrieved: dict[str, bytes] = {}
    for study_uid, series_uid in set(found.values()):
        url = f"{client.base_url}/studies/{study_uid}/series/{series_uid}"
        for data in raw_parts(client, url):
            retrieved[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = data
    assert retrieved.keys() == expected.keys()
    different = [uid for uid, data in expected.items() if retrieved[uid] != data]
    assert different == []


def test_store_search_and_retrieve_every_shared_file(dicomweb: DICOMwebClient, shared_data: Path) -> None:
    first, second, blank = partition(shared_data)
    assert len(second) == 22 and len(blank) == 20  # the raw CT copy, liver_expb, sparse-labelmap-ppv5
    paths = list(first)
    expected: dict[str, bytes] = {}
    for start in range(0, len(paths), STOW_BATCH):
        batch = paths[start : start + STOW_BATCH]
        result = stow_bytes(dicomweb, [first[p] for p in batch])
        assert "FailedSOPSequence" not in result
        uids = stored_uids(result)
        assert len(uids) == len(batch)
        expected.update(zip(uids, (first[p] for p in batch), strict=True))

    status, refused = stow_refused(dicomweb, list(blank.values()))
    assert status == 409
    failures = refused["00081198"]["Value"]
    assert len(failures) == 20
    for failure in failures:
        assert failure["00081197"]["Value"] == [0xC000]
        assert "missing or empty" in failure["00000902"]["Value"][0]

    check_round_trip(dicomweb, expected)


def test_conflicting_copies_in_an_archive_of_their_own(dicomweb: DICOMwebClient, shared_data: Path) -> None:
    first, second, _ = partition(shared_data)
    # These re-encode byte for byte, so the public store_instances() carries them.
    datasets = [pydicom.dcmread(io.BytesIO(data)) for data in second.values()]
    result = dicomweb.store_instances(datasets)
    assert sorted(stored_uids(result)) == sorted(str(ds.SOPInstanceUID) for ds in datasets)
    check_round_trip(
        dicomweb, {str(ds.SOPInstanceUID): data for ds, data in zip(datasets, second.values(), strict=True)}
    )

    # The raw CT copy: frames, metadata and bulk data through the client's public methods.
    raw = next(ds for ds in datasets if ds.Modality == "CT")
    uids = (raw.StudyInstanceUID, raw.SeriesInstanceUID, raw.SOPInstanceUID)
    assert dicomweb.retrieve_instance_frames(*uids, frame_numbers=[1]) == [raw.PixelData]
    metadata = dicomweb.retrieve_instance_metadata(*uids)
    assert metadata["7FE00010"]["BulkDataURI"].endswith(f"/instances/{raw.SOPInstanceUID}/bulkdata/7FE00010")
    assert dicomweb.retrieve_bulkdata(metadata["7FE00010"]["BulkDataURI"]) == [raw.PixelData]
    assert len(dicomweb.retrieve_series_metadata(raw.StudyInstanceUID, raw.SeriesInstanceUID)) == 20

    # The same SOP Instance UIDs with other content: refused as conflicts.
    conflicting = [data for path, data in first.items() if "dicom_j2k_uidfixed" in path.as_posix()]
    status, refused = stow_refused(dicomweb, conflicting[:2])
    assert status == 409
    assert [f["00081197"]["Value"] for f in refused["00081198"]["Value"]] == [[0x0111]] * 2
