"""Viewer benchmark: how fast a clinical-size CT opens in the browser.

Builds a 512×512×``--slices`` CT series from the shared TotalSegmentator slices (``bench/series_builder.py``),
imports it into Annovox under Daphne (``tests/servers.py``; SQLite in a temporary folder, or a temporary
PostgreSQL database when ``DATABASE_URL`` names one), signs in with Debian's Chromium (Playwright,
``tests/browser.py``) and opens the viewer ``--loads`` times, each in a fresh browser context (empty cache).
Per load it reads the viewer's own ``loadTimes()`` (milliseconds since navigation start):

- metadata: the series' WADO-RS metadata is in and the views are set up;
- first image: the slice the axial view shows is loaded and drawn;
- full volume: every slice is loaded and every view has drawn the whole volume.

Targets (issue 7): first image ≤ 1 s, full volume ≤ 5 s on loopback. Prints a table of medians and writes
JSON. Part 2 adds the prompt-to-screen latency (``prompt_to_screen``).

Usage: ``.venv/bin/python bench/viewer.py [--slices 300] [--loads 5] [--json OUT]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``tests`` and ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench.series_builder import SOURCE, build_series  # noqa: E402
from tests.browser import CHROMIUM_ARGS, chromium_path, sign_in  # noqa: E402
from tests.servers import AnnovoxServer, database_like_ci  # noqa: E402

PASSWORD = "bench-viewer-password"
TARGETS_MS = {"firstImage": 1000, "fullVolume": 5000}


def one_load(
    browser: Any, server: AnnovoxServer, study: str, series: str, size: dict[str, int]
) -> dict[str, Any]:
    """Open the viewer in a fresh context (cold HTTP cache) and return its loadTimes()."""
    context = browser.new_context(base_url=server.url, viewport=size)
    try:
        # Room for every frame request in the resource timings (the default keeps 250 entries).
        context.add_init_script("performance.setResourceTimingBufferSize(100000)")
        page = context.new_page()
        sign_in(page, server.username, PASSWORD)
        began = time.perf_counter()
        # A full navigation, so that the times count from a fresh page start as a user's would.
        page.goto(f"/#/series/{study}/{series}")
        page.reload()
        page.wait_for_selector("body[data-viewer-ready]", timeout=600_000)
        if page.evaluate("document.body.dataset.viewerReady") != "true":
            raise RuntimeError(f"the viewer failed: {page.inner_text('#viewer-status')}")
        times = dict(page.evaluate("window.annovoxViewer.loadTimes()"))
        times["wall_s"] = time.perf_counter() - began
        times["frame_requests"] = page.evaluate(
            "performance.getEntriesByType('resource').filter(e => e.name.includes('/frames/')).length"
        )
        return times
    finally:
        context.close()


def prompt_to_screen(page: Any) -> dict[str, float]:
    """TODO (issue 7, part 2): time from a prompt click to its mask on screen, through the WebSocket."""
    raise NotImplementedError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--loads", type=int, default=5, help="page loads (median reported)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "viewer.json")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        sys.exit("Chromium is not installed (apt-get install chromium)")
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "browser": "Chromium (Debian), WebGL by SwiftShader",
        "slices": args.slices,
        "window": [args.width, args.height],
        "targets_ms": TARGETS_MS,
        "loads": [],
    }
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="annovox-bench-viewer-")))
        print(f"building a {args.slices}-slice series from {SOURCE} ...")
        built = build_series(tmp / "series", slices=args.slices)
        database_url = stack.enter_context(database_like_ci("annovox_bench"))
        server = stack.enter_context(AnnovoxServer(tmp / "annovox", database_url=database_url))
        server.manage("import_dicom", "--quiet", str(tmp / "series"))
        server.manage(
            "shell", "--no-imports", "-c",
            "from django.contrib.auth import get_user_model\n"
            f"user = get_user_model().objects.get(username={server.username!r})\n"
            f"user.set_password({PASSWORD!r})\nuser.save()\n",
        )  # fmt: skip
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        size = {"width": args.width, "height": args.height}
        for n in range(args.loads):
            times = one_load(browser, server, built.study_uid, built.series_uid, size)
            results["loads"].append(times)
            print(
                f"load {n + 1}: metadata {times['metadata']:.0f} ms, "
                f"first image {times['firstImage']:.0f} ms, full volume {times['fullVolume']:.0f} ms "
                f"({times['frame_requests']} frame requests)"
            )
    medians = {key: statistics.median(load[key] for load in results["loads"]) for key in TARGETS_MS}
    medians["metadata"] = statistics.median(load["metadata"] for load in results["loads"])
    results["median_ms"] = medians
    print(f"\n{'median of ' + str(args.loads) + ' loads':<24}{'ms':>8}{'target':>10}")
    for key, label in [
        ("metadata", "metadata"),
        ("firstImage", "first image"),
        ("fullVolume", "full volume"),
    ]:
        target = TARGETS_MS.get(key)
        print(f"{label:<24}{medians[key]:>8.0f}{(f'≤ {target}' if target else ''):>10}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
