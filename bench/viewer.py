"""Viewer benchmark: how fast a clinical-size CT opens in the browser.

Builds a 512×512×``--slices`` CT series from the shared TotalSegmentator slices (``bench/series_builder.py``),
imports it into Annovox under Daphne (``tests/servers.py``; SQLite in a temporary folder, or a temporary
PostgreSQL database when ``DATABASE_URL`` names one), signs in with Debian's Chromium (Playwright,
``tests/browser.py``) and opens the viewer ``--loads`` times, each in a fresh browser context (empty cache).
Per load it reads the viewer's own ``loadTimes()`` (milliseconds since navigation start):

- metadata: the series' WADO-RS metadata is in and the views are set up;
- first image: the slice the axial view shows is loaded and drawn;
- full volume: every slice is loaded and every view has drawn the whole volume.

Then, unless ``--prompts 0``, the prompt-to-screen latency with the default model (the server's in-process
worker): in one more fresh context it opens the viewer, waits for the annotation tools
(``data-annotation-ready``), adds a segment, picks the AI point tool ("p") and clicks ``--prompts`` positive
points on the axial view, each on a voxel deep inside an organ of the TotalSegmentator reference labels (the
deepest voxel first, then others spread over the organ's source slices, each shown on the built slice nearest
the middle of the series that repeats that source slice). It places ``POINTS_PER_OBJECT`` points on one
organ, resets the object ("r") and goes on with the next, so that the masks stay organ-sized. After each
click it waits for a new ``lastPromptTiming()`` and for ``idle()``, and records from the page's own stamps:

- screen: from the prompt leaving the page to the axial view having drawn its mask (``drawn − sent``);
- engine: the engine's own inference time, as the server reports it; server: the server's total time;
- overhead: screen − engine, i.e. what the browser, the WebSocket, the service and drawing add.

Targets (issue 7): first image ≤ 1 s, full volume ≤ 5 s on loopback, prompt-to-screen overhead over the
engine's own time ≤ 50 ms p50. Prints a table of the load medians and of the prompt p50/p95 and writes JSON
(``prompt_to_screen``: every prompt and the percentiles).

Usage: ``.venv/bin/python bench/viewer.py [--slices 300] [--loads 5] [--prompts 20] [--json OUT]
[--trace TRACE.json]``
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

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from bench.series_builder import SOURCE, build_series, ping_pong  # noqa: E402
from tests.browser import CHROMIUM_ARGS, chromium_path, set_password, sign_in  # noqa: E402
from tests.servers import SHARED_DATA, AnnovoxServer, database_like_ci  # noqa: E402

PASSWORD = "bench-viewer-password"
TARGETS_MS = {"firstImage": 1000, "fullVolume": 5000}
OVERHEAD_TARGET_MS = 50  # prompt-to-screen over the engine's own time, p50
LABELS = SHARED_DATA / "ct_totalseg" / "nifti" / "example_seg_dicom_dicomorder.nii.gz"
# TotalSegmentator "total" classes that are large on the 20 source slices: the objects prompted, in turn.
OBJECTS = {5: "liver", 1: "spleen", 6: "stomach", 52: "aorta"}
POINTS_PER_OBJECT = 5
READY_TIMEOUT_MS = 600_000
PROMPT_TIMEOUT_MS = 300_000
HOOK = "window.annovoxViewer"
# Where a load's time goes: the viewer's own `annovox:` marks, and when the requests it waits on came back
# (ms since navigation start; resource entries give responseEnd, the first frame the earliest one).
STAGES_JS = """() => {
  const stages = {};
  for (const mark of performance.getEntriesByType('mark')) {
    if (mark.name.startsWith('annovox:')) stages[mark.name.slice(8)] = mark.startTime;
  }
  const resources = performance.getEntriesByType('resource');
  const first = (test) => resources.filter(test).sort((a, b) => a.responseEnd - b.responseEnd)[0];
  const metadata = first((e) => e.name.endsWith('/metadata'));
  if (metadata) {
    stages['metadata-requested'] = metadata.startTime;
    stages['metadata-received'] = metadata.responseEnd;
  }
  const chunk = first((e) => /\\/page-[^/]*\\.js$/.test(e.name));
  if (chunk) stages['viewer-code-received'] = chunk.responseEnd;
  const frame = first((e) => e.name.includes('/frames/'));
  if (frame) {
    stages['first-frame-requested'] = frame.startTime;
    stages['first-frame-received'] = frame.responseEnd;
  }
  return stages;
}"""
ANNOTATION = "window.annovoxViewer.annotation"
TRACE_CATEGORIES = [
    "devtools.timeline",
    "disabled-by-default-devtools.timeline",
    "v8.execute",
    "disabled-by-default-v8.cpu_profiler",
    "blink.user_timing",
    "gpu",
]


def one_load(
    browser: Any,
    server: AnnovoxServer,
    study: str,
    series: str,
    size: dict[str, int],
    trace: Path | None = None,
) -> dict[str, Any]:
    """Open the viewer in a fresh context (cold HTTP cache) and return its loadTimes(); with ``trace``, write
    a Chrome trace of the load there (timeline and JavaScript samples; DevTools' Performance panel opens
    it)."""
    context = browser.new_context(base_url=server.url, viewport=size)
    try:
        # Room for every frame request in the resource timings (the default keeps 250 entries).
        context.add_init_script("performance.setResourceTimingBufferSize(100000)")
        page = context.new_page()
        sign_in(page, server.username, PASSWORD)
        began = time.perf_counter()
        # A full navigation, so that the times count from a fresh page start as a user's would.
        page.goto(f"/#/series/{study}/{series}")
        if trace is not None:
            browser.start_tracing(page=page, path=str(trace), categories=TRACE_CATEGORIES)
        page.reload()
        page.wait_for_selector("body[data-viewer-ready]", timeout=600_000)
        if trace is not None:
            browser.stop_tracing()
        if page.evaluate("document.body.dataset.viewerReady") != "true":
            raise RuntimeError(f"the viewer failed: {page.inner_text('#viewer-status')}")
        times = dict(page.evaluate("window.annovoxViewer.loadTimes()"))
        times["wall_s"] = time.perf_counter() - began
        times["frame_requests"] = page.evaluate(
            "performance.getEntriesByType('resource').filter(e => e.name.includes('/frames/')).length"
        )
        times["stages"] = page.evaluate(STAGES_JS)
        return times
    finally:
        context.close()


def object_points(slices: int, per_object: int) -> list[tuple[str, list[list[int]]]]:
    """For each of OBJECTS, ``per_object`` voxels [k, j, i] of the built series deep inside it: its deepest
    voxel, then others spread over its source slices. A source slice k is shown on the built slice nearest the
    middle of the series that repeats it (the built slice n repeats source slice ping_pong(n))."""
    image: Any = nib.load(LABELS)
    source = np.asarray(image.dataobj).transpose(2, 1, 0)  # the data array is (i, j, k)
    order = ping_pong(slices, source.shape[0])
    held = np.isin(np.arange(source.shape[0]), order)  # source slices the built series repeats
    middle = (slices - 1) / 2

    def in_series(voxel: np.ndarray) -> list[int]:
        k = min((n for n, s in enumerate(order) if s == voxel[0]), key=lambda n: abs(n - middle))
        return [k, int(voxel[1]), int(voxel[2])]

    objects = []
    for label, name in OBJECTS.items():
        depth = ndimage.distance_transform_edt(source == label)
        depth[~held] = 0
        if depth.max() < 3:
            continue
        deepest = np.array(np.unravel_index(np.argmax(depth), depth.shape))
        candidates = np.argwhere(depth >= max(3.0, 0.5 * depth.max()))  # ordered by source slice
        spread = np.linspace(0, len(candidates) - 1, max(per_object - 1, 0)).round().astype(int)
        objects.append((name, [in_series(deepest), *(in_series(candidates[n]) for n in spread)]))
    if not objects:
        raise RuntimeError(f"none of {sorted(OBJECTS.values())} is in the reference labels {LABELS}")
    return objects


def show(page: Any, voxel: list[int]) -> None:
    """Move the views through the voxel and wait for the axial view to have drawn it."""
    before = page.evaluate(f"{HOOK}.renderCount('axial')")
    page.evaluate(f"{HOOK}.showVoxel({voxel})")
    page.wait_for_function(f"{HOOK}.renderCount('axial') > {before}", timeout=60_000)


def prompt_to_screen(
    browser: Any,
    server: AnnovoxServer,
    study: str,
    series: str,
    size: dict[str, int],
    objects: list[tuple[str, list[list[int]]]],
    prompts: int,
) -> list[dict[str, Any]]:
    """Click ``prompts`` AI points on the axial view, POINTS_PER_OBJECT per object with a reset in between,
    and return each prompt's times (ms) from the page's lastPromptTiming()."""
    context = browser.new_context(base_url=server.url, viewport=size)
    try:
        page = context.new_page()
        sign_in(page, server.username, PASSWORD)
        page.goto(f"/#/series/{study}/{series}")
        page.wait_for_selector("body[data-annotation-ready]", timeout=READY_TIMEOUT_MS)
        if page.evaluate("document.body.dataset.annotationReady") != "true":
            raise RuntimeError(f"the annotation tools failed: {page.inner_text('#viewer-panel')}")
        page.evaluate(f"{ANNOTATION}.ready")
        page.fill("#segment-new-label", "Benchmark")
        page.click("#segment-add")
        page.wait_for_function(f"{ANNOTATION}.segments().length > 0")
        page.evaluate(f"{ANNOTATION}.idle()")  # the segment's AI session is open
        segment = int(page.evaluate(f"{ANNOTATION}.activeSegment()"))
        page.keyboard.press("p")
        if page.evaluate(f"{ANNOTATION}.tool()") != "point":
            raise RuntimeError(f"'p' chose the tool {page.evaluate(f'{ANNOTATION}.tool()')!r}, not 'point'")
        samples = []
        for n in range(prompts):
            name, voxels = objects[(n // POINTS_PER_OBJECT) % len(objects)]
            point = n % POINTS_PER_OBJECT
            if point == 0 and n > 0:
                page.keyboard.press("r")  # the next object: forget the last one's prompts and mask
                page.evaluate(f"{ANNOTATION}.idle()")
            voxel = voxels[point % len(voxels)]
            show(page, voxel)
            at = page.evaluate(f"{HOOK}.voxelToClient('axial', {voxel})")
            before = page.evaluate(f"{ANNOTATION}.lastPromptTiming()?.sent ?? 0")
            page.mouse.click(at["x"], at["y"])
            page.wait_for_function(
                f"({ANNOTATION}.lastPromptTiming()?.sent ?? 0) > {before}", timeout=PROMPT_TIMEOUT_MS
            )
            page.evaluate(f"{ANNOTATION}.idle()")
            timing = page.evaluate(f"{ANNOTATION}.lastPromptTiming()")
            screen = timing["drawn"] - timing["sent"]
            voxels_now = int(page.evaluate(f"{ANNOTATION}.voxelCount({segment})"))
            if voxels_now == 0:
                raise RuntimeError(f"a positive point in the {name} at {voxel} left the segment empty")
            sample = {
                "object": name,
                "point": point + 1,
                "voxel": voxel,
                "screen_ms": screen,
                "answer_ms": timing["answered"] - timing["sent"],
                "draw_ms": timing["drawn"] - timing["answered"],
                "server_ms": 1000 * timing["server"],
                "engine_ms": 1000 * timing["engine"],
                "overhead_ms": screen - 1000 * timing["engine"],
                "mask_voxels": voxels_now,
            }
            samples.append(sample)
            print(
                f"prompt {n + 1} ({name}, point {point + 1}): screen {screen:.0f} ms, "
                f"engine {sample['engine_ms']:.0f} ms, server {sample['server_ms']:.0f} ms, "
                f"overhead {sample['overhead_ms']:.0f} ms (drawing {sample['draw_ms']:.0f} ms), "
                f"mask {voxels_now} voxels"
            )
        return samples
    finally:
        context.close()


def summarise_prompts(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """p50/p95 per measure and the overhead target."""
    keys = ["screen_ms", "engine_ms", "server_ms", "overhead_ms", "answer_ms", "draw_ms"]
    p50 = {key: float(np.percentile([s[key] for s in samples], 50)) for key in keys}
    p95 = {key: float(np.percentile([s[key] for s in samples], 95)) for key in keys}
    return {
        "prompts": len(samples),
        "p50_ms": p50,
        "p95_ms": p95,
        "target_overhead_p50_ms": OVERHEAD_TARGET_MS,
        "overhead_target_met": p50["overhead_ms"] <= OVERHEAD_TARGET_MS,
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--loads", type=int, default=5, help="page loads (median reported)")
    parser.add_argument("--prompts", type=int, default=20, help="AI point prompts timed on screen (0 skips)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "viewer.json")
    parser.add_argument("--trace", type=Path, help="write a Chrome trace of the last load here")
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
        set_password(server, PASSWORD)
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        size = {"width": args.width, "height": args.height}
        for n in range(args.loads):
            trace = args.trace if n == args.loads - 1 else None
            times = one_load(browser, server, built.study_uid, built.series_uid, size, trace)
            results["loads"].append(times)
            print(
                f"load {n + 1}: metadata {times['metadata']:.0f} ms, "
                f"first image {times['firstImage']:.0f} ms, full volume {times['fullVolume']:.0f} ms "
                f"({times['frame_requests']} frame requests)"
            )
            stages = sorted(times["stages"].items(), key=lambda item: item[1])
            print("  " + ", ".join(f"{name} {ms:.0f}" for name, ms in stages))
        if args.prompts > 0:
            objects = object_points(args.slices, POINTS_PER_OBJECT)
            samples = prompt_to_screen(
                browser, server, built.study_uid, built.series_uid, size, objects, args.prompts
            )
            results["prompt_to_screen"] = summarise_prompts(samples)
    if results["loads"]:
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
    if "prompt_to_screen" in results:
        summary = results["prompt_to_screen"]
        met = "met" if summary["overhead_target_met"] else "not met"
        print(f"\n{str(summary['prompts']) + ' prompts, ms':<24}{'p50':>8}{'p95':>8}  target")
        rows = [
            ("screen_ms", "prompt to screen"),
            ("engine_ms", "engine"),
            ("overhead_ms", "overhead"),
            ("draw_ms", "  of which drawing"),
        ]
        for key, label in rows:
            note = f"  ≤ {OVERHEAD_TARGET_MS} p50: {met}" if key == "overhead_ms" else ""
            print(f"{label:<24}{summary['p50_ms'][key]:>8.0f}{summary['p95_ms'][key]:>8.0f}{note}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
