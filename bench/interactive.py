"""Interactive service benchmark: simulated annotators as WebSocket clients against the real stack.

Starts Annovox under Daphne (``tests/servers.py``) with the Redis channel layer of ``REDIS_URL`` (default
``redis://127.0.0.1:6379/0``), no in-process worker, and ``--workers`` inference worker processes
(``manage.py inference_worker --device cpu --threads 1``) running the default model; the database is SQLite
in a temporary folder, or a temporary PostgreSQL database when ``DATABASE_URL`` names one. The volume is a
clinical-size 512×512×``--slices`` CT series built from the shared TotalSegmentator slices
(``bench/series_builder.py``) and imported with ``manage.py import_dicom``.

For 1, 4 and 16 annotators at once (``--annotators``), each annotator is a thread with its own WebSocket and
its own segment: it opens the segment, then places ``--prompts`` positive points inside one organ of the
reference labels (a different organ per annotator), waiting for each result and then 1–3 s (uniform, seeded)
before the next prompt. Per prompt it records:

- end-to-end latency: from sending the prompt to having its result (mask frame and status) in hand;
- the server's overhead over the engine: end-to-end minus the worker's own inference time and minus the
  time the prompt waited in the worker's queue behind other annotators' prompts (so that loopback overhead
  and capacity are reported apart); and the same including the queue wait;
- bytes of the result frame, the voxels of its region and the voxels of the whole volume.

Targets (issue 5): overhead ≤ 20 ms p50 on loopback; results carry only the changed region; with 4
annotators on two CPU workers, p95 end-to-end ≤ 2× the single annotator's p95.

Usage: ``.venv/bin/python bench/interactive.py [--slices 300] [--prompts 20] [--json OUT]``
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
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``tests`` and ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench.series_builder import SOURCE, build_series, ping_pong  # noqa: E402
from tests.interactive_client import InteractiveClient  # noqa: E402
from tests.servers import SHARED_DATA, AnnovoxServer, database_like_ci  # noqa: E402

LABELS = SHARED_DATA / "ct_totalseg" / "nifti" / "example_seg_dicom_dicomorder.nii.gz"
# TotalSegmentator "total" classes present on the 20 slices, largest first.
ORGANS = {5: "liver", 1: "spleen", 2: "kidney_right", 3: "kidney_left", 6: "stomach", 7: "pancreas"}

SETUP = """
from webapp.studies.models import Series
from webapp.segmentations.models import Segmentation, Segment
series = Series.objects.get()
segmentation = Segmentation.objects.create(series=series, label="bench")
for number in range(1, {count} + 1):
    Segment.objects.create(segmentation=segmentation, number=number, label=f"annotator {{number}}")
