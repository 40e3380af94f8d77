"""Inference engine benchmark: per-prompt latency and memory, and our session against the reference session.

Measured, with random weights in the official architecture (ResEnc-L, 6 stages up to 320 features, 192³
patch: ``tests/engine_checkpoints.official_architecture_folder``) on ``--device``:

1. **Latency per prompt and peak memory.** On the shared CT ``ct_totalseg/nifti/example_ct.nii.gz`` (3 mm,
   122×101×112), one object after another from its TotalSegmentator label map: for each of ``--objects`` small
   structures, a new object and a positive point at the structure's most interior voxel. The first prompt
   after loading is a warm-up and not counted. p50/p95 of the prompt's wall time; peak memory is the process's
   peak resident set on CPU and ``torch.cuda.max_memory_allocated`` on CUDA. AutoZoom is off, as in the
   issue's "small objects without zoom" case: one forward pass per prompt. (With random weights the predicted
   "object" is arbitrary and AutoZoom would zoom out and refine for many passes, which measures nothing.)
2. **Our session against the reference** (``nnInteractiveInferenceSession`` of the PyPI package
   ``nninteractive``) on the same folder, image and prompts, one after the other in this process: the
   reference's p50 divided by ours.
3. **Memory of concurrent sessions** on a 512×512×300 float32 CT (the 20 shared DICOM slices repeated), with
   a small network so that the figure is the sessions' own: 1, 4 and 16 sessions, each with the image set and
   one prompt placed, then idle. The resident set grows by about one image per session if the engine keeps
   one preprocessed copy and compact prompt channels; the target is at most 1.3× the image's size per
   additional session.

Targets (issue 3): on an H100, p50 ≤ 100 ms per prompt for small objects without zoom, and our session at
least 1.25× faster than the reference; on CPU, each additional idle session ≤ 1.3× the image's size.

A forward pass of the official architecture takes minutes on two CPU cores; keep ``--objects`` small there.

Usage: ``.venv/bin/python bench/engine.py [--device cpu|cuda] [--objects 5] [--json OUT]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``tests`` and ``inference`` importable
    sys.path.insert(0, str(ROOT))

from inference import Session, load_model  # noqa: E402
from tests.engine_checkpoints import make_checkpoint_folder, official_architecture_folder  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"
CT = SHARED_DATA / "ct_totalseg" / "nifti" / "example_ct.nii.gz"
CT_LABELS = SHARED_DATA / "ct_totalseg" / "nifti" / "example_seg_fast_force_split.nii.gz"
CT_SLICES = SHARED_DATA / "ct_totalseg" / "dicom_raw_uidfixed"
SESSION_COUNTS = (1, 4, 16)


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def resident_bytes() -> int:
    """The process's current resident set (``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_resident_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def summary(seconds: list[float]) -> dict[str, Any]:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(seconds),
        "p50_ms": round(statistics.median(seconds) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "all_ms": [round(s * 1000, 1) for s in seconds],
    }


# --- data ---------------------------------------------------------------------------------------------------


def load_ct() -> tuple[np.ndarray, np.ndarray]:
    import nibabel

    image = np.asarray(nibabel.load(CT).dataobj, dtype=np.float32)
    labels = np.asarray(nibabel.load(CT_LABELS).dataobj).astype(np.int16)
    return image, labels


def small_object_points(labels: np.ndarray, count: int) -> list[tuple[int, int, int]]:
    """The most interior voxel of each of the ``count`` smallest structures that are not tiny."""
    from scipy import ndimage

    sizes = np.bincount(labels.ravel())
    candidates = [int(v) for v in np.argsort(sizes) if v != 0 and sizes[v] >= 200]
    points = []
    for value in candidates[:count]:
        depth = ndimage.distance_transform_edt(labels == value)
        points.append(tuple(int(c) for c in np.unravel_index(int(np.argmax(depth)), depth.shape)))
    if len(points) < count:
        raise SystemExit(f"only {len(points)} structures are large enough for {count} objects")
    return points  # type: ignore[return-value]


