"""The viewer in a real browser against a live server: study list → series picker → viewer, for the
TotalSegmentator CT (rendering, voxel ↔ screen mapping, window presets, keys) and the HFS and HFP decubitus MR
(orientation markers)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from scipy import ndimage

from tests.browser import browser_page, screenshot, sign_in, viewer_server
from tests.conftest import DATA
from tests.servers import AnnovoxServer
from webapp.studies.volume import volume_from_datasets

CT = DATA / "ct_totalseg" / "dicom_raw_uidfixed"
LABELS = DATA / "ct_totalseg" / "nifti" / "example_seg_dicom_dicomorder.nii.gz"
MR = {
    "HFS": DATA / "mr_dicom_decubitus" / "HFS_3_t1_fl2d_sag",
    "HFP": DATA / "mr_dicom_decubitus" / "HFP_2_t1_fl2d_sag",
}
LIVER = 5  # TotalSegmentator "total" class
PASSWORD = "viewer-test-password"
SLICE_VIEWS = ["axial", "sagittal", "coronal"]
READY_TIMEOUT_MS = 90_000


def _uids(folder: Path) -> tuple[str, str]:
    ds = pydicom.dcmread(next(p for p in sorted(folder.iterdir()) if p.is_file()), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnnovoxServer]:
    with viewer_server(tmp_path_factory.mktemp("viewer"), [CT, *MR.values()], PASSWORD) as live:
        yield live


@pytest.fixture(scope="module")
def page(server: AnnovoxServer) -> Iterator[Any]:
    with browser_page(server.url) as page:
        # Smaller views than the default window: swiftshader renders every pixel on the CPU.
        page.set_viewport_size({"width": 1000, "height": 720})
        sign_in(page, server.username, PASSWORD)
        page.wait_for_selector("body[data-ready=true][data-page=studies]")
        yield page


def open_viewer(page: Any, study: str, series: str) -> None:
    page.goto(f"/#/series/{study}/{series}")
    page.wait_for_selector("body[data-viewer-ready]", timeout=READY_TIMEOUT_MS)
    assert page.evaluate("document.body.dataset.viewerReady") == "true", page.inner_text("#viewer-status")
    page.evaluate("window.annovoxViewer.ready")


def drawn(page: Any, change: str, views: list[str]) -> None:
    """Run the JavaScript ``change`` (or a key press "key:X") and wait until ``views`` have been redrawn."""
    before = page.evaluate(f"{views}.map(v => window.annovoxViewer.renderCount(v))")
    if change.startswith("key:"):
        page.keyboard.press(change[4:])
    else:
        page.evaluate(change)
    page.wait_for_function(
        f"{views}.every((v, n) => window.annovoxViewer.renderCount(v) > {before}[n])", timeout=30_000
    )


def viewport_image(page: Any, viewport: str) -> np.ndarray:
    """The view as the user sees it (greyscale), from a screenshot of its cell."""
    png = page.locator(f"#viewport-{viewport}").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)


def grey_at(page: Any, viewport: str, client: dict[str, float], radius: int = 2) -> float:
    """Median grey of a small patch of the view around client coordinates."""
    box = page.locator(f"#viewport-{viewport}").bounding_box()
    image = viewport_image(page, viewport)
    x, y = round(client["x"] - box["x"]), round(client["y"] - box["y"])
    return float(np.median(image[y - radius : y + radius + 1, x - radius : x + radius + 1]))


@pytest.fixture(scope="module")
def ct_volume():  # type: ignore[no-untyped-def]
    return volume_from_datasets([pydicom.dcmread(p) for p in sorted(CT.iterdir()) if p.is_file()])


def liver_voxel() -> tuple[int, int, int]:
    """The liver voxel deepest inside the organ, as [k, j, i] (the NIfTI data array is (i, j, k))."""
    labels = np.asarray(nib.load(LABELS).dataobj).transpose(2, 1, 0)
    depth = ndimage.distance_transform_edt(labels == LIVER)
    return tuple(int(v) for v in np.unravel_index(np.argmax(depth), depth.shape))  # type: ignore[return-value]


def test_study_list_picker_and_ct_viewer(page: Any, ct_volume: Any) -> None:
    study, series = _uids(CT)
    # Study list → series picker (with its thumbnail) → viewer, by the links a user clicks.
    page.goto("/#/")
    page.wait_for_selector("body[data-ready=true][data-page=studies]")
    page.click(f"tr[data-study-uid='{study}'] a.study-link")
    page.wait_for_selector("body[data-ready=true][data-page=series]")
    thumbnail = page.locator(f"li[data-series-uid='{series}'] img")
    assert thumbnail.evaluate("img => img.complete && img.naturalWidth") > 0
    screenshot(page, "viewer-series-picker")
    page.click(f"li[data-series-uid='{series}'] a.series-link")
    page.wait_for_selector("body[data-viewer-ready]", timeout=READY_TIMEOUT_MS)
    assert page.evaluate("document.body.dataset.viewerReady") == "true", page.inner_text("#viewer-status")
    hook = "window.annovoxViewer"
    assert page.evaluate(f"{hook}.volumeShape()") == list(ct_volume.array.shape) == [20, 512, 512]
    times = page.evaluate(f"{hook}.loadTimes()")
    assert 0 < times["metadata"] <= times["firstImage"] <= times["fullVolume"]

    # Every view shows an image, not a blank canvas.
    for view in [*SLICE_VIEWS, "3d"]:
        image = viewport_image(page, view)
        assert image.std() > 10, f"the {view} view looks blank"
    screenshot(page, "viewer-ct")

    # The liver's deepest voxel: each slice view maps it to a point on its canvas, Cornerstone's own
    # canvas → world and our world → index take that point back to the same voxel, and the value there is
    # the server's HU (so our [k, j, i] is Cornerstone's voxel too).
    voxel = list(liver_voxel())
    drawn(page, f"{hook}.showVoxel({voxel})", SLICE_VIEWS)
    for view in SLICE_VIEWS:
        client = page.evaluate(f"{hook}.voxelToClient('{view}', {voxel})")
        box = page.locator(f"#viewport-{view}").bounding_box()
        assert (
            box["x"] < client["x"] < box["x"] + box["width"]
            and box["y"] < client["y"] < box["y"] + box["height"]
        )
        assert page.evaluate(f"{hook}.clientToVoxel('{view}', {client})") == voxel, view
    assert page.evaluate(f"{hook}.voxelValue({voxel})") == ct_volume.array[tuple(voxel)]
    for probe in ([0, 0, 0], [19, 511, 0], [7, 100, 400]):
        assert page.evaluate(f"{hook}.voxelValue({probe})") == ct_volume.array[tuple(probe)]

    # On screen: next to the liver point (off the crosshair lines) the axial view shows the grey that the
    # window gives the HU there, and each preset changes it as expected.
    near = page.evaluate(f"{hook}.voxelToClient('axial', {voxel})")
    near = {"x": near["x"] + 8, "y": near["y"] + 8}
    k, j, i = page.evaluate(f"{hook}.clientToVoxel('axial', {near})")
    hu = float(np.median(ct_volume.array[k, j - 2 : j + 3, i - 2 : i + 3]))
    assert 40 < hu < 150, hu  # liver
    greys = {}
    for key, preset in [("1", "soft-tissue"), ("2", "lung"), ("3", "bone"), ("4", "brain")]:
        drawn(page, f"key:{key}", ["axial"])
        assert page.evaluate(f"document.querySelector('[data-preset={preset}]').classList.contains('active')")
        voi = page.evaluate(f"{hook}.voiRange('axial')")
        expected = 255 * min(1.0, max(0.0, (hu - voi["lower"]) / (voi["upper"] - voi["lower"])))
        greys[preset] = grey_at(page, "axial", near)
        assert abs(greys[preset] - expected) < 30, (preset, voi, hu, greys[preset], expected)
    assert page.evaluate(f"{hook}.voiRange('axial')") == {"lower": 0, "upper": 80}  # brain: W 80, L 40
    assert greys["lung"] > greys["soft-tissue"] > greys["bone"]
    screenshot(page, "viewer-ct-brain-window")

    # Keys: the help overlay, and Home back to the soft tissue window.
    page.keyboard.press("?")
    assert page.is_visible("#help-overlay")
    page.keyboard.press("Escape")
    assert not page.is_visible("#help-overlay")
    page.keyboard.press("Home")
    assert page.evaluate(f"{hook}.voiRange('axial')") == {"lower": -160, "upper": 240}


# Both decubitus series carry ImageOrientationPatient 0\1\0\0\0\-1 whatever position the patient lay in
# (HFS or HFP): the scanner writes patient coordinates. So the letters come from the camera and the LPS grid,
# never from PatientPosition, and are the same for both:
#   row cosine (0, 1, 0) = +P: moving along i (to the next column) goes posterior;
#   column cosine (0, 0, -1) = -S: moving along j (to the next row) goes inferior;
#   normal = row × column = (1·(−1) − 0·0, 0·0 − 0·(−1), 0·0 − 1·0) = (−1, 0, 0): k goes to the right (R).
# Radiological display: axial seen from the feet with anterior up (R on the screen's left), sagittal
# seen from the patient's left with superior up (A on the left), coronal from the front (R on the left).
EXPECTED_MARKERS = {
    "axial": {"top": "A", "bottom": "P", "left": "R", "right": "L"},
    "sagittal": {"top": "S", "bottom": "I", "left": "A", "right": "P"},
    "coronal": {"top": "S", "bottom": "I", "left": "R", "right": "L"},
}
# Where a step along each voxel axis moves on screen in each view (x right, y down): from the letters above.
# i → P, j → I, k → R.
EXPECTED_SCREEN_STEPS = {
    "axial": {"i": (0, +1), "k": (-1, 0)},  # P is at the bottom, R at the left
    "sagittal": {"i": (+1, 0), "j": (0, +1)},  # P at the right, I at the bottom
    "coronal": {"j": (0, +1), "k": (-1, 0)},  # I at the bottom, R at the left
}


@pytest.mark.parametrize("position", ["HFS", "HFP"])
def test_orientation_markers_of_the_decubitus_mr(page: Any, position: str) -> None:
    study, series = _uids(MR[position])
    ds = pydicom.dcmread(next(iter(sorted(MR[position].iterdir()))), stop_before_pixels=True)
    assert ds.PatientPosition == position
    assert [float(v) for v in ds.ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]
    open_viewer(page, study, series)
    hook = "window.annovoxViewer"
    nk, nj, ni = page.evaluate(f"{hook}.volumeShape()")
    assert (nk, nj, ni) == (35, 256, 256)
    for view, expected in EXPECTED_MARKERS.items():
        assert page.evaluate(f"{hook}.orientationMarkers('{view}')") == expected, view
        cell = page.locator(f".viewport-cell[data-viewport={view}]")
        shown = {side: cell.locator(f".marker-{side}").inner_text() for side in expected}
        assert shown == expected, view
    # The 3D view opens from the front too.
    assert page.evaluate(f"{hook}.orientationMarkers('3d')") == EXPECTED_MARKERS["coronal"]

    # The image agrees with the letters: steps along i, j and k move towards the letter of their direction.
    centre = [nk // 2, nj // 2, ni // 2]
    drawn(page, f"{hook}.showVoxel({centre})", SLICE_VIEWS)
    for view, steps in EXPECTED_SCREEN_STEPS.items():
        start = page.evaluate(f"{hook}.voxelToClient('{view}', {centre})")
        for axis, (sx, sy) in steps.items():
            moved = list(centre)
            moved["kji".index(axis)] += 10
            end = page.evaluate(f"{hook}.voxelToClient('{view}', {moved})")
            dx, dy = end["x"] - start["x"], end["y"] - start["y"]
            assert np.sign(round(dx, 3)) == sx and np.sign(round(dy, 3)) == sy, (view, axis, dx, dy)
        assert page.evaluate(f"{hook}.clientToVoxel('{view}', {start})") == centre
        assert viewport_image(page, view).std() > 5, f"the {view} view looks blank"
    # MR opens with the automatic window.
    assert page.evaluate("document.querySelector('[data-preset=auto]').classList.contains('active')")
    screenshot(page, f"viewer-mr-{position.lower()}")