print(series.series_instance_uid, segmentation.pk)
"""


def organ_points(slices: int, count: int, rng: np.random.Generator) -> list[list[tuple[int, int, int]]]:
    """For each of ``count`` annotators, points deep inside one organ of the reference labels, mapped to the
    built series (its slice k repeats source slice ping_pong(k))."""
    source = np.asarray(nib.load(LABELS).dataobj).transpose(2, 1, 0)  # [k, j, i] of the source slices
    order = ping_pong(slices, source.shape[0])
    present = [label for label in ORGANS if (source == label).sum() > 2000]
    per_annotator = []
    for n in range(count):
        organ = source == present[n % len(present)]
        depth = ndimage.distance_transform_edt(organ)
        candidates = np.argwhere(depth >= max(3.0, 0.5 * depth.max()))
        chosen = candidates[rng.choice(len(candidates), size=64, replace=True)]
        points = []
        for k_source, j, i in chosen:
            ks = [k for k, s in enumerate(order) if s == k_source]
            points.append((int(rng.choice(ks)), int(j), int(i)))
        per_annotator.append(points)
    return per_annotator


def annotator(
    server: AnnovoxServer,
    series_uid: str,
    segmentation: int,
    segment: int,
    points: list[tuple[int, int, int]],
    prompts: int,
    seed: int,
    start: threading.Barrier,
    out: list[dict[str, Any]],
) -> None:
    rng = np.random.default_rng(seed)
    with InteractiveClient(server.websocket_url, server.token) as client:
        ready = client.open(series_uid, segmentation, segment, timeout=600)
        client.result(client.reset(), timeout=600)
        volume_voxels = int(np.prod(ready["geometry"]["shape"]))
        start.wait()
        for n in range(prompts):
            sent = time.perf_counter()
            result = client.result(client.prompt("point", index=list(points[n % len(points)])), timeout=600)
            elapsed = time.perf_counter() - sent
            frame = client.frames[-1]
            timings = result["timings"]
            out.append(
                {
                    "segment": segment,
                    "end_to_end": elapsed,
                    "inference": timings["inference"],
                    "queue": timings["queue"],
                    "server_total": timings["total"],
                    "overhead": elapsed - timings["inference"] - timings["queue"],
                    "overhead_with_queue": elapsed - timings["inference"],
                    "bytes": result["bytes"],
                    "region_voxels": int(
                        np.prod([b - a for a, b in zip(frame.start, frame.stop, strict=True)])
                    ),
                    "volume_voxels": volume_voxels,
                    "rebuilt": result["rebuilt"],
                }
            )
            time.sleep(float(rng.uniform(1.0, 3.0)))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    def of(key: str) -> list[float]:
        return [s[key] for s in samples]

    return {
        "prompts": len(samples),
        "end_to_end_p50_s": percentile(of("end_to_end"), 50),
        "end_to_end_p95_s": percentile(of("end_to_end"), 95),
        "inference_p50_s": percentile(of("inference"), 50),
        "queue_p50_s": percentile(of("queue"), 50),
        "overhead_p50_ms": 1000 * percentile(of("overhead"), 50),
        "overhead_p95_ms": 1000 * percentile(of("overhead"), 95),
        "overhead_with_queue_p50_ms": 1000 * percentile(of("overhead_with_queue"), 50),
        "bytes_mean": statistics.fmean(of("bytes")) if samples else float("nan"),
        "bytes_max": max(of("bytes")) if samples else 0,
        "region_share_max": max(s["region_voxels"] / s["volume_voxels"] for s in samples) if samples else 0,
        "rebuilt": sum(bool(s["rebuilt"]) for s in samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--prompts", type=int, default=20, help="prompts per annotator and round")
    parser.add_argument("--annotators", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "interactive.json")
    args = parser.parse_args()

    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    rng = np.random.default_rng(args.seed)
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "slices": args.slices,
        "workers": args.workers,
        "prompts_per_annotator": args.prompts,
        "rounds": {},
    }
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="annovox-bench-")))
        print(f"building a {args.slices}-slice series from {SOURCE} ...")
        build_series(tmp / "series", slices=args.slices)
        database_url = stack.enter_context(database_like_ci("annovox_bench"))
        env = {"REDIS_URL": redis_url, "ANNOVOX_INPROCESS_WORKER": "0"}
        server = stack.enter_context(AnnovoxServer(tmp / "annovox", database_url=database_url, extra_env=env))
        server.manage("import_dicom", str(tmp / "series"))
        total = sum(args.annotators)
        setup = server.manage("shell", "--no-imports", "-c", SETUP.format(count=total)).stdout.split()
        series_uid, segmentation = setup[-2], int(setup[-1])
        for _ in range(args.workers):
            server.start_worker("--device", "cpu", "--threads", "1", "--max-sessions", str(total))
        print(f"{args.workers} workers up; database {server.database}, channel layer Redis")
        points = organ_points(args.slices, total, rng)
        segment = 0
        for count in args.annotators:
            samples: list[dict[str, Any]] = []
            barrier = threading.Barrier(count)
            threads = []
            for _ in range(count):
                segment += 1
                threads.append(
                    threading.Thread(
                        target=annotator,
                        args=(server, series_uid, segmentation, segment, points[segment - 1], args.prompts,
                              args.seed * 1000 + segment, barrier, samples),
                    )
                )  # fmt: skip
            began = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            summary = summarise(samples)
            summary["wall_s"] = time.perf_counter() - began
            results["rounds"][str(count)] = {"summary": summary, "samples": samples}
            ms = {k: v * 1000 for k, v in summary.items() if k.endswith("_s")}
            print(
                f"{count:>2} annotators: {summary['prompts']} prompts, end-to-end p50 "
                f"{ms['end_to_end_p50_s']:.0f} ms p95 {ms['end_to_end_p95_s']:.0f} ms, engine p50 "
                f"{ms['inference_p50_s']:.0f} ms, queue p50 {ms['queue_p50_s']:.0f} ms, overhead p50 "
                f"{summary['overhead_p50_ms']:.1f} ms p95 {summary['overhead_p95_ms']:.1f} ms, "
                f"{summary['bytes_mean'] / 1000:.1f} kB per result (largest region "
                f"{summary['region_share_max'] * 100:.2f} % of the volume)"
            )
    single = results["rounds"].get("1", {}).get("summary")
    four = results["rounds"].get("4", {}).get("summary")
    if single and four:
        ratio = four["end_to_end_p95_s"] / single["end_to_end_p95_s"]
        results["p95_ratio_4_vs_1"] = ratio
        print(f"p95 with 4 annotators / p95 with 1: {ratio:.2f} (target ≤ 2)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
