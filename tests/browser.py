"""Debian's Chromium driven by Playwright, for end-to-end tests (never a downloaded browser)."""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import DATA, ROOT, require
from tests.servers import AnnovoxServer

CHROMIUM_ARGS = [
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
ARTIFACTS = ROOT / "test-artifacts"


def chromium_path() -> str | None:
    return shutil.which("chromium")


@contextmanager
def browser_page(base_url: str) -> Iterator:
    """A fresh page in headless Chromium; skipped (failed in CI) without Chromium or Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package is not installed")
    executable = chromium_path()
    require(executable is not None, "Chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
            yield context.new_page()
        finally:
            browser.close()


def sign_in(page, username: str, password: str) -> None:  # type: ignore[no-untyped-def]
    """Sign in on the login form that ``/`` redirects to, and wait for the page's ready signal."""
    page.goto("/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_selector("body[data-ready=true]")


def screenshot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    """Keep a screenshot as a test artefact."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@contextmanager
def viewer_server(workdir: Path, folders: list[Path], password: str) -> Iterator[AnnovoxServer]:
    """A live server holding the DICOM ``folders`` (read in place), whose user signs in with ``password``;
    skipped (failed in CI) without the shared data, the built frontend or Chromium."""
    require(DATA.is_dir(), f"the shared data folder {DATA} is missing")
    require((ROOT / "frontend" / "dist" / "index.html").exists(), "the frontend is not built (make frontend)")
    require(chromium_path() is not None, "Chromium is not installed (apt-get install chromium)")
    with AnnovoxServer(workdir) as live:
        # The importer copies into the server's own storage, never into the project.
        live.manage("import_dicom", "--quiet", *(str(folder) for folder in folders))
        set_password(live, password)
        yield live


def set_password(live: AnnovoxServer, password: str) -> None:
    live.manage(
        "shell", "--no-imports", "-c",
        "from django.contrib.auth import get_user_model\n"
        f"user = get_user_model().objects.get(username={live.username!r})\n"
        f"user.set_password({password!r})\nuser.save()\n",
    )  # fmt: skip