def large_ct(slices: int = 300) -> np.ndarray:
    """A 512×512×``slices`` float32 CT: the shared 20 slices, repeated (only its size matters)."""
    import pydicom

    files = sorted(CT_SLICES.glob("*.dcm"))
    stack = []
    for path in files:
        ds = pydicom.dcmread(path)
        stack.append(ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    volume = np.stack(stack)
    return np.ascontiguousarray(np.resize(volume, (slices, *volume.shape[1:])))


# --- measurements -------------------------------------------------------------------------------------------


def timed(action: Callable[[], Any]) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    action()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def ours(folder: Path, device: str, image: np.ndarray, points: list[tuple[int, int, int]]) -> dict[str, Any]:
    model = load_model(folder, device, threads=os.cpu_count())
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    session = Session(model, autozoom=False)
    session.set_image(image)
    seconds = []
    for number, point in enumerate([points[0], *points]):
        session.reset()
        elapsed = timed(lambda p=point: session.add_point(p, positive=True))
        if number:  # the first prompt after loading warms up caches and allocators
            seconds.append(elapsed)
    result = summary(seconds)
    result["peak_memory_bytes"] = (
        torch.cuda.max_memory_allocated() if device.startswith("cuda") else peak_resident_bytes()
    )
    return result


def reference(
    folder: Path, device: str, image: np.ndarray, points: list[tuple[int, int, int]]
) -> dict[str, Any]:
    from nnInteractive.inference.inference_session import nnInteractiveInferenceSession

    session = nnInteractiveInferenceSession(
        device=torch.device(device),
        use_torch_compile=False,
        verbose=False,
        torch_n_threads=os.cpu_count() or 1,
        do_autozoom=False,
    )
    session.initialize_from_trained_model_folder(str(folder), use_fold=0)
    session.set_image(image[None])
    target = np.zeros(image.shape, np.uint8)
    session.set_target_buffer(target)
    seconds = []
    for number, point in enumerate([points[0], *points]):
        session.reset_interactions()
        elapsed = timed(lambda p=point: session.add_point_interaction(p, include_interaction=True))
        if number:
            seconds.append(elapsed)
    return summary(seconds)


def session_memory(device: str, work: Path) -> dict[str, Any]:
    """Resident-set growth per idle session on a 512×512×300 image, with a small network."""
    model = load_model(make_checkpoint_folder(work / "small"), device)
    image = large_ct()
    centre = tuple(s // 2 for s in image.shape)
    gc.collect()
    baseline = resident_bytes()
    sessions: list[Session] = []
    rows = []
    for count in SESSION_COUNTS:
        while len(sessions) < count:
            session = Session(model)
            session.set_image(image)
            session.add_point(centre, positive=True)  # type: ignore[arg-type]
            sessions.append(session)
        gc.collect()
        grown = resident_bytes() - baseline
        rows.append(
            {
                "sessions": count,
                "resident_growth_bytes": grown,
                "per_session_bytes": grown // count,
                "per_session_in_images": round(grown / count / image.nbytes, 3),
                "engine_reported_bytes": sum(s.memory_bytes() for s in sessions),
            }
        )
    # The marginal cost of sessions 5..16, which excludes one-off allocations of the first session.
    extra = (rows[-1]["resident_growth_bytes"] - rows[1]["resident_growth_bytes"]) / (
        SESSION_COUNTS[-1] - SESSION_COUNTS[1]
    )
    return {
        "image_shape": list(image.shape),
        "image_bytes": image.nbytes,
        "rows": rows,
        "additional_session_bytes": int(extra),
        "additional_session_in_images": round(extra / image.nbytes, 3),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine(),
        "device": args.device,
    }
    with tempfile.TemporaryDirectory(prefix="annovox-bench-engine-") as tmp:
        work = Path(tmp)
        if not args.skip_memory:
            print("memory of 1, 4 and 16 idle sessions ...", flush=True)
            results["sessions"] = session_memory(args.device, work)
        print("building the official architecture with random weights ...", flush=True)
        folder = official_architecture_folder(work / "official")
        image, labels = load_ct()
        points = small_object_points(labels, args.objects)
        results["image_shape"] = list(image.shape)
        results["points"] = [list(p) for p in points]
        print(f"our session, {args.objects} objects ...", flush=True)
        results["ours"] = ours(folder, args.device, image, points)
        if not args.skip_reference:
            print(f"reference session, {args.objects} objects ...", flush=True)
            results["reference"] = reference(folder, args.device, image, points)
            results["speedup"] = round(results["reference"]["p50_ms"] / results["ours"]["p50_ms"], 2)
    return results


def table(results: dict[str, Any]) -> str:
    lines = [f"device: {results['device']}  machine: {results['machine']}"]
    ours_ = results["ours"]
    lines.append(
        f"official architecture, our session: p50 {ours_['p50_ms']} ms, p95 {ours_['p95_ms']} ms "
        f"({ours_['n']} prompts), peak memory {ours_['peak_memory_bytes'] / 2**20:.0f} MiB"
    )
    if "reference" in results:
        ref = results["reference"]
        lines.append(
            f"reference session: p50 {ref['p50_ms']} ms, p95 {ref['p95_ms']} ms; "
            f"ours is {results['speedup']}x faster (p50)"
        )
    if "sessions" in results:
        mem = results["sessions"]
        lines.append(f"idle sessions on a {'x'.join(map(str, mem['image_shape']))} float32 image:")
        for row in mem["rows"]:
            lines.append(
                f"  {row['sessions']:>2} sessions: +{row['resident_growth_bytes'] / 2**20:.0f} MiB resident, "
                f"{row['per_session_in_images']} images per session"
            )
        extra = mem["additional_session_in_images"]
        lines.append(f"  each additional session: {extra} images (target ≤ 1.3)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--objects", type=int, default=5, help="small structures prompted, one point each")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = run(args)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
