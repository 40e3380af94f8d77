"""DICOMweb benchmark: Annovox and Orthanc side by side on the same data.

Starts both servers on free loopback ports in a temporary folder (``tests/servers.py``): Annovox under Daphne
with the embedded default (SQLite in the temporary data folder), or with a fresh PostgreSQL database on the
server of ``DATABASE_URL`` when that is set (dropped afterwards); Orthanc 1.10 with its DICOMweb plugin, from
the loopback configuration in ``../shared/data/tools/orthanc.json``, default settings otherwise.

Data: every DICOM file in ``../shared/data`` (as in the interoperability test), plus two 512×512×300 CT
series built from the 20 shared TotalSegmentator slices with correct geometry (``bench/series_builder.py``):
series A is imported into Annovox with ``manage.py import_dicom``, series B by STOW-RS; Orthanc receives both
by STOW-RS. Both servers hold the same instances when the measurements start.

Measured, on series B, for each server:
- import time of the 300 slices (target for Annovox: under 15 s by either path);
- QIDO-RS latency (studies, a PatientName wildcard, the series of a study, the 300 instances of a series),
  p50/p95 over ``--repetitions`` sequential requests after one warm-up request;
- series metadata latency (``/studies/{st}/series/{se}/metadata``): the first (cold) request, then p50/p95;
- WADO-RS frame throughput: all 300 frames, one frame per request, ``--concurrency`` requests in flight (a
  viewer's pattern), Accept ``multipart/related; type="application/octet-stream"; transfer-syntax=*``;
  frames/s and MB/s of frame payload, median over ``--frame-rounds`` rounds; once with the
  ``Accept-Encoding: gzip, deflate`` that every browser sends (Orthanc then gzips each frame), once with
  ``identity`` (no compression anywhere).
For metadata and frames the server process's own CPU time per request (from /proc) is reported too: unlike
the rates, it does not depend on how fast this client is.
Targets: Annovox frame throughput at least Orthanc's (judged in both cases), metadata latency (p50) at most
Orthanc's.

The client runs on the same machine as both servers and shares its cores with them.

Usage: ``.venv/bin/python bench/dicomweb.py [--repetitions 30] [--concurrency 6] [--json OUT]``
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``tests`` and ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench.series_builder import BuiltSeries, build_series  # noqa: E402
from tests.servers import (  # noqa: E402
    SHARED_DATA,
    AnnovoxServer,
    OrthancServer,
    database_like_ci,
    shared_dicom_files,
    stow,
)

FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
# Browsers (and so a web viewer) always offer gzip; Orthanc then compresses every frame. "identity" measures
# the servers without compression.
FRAME_ENCODINGS = {"browser": "gzip, deflate", "identity": "identity"}
IMPORT_TARGET_S = 15.0
Server = AnnovoxServer | OrthancServer
SERVERS = ("orthanc", "annovox")


class BenchError(RuntimeError):
    pass


# --- the machine --------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    mem_kib = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024**2, 1),
        "python": platform.python_version(),
        "commit": commit,
    }


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat; 0 where unknown."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    ticks = [int(v) for v in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def server_cpu_seconds(server: Server) -> float:
    """CPU time the server process has used (all its threads); 0 when unknown."""
    return process_cpu_seconds(server.process.pid) if server.process else 0.0


# --- measuring ----------------------------------------------------------------------------------------------


def summary(samples: list[float]) -> dict[str, Any]:
    values = np.asarray(samples, dtype=float)
    return {
        "n": len(samples),
        "p50_ms": round(float(np.percentile(values, 50)) * 1000, 2),
        "p95_ms": round(float(np.percentile(values, 95)) * 1000, 2),
        "mean_ms": round(float(values.mean()) * 1000, 2),
        "max_ms": round(float(values.max()) * 1000, 2),
    }


def timed_get(
    session: requests.Session, url: str, headers: dict[str, str]
) -> tuple[float, requests.Response]:
    start = time.perf_counter()
    response = session.get(url, headers=headers, timeout=300)
    _ = response.content  # the whole body, not only the headers
    return time.perf_counter() - start, response


def latency(server: Server, path: str, repetitions: int, *, expect: int | None = None) -> dict[str, Any]:
    """One warm-up (reported as ``first_ms``), then ``repetitions`` sequential GETs on one connection."""
    url = f"{server.dicomweb_url}{path}"
    headers = {**server.headers(), "Accept": "application/dicom+json"}
    samples = []
    with requests.Session() as session:
        first, response = timed_get(session, url, headers)
        if response.status_code != 200:
            raise BenchError(f"GET {path}: HTTP {response.status_code} {response.text[:200]}")
        results = len(response.json())
        if expect is not None and results != expect:
            raise BenchError(f"GET {path}: {results} results, expected {expect}")
        cpu_start = server_cpu_seconds(server)
        for _ in range(repetitions):
            elapsed, response = timed_get(session, url, headers)
            if response.status_code != 200:
                raise BenchError(f"GET {path}: HTTP {response.status_code}")
            samples.append(elapsed)
        cpu = server_cpu_seconds(server) - cpu_start
    return {
        **summary(samples),
        "first_ms": round(first * 1000, 2),
        "results": results,
        "server_cpu_ms": round(cpu / max(repetitions, 1) * 1000, 2),
    }


def _frame_payload(response: requests.Response) -> int:
    """Bytes of the one frame in a multipart/related frame response (checked to be one part)."""
    content_type = response.headers.get("Content-Type", "")
    if not content_type.startswith("multipart/related"):
        raise BenchError(f"frame response of type {content_type!r}")
    body = response.content
    boundary = content_type.split("boundary=", 1)[1].split(";", 1)[0].strip('"').encode()
    delimiter = b"--" + boundary
    start = body.index(b"\r\n\r\n", body.index(delimiter)) + 4
    end = body.index(b"\r\n" + delimiter, start)
    after = end + 2 + len(delimiter)
    if body[after : after + 2] != b"--":
        raise BenchError("frame response with more than one part")
    return end - start


def frame_round(server: Server, built: BuiltSeries, concurrency: int, accept_encoding: str) -> dict[str, Any]:
    """Fetch every frame of the series once, ``concurrency`` requests at a time."""
    local = threading.local()
    headers = {**server.headers(), "Accept": FRAME_ACCEPT, "Accept-Encoding": accept_encoding}
    encodings: set[str] = set()
    base = f"{server.dicomweb_url}/studies/{built.study_uid}/series/{built.series_uid}/instances"
    sessions: list[requests.Session] = []
    lock = threading.Lock()

    def fetch(sop_uid: str) -> int:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            with lock:
                sessions.append(session)
        response = session.get(f"{base}/{sop_uid}/frames/1", headers=headers, timeout=300)
        if response.status_code != 200:
            raise BenchError(f"frame of {sop_uid}: HTTP {response.status_code} {response.text[:200]}")
        encodings.add(response.headers.get("Content-Encoding", "identity"))
        return _frame_payload(response)

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            cpu_start, start = server_cpu_seconds(server), time.perf_counter()
            sizes = list(pool.map(fetch, built.sop_uids))
            elapsed = time.perf_counter() - start
            cpu = server_cpu_seconds(server) - cpu_start
    finally:
        for session in sessions:
            session.close()
    expected = 512 * 512 * 2
    if any(size != expected for size in sizes):
        raise BenchError(
            f"frame sizes {sorted(set(sizes))}, expected {expected} bytes (uncompressed 512x512)"
        )
    return {
        "seconds": round(elapsed, 3),
        "frames_per_s": round(len(sizes) / elapsed, 1),
        "mb_per_s": round(sum(sizes) / elapsed / 1e6, 1),
        "content_encoding": ",".join(sorted(encodings)),
        "server_cpu_ms_per_frame": round(cpu / len(sizes) * 1000, 2),
    }


def frames(
    server: Server, built: BuiltSeries, concurrency: int, rounds: int, accept_encoding: str
) -> dict[str, Any]:
    results = [frame_round(server, built, concurrency, accept_encoding) for _ in range(rounds)]
    best = max(results, key=lambda r: r["frames_per_s"])
    return {
        "frames": len(built.sop_uids),
        "concurrency": concurrency,
        "accept_encoding": accept_encoding,
        "content_encoding": ",".join(sorted({r["content_encoding"] for r in results})),
        "rounds": results,
        "frames_per_s": statistics.median(r["frames_per_s"] for r in results),
        "mb_per_s": statistics.median(r["mb_per_s"] for r in results),
        "best_frames_per_s": best["frames_per_s"],
        "server_cpu_ms_per_frame": statistics.median(r["server_cpu_ms_per_frame"] for r in results),
    }


def stow_files(server: Server, files: list[Path], batch: int) -> tuple[float, int]:
    """STOW-RS ``files`` in batches of ``batch``: (seconds, instances the server reported stored)."""
    stored = 0
    with requests.Session() as session:
        start = time.perf_counter()
        for i in range(0, len(files), batch):
            status, document = stow(
                session, server.dicomweb_url, [p.read_bytes() for p in files[i : i + batch]], server.headers()
            )
            if status not in (200, 202):
                raise BenchError(f"STOW-RS: HTTP {status}")
            stored += len(document.get("00081199", {}).get("Value", []))
        return time.perf_counter() - start, stored


def load_shared_data(server: Server, per_file: bool) -> int:
    """Every shared DICOM file by STOW-RS: one per request into Orthanc, one request per folder into ours."""
    groups: dict[str, list[bytes]] = {}
    for name, data in shared_dicom_files(SHARED_DATA):
        groups.setdefault(name if per_file else name.rsplit("/", 1)[0], []).append(data)
    stored = 0
    with requests.Session() as session:
        for payloads in groups.values():
            _, document = stow(session, server.dicomweb_url, payloads, server.headers())
            stored += len(document.get("00081199", {}).get("Value", []))
    return stored


def count_instances(server: Server, built: BuiltSeries) -> int:
    path = f"/studies/{built.study_uid}/series/{built.series_uid}/instances"
    response = requests.get(
        f"{server.dicomweb_url}{path}",
        headers={**server.headers(), "Accept": "application/dicom+json"},
        timeout=60,
    )
    return len(response.json()) if response.status_code == 200 else 0


# --- the run ------------------------------------------------------------------------------------------------


def step(results: dict[str, Any], key: str, what: Callable[[], Any]) -> Any:
    """Run one measurement; a failure is recorded (and printed) instead of ending the benchmark."""
    try:
        value = what()
    except Exception as exc:  # a missing endpoint must not hide the other numbers
        message = f"{key}: {type(exc).__name__}: {exc}"
        print(f"  failed: {message}", file=sys.stderr)
        results.setdefault("errors", []).append(message)
        return None
    return value


def run(args: argparse.Namespace) -> dict[str, Any]:
    busy_start, wall_start = machine_busy_seconds(), time.monotonic()
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "parameters": {
            "slices": args.slices,
            "repetitions": args.repetitions,
            "concurrency": args.concurrency,
            "frame_rounds": args.frame_rounds,
            "stow_batch": args.stow_batch,
        },
        "import": {},
        "qido": {},
        "metadata": {},
        "frames": {},
    }
    log = print if not args.quiet else (lambda *a, **k: None)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="annovox-bench-")))
        log(f"building two {args.slices}-slice series in {tmp} ...")
        series_a = build_series(
            tmp / "series_a", slices=args.slices, series_number=1, accession_number="BENCHA"
        )
        series_b = build_series(
            tmp / "series_b", slices=args.slices, series_number=2, accession_number="BENCHB"
        )
        results["series_mb"] = round(series_b.total_bytes / 1e6, 1)

        database_url = stack.enter_context(database_like_ci("annovox_bench"))
        log("starting Orthanc and Annovox ...")
        with ThreadPoolExecutor(2) as pool:
            orthanc_start = pool.submit(OrthancServer(tmp / "orthanc", dicom_server=False).start)
            annovox_start = pool.submit(
                AnnovoxServer(tmp / "annovox", database_url=database_url, username="bench").start
            )
            orthanc, annovox = orthanc_start.result(), annovox_start.result()
        stack.callback(orthanc.stop)
        stack.callback(annovox.stop)
        servers: dict[str, Server] = {"orthanc": orthanc, "annovox": annovox}
        system = requests.get(f"{orthanc.url}/system", timeout=10).json()
        plugin = requests.get(f"{orthanc.url}/plugins/dicom-web", timeout=10).json()
        results["servers"] = {
            "orthanc": f"Orthanc {system.get('Version')}, DICOMweb plugin {plugin.get('Version')}",
            "annovox": f"Annovox under Daphne, {annovox.database}",
        }

        log("loading the shared data into both ...")
        results["shared_instances"] = {
            "orthanc": step(results, "shared data into Orthanc", lambda: load_shared_data(orthanc, True)),
            "annovox": step(results, "shared data into Annovox", lambda: load_shared_data(annovox, False)),
        }

        log("importing the built series ...")
        imports = results["import"]

        def import_dicom() -> float:
            start = time.perf_counter()
            annovox.manage("import_dicom", "--quiet", str(tmp / "series_a"))
            return time.perf_counter() - start

        imports["annovox_import_dicom_s"] = step(results, "import_dicom", import_dicom)
        stowed = step(
            results, "STOW into Annovox", lambda: stow_files(annovox, series_b.files, args.stow_batch)
        )
        imports["annovox_stow_s"] = stowed[0] if stowed else None
        for name, built in (("a", series_a), ("b", series_b)):
            stowed = step(
                results, "STOW into Orthanc", partial(stow_files, orthanc, built.files, args.stow_batch)
            )
            imports[f"orthanc_stow_{name}_s"] = stowed[0] if stowed else None
        imports = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in imports.items()}
        results["import"] = imports
        results["instances_in_series"] = {
            name: {"a": count_instances(server, series_a), "b": count_instances(server, series_b)}
            for name, server in servers.items()
        }

        study, series = series_b.study_uid, series_b.series_uid
        queries = {
            "studies (all)": ("/studies", None),
            "studies PatientName=Annovox*": ("/studies?PatientName=Annovox*", 2),
            "series of a study": (f"/studies/{study}/series", 1),
            "instances of the series": (f"/studies/{study}/series/{series}/instances", args.slices),
        }
        for label, (path, expect) in queries.items():
            log(f"QIDO {label} ...")
            results["qido"][label] = {
                name: step(
                    results,
                    f"QIDO {label} on {name}",
                    partial(latency, server, path, args.repetitions, expect=expect),
                )
                for name, server in servers.items()
            }
        log("series metadata ...")
        metadata_path = f"/studies/{study}/series/{series}/metadata"
        results["metadata"] = {
            name: step(
                results,
                f"metadata on {name}",
                partial(latency, server, metadata_path, args.repetitions, expect=args.slices),
            )
            for name, server in servers.items()
        }
        for mode, accept_encoding in FRAME_ENCODINGS.items():
            log(f"frames, Accept-Encoding: {accept_encoding} ...")
            results["frames"][mode] = {
                name: step(
                    results,
                    f"frames ({mode}) on {name}",
                    partial(frames, server, series_b, args.concurrency, args.frame_rounds, accept_encoding),
                )
                for name, server in servers.items()
            }
        for name, server in servers.items():  # a server that died mid-run: say how, with its last words
            if server.process is not None and server.process.poll() is not None:
                tail = server.log.read_text(errors="replace")[-1500:] if server.log.exists() else ""
                results.setdefault("errors", []).append(
                    f"{name} exited during the run (status {server.process.returncode}), log:\n{tail}"
                )
        # Other work on the machine skews every number: how much CPU went to processes outside the benchmark
        # (this client, its servers and its import_dicom run).
        own = sum(process_cpu_seconds(s.process.pid) for s in servers.values() if s.process)
        times = os.times()
        own += times.user + times.system + times.children_user + times.children_system
        busy = machine_busy_seconds() - busy_start
        wall = time.monotonic() - wall_start
        results["cpu"] = {
            "wall_s": round(wall, 1),
            "machine_busy_s": round(busy, 1),
            "benchmark_s": round(own, 1),
            "other_processes_s": round(max(busy - own, 0.0), 1),
        }
    results["targets"] = targets(results)
    return results


def targets(results: dict[str, Any]) -> dict[str, bool | None]:
    def get(*keys: str) -> Any:
        value: Any = results
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    import_times = [get("import", k) for k in ("annovox_import_dicom_s", "annovox_stow_s")]
    ours_meta, theirs_meta = get("metadata", "annovox", "p50_ms"), get("metadata", "orthanc", "p50_ms")
    met: dict[str, bool | None] = {
        "import_under_15_s": None if None in import_times else all(t < IMPORT_TARGET_S for t in import_times),
    }
    for mode in FRAME_ENCODINGS:
        ours, theirs = (get("frames", mode, name, "frames_per_s") for name in ("annovox", "orthanc"))
        met[f"frames_at_least_orthanc ({mode})"] = None if None in (ours, theirs) else ours >= theirs
    met["metadata_at_most_orthanc"] = None if None in (ours_meta, theirs_meta) else ours_meta <= theirs_meta
    return met


# --- the report ---------------------------------------------------------------------------------------------


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "failed"
    return f"{value:g}{unit}" if isinstance(value, int | float) else str(value)


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, ...]] = []
    imports = results["import"]
    slices = results["parameters"]["slices"]
    rows.append(
        (
            f"import {slices} slices: manage.py import_dicom",
            "",
            _fmt(imports.get("annovox_import_dicom_s"), " s"),
        )
    )
    rows.append(
        (
            f"import {slices} slices: STOW-RS ({results['parameters']['stow_batch']} per request)",
            _fmt(imports.get("orthanc_stow_b_s"), " s"),
            _fmt(imports.get("annovox_stow_s"), " s"),
        )
    )
    for label, per_server in results["qido"].items():
        cells = [
            "failed" if not r else f"{r['p50_ms']:.1f} / {r['p95_ms']:.1f} ms"
            for r in (per_server.get("orthanc"), per_server.get("annovox"))
        ]
        rows.append((f"QIDO {label}, p50 / p95", cells[0], cells[1]))
    metadata = [results["metadata"].get(n) for n in SERVERS]
    rows.append(
        (
            f"series metadata ({slices} instances), first request",
            *(_fmt(m and m["first_ms"], " ms") for m in metadata),
        )
    )
    rows.append(
        (
            "series metadata, p50 / p95",
            *("failed" if not m else f"{m['p50_ms']:.1f} / {m['p95_ms']:.1f} ms" for m in metadata),
        )
    )
    rows.append(
        (
            "series metadata: server CPU per request",
            *(_fmt(m and m["server_cpu_ms"], " ms") for m in metadata),
        )
    )
    concurrency = results["parameters"]["concurrency"]
    for mode, accept_encoding in FRAME_ENCODINGS.items():
        per_server = [results["frames"].get(mode, {}).get(n) for n in SERVERS]
        rows.append(
            (
                f"WADO-RS frames, {concurrency} in flight, Accept-Encoding {accept_encoding}",
                *(
                    "failed"
                    if not f
                    else f"{f['frames_per_s']:g}/s, {f['mb_per_s']:g} MB/s ({f['content_encoding']})"
                    for f in per_server
                ),
            )
        )
        rows.append(
            ("  server CPU per frame", *(_fmt(f and f["server_cpu_ms_per_frame"], " ms") for f in per_server))
        )
    width = max(len(r[0]) for r in rows)
    cell = max(22, *(len(r[1]) for r in rows), *(len(r[2]) for r in rows))
    lines = [f"{'':{width}}  {'Orthanc':>{cell}}  {'Annovox':>{cell}}"]
    lines += [f"{name:{width}}  {a:>{cell}}  {b:>{cell}}" for name, a, b in rows]
    lines.append("")
    cpu = results["cpu"]
    lines.append(
        f"CPU: {cpu['wall_s']} s wall; the machine was busy {cpu['machine_busy_s']} CPU-s: "
        f"{cpu['benchmark_s']} for the benchmark and its servers, {cpu['other_processes_s']} for others"
    )
    for target, met in results["targets"].items():
        lines.append(f"target {target}: {'met' if met else 'NOT met' if met is False else 'not measured'}")
    for error in results.get("errors", []):
        lines.append(f"error: {error}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repetitions", type=int, default=30, help="requests per QIDO/metadata measurement")
    parser.add_argument("--concurrency", type=int, default=6, help="frame requests in flight")
    parser.add_argument("--frame-rounds", type=int, default=3, help="times all frames are fetched")
    parser.add_argument("--slices", type=int, default=300, help="slices of the built series")
    parser.add_argument("--stow-batch", type=int, default=50, help="files per STOW-RS request")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--quiet", action="store_true", help="print only the table")
    args = parser.parse_args()
    results = run(args)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    sys.exit(1 if results.get("errors") else 0)


if __name__ == "__main__":
    main()
