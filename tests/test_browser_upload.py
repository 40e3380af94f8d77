"""The import page in a real browser: sign in, upload files, a zip and a folder, and see every result."""

import zipfile

import pytest
from django.db import connections

from tests.browser import browser_page, screenshot, sign_in
from tests.conftest import ROOT, require, study_reader
from webapp.studies.models import Instance, Study

PASSWORD = "browser-test-password"


@pytest.fixture
def signed_in_page(live_server, transactional_db, monkeypatch):
    require((ROOT / "frontend" / "dist" / "index.html").exists(), "the frontend is not built (make frontend)")
    # Playwright's sync API keeps an event loop in this thread; the ORM calls below are still plain sync code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
    study_reader("annotator", password=PASSWORD)
    with browser_page(live_server.url) as page:
        sign_in(page, "annotator", PASSWORD)
        yield page
        # The ORM opened its connection while Playwright's loop was running, in a context of its own that the
        # test database teardown cannot see: close it here.
        connections.close_all()


def _upload(page, selector: str, files) -> str:  # type: ignore[no-untyped-def]
    page.set_input_files(selector, files)
    page.wait_for_selector("#upload-message:has-text('Upload finished.')")
    return page.inner_text("#upload-summary")


def test_upload_files_zip_and_folder(signed_in_page, shared_data, tmp_path):
    page = signed_in_page
    ct = shared_data / "ct_totalseg"
    slices = sorted((ct / "dicom_raw_uidfixed").glob("*.dcm"))
    blank = sorted((ct / "dicom_original_blank_uids").iterdir())[0]

    # Many files at once, one of them bad: the good ones are stored and the bad one is named with its reason.
    summary = _upload(page, "#pick-files", [*slices[:10], blank])
    assert summary == "11 files: 10 stored, 0 already present, 1 rejected"
    rejected = page.inner_text("#results-table tr.status-rejected")
    assert blank.name in rejected and "SOP Instance UID" in rejected and "missing or empty" in rejected
    assert Instance.objects.count() == 10

    # A zip with the rest of the series plus two already stored slices.
    archive = tmp_path / "ct.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in slices[8:]:
            zf.write(path, f"ct/{path.name}")
    summary = _upload(page, "#pick-files", [archive])
    assert summary == "12 files: 10 stored, 2 already present, 0 rejected"
    assert Instance.objects.count() == 20

    # A folder: the MR series of the decubitus set.
    folder = shared_data / "mr_dicom_decubitus" / "HFS_3_t1_fl2d_sag"
    summary = _upload(page, "#pick-folder", folder)
    assert summary == "35 files: 35 stored, 0 already present, 0 rejected"
    assert Study.objects.count() == 2

    # The study list refreshed with both studies.
    page.wait_for_function("document.querySelectorAll('#study-table tbody tr').length === 2")
    assert "TotalSegmentator" in page.inner_text("#study-table")
    screenshot(page, "upload-page")
