"""DICOM SEG benchmark: saving (encode + serialise) and reading a clinical-size segmentation, against dcmqi.

Builds a 512×512×``--slices`` CT series from the shared TotalSegmentator slices (``bench/series_builder.py``,
in a temporary folder) and a labelmap of ``--segments`` segments on it: the largest TotalSegmentator
structures of those slices, repeated back and forth like the slices themselves (so each organ lies on every
slice: a worst case for the frame count), plus one sphere that overlaps the liver and its neighbours on
a second layer, as a lesion drawn inside an organ would. Then, in this process:

1. **Save**: ``write_seg`` + ``seg_bytes`` (webapp.segmentations.dicom_seg.writer): the first call (which pays
   highdicom's one-time set-up) and the median of ``--repeats`` more; the split between encoding and
   serialising; and end to end like a command-line tool: reading the series' headers from disk and
   writing the file.
2. **Read**: ``pydicom.dcmread`` of the bytes + ``read_seg`` onto the volume (median of ``--repeats``),
   checked to give back every segment voxel for voxel.
3. **dcmqi** (PyPI ``dcmqi``): ``itkimage2segimage`` on the same input (one NIfTI per layer, the metadata
   JSON and the DICOM folder, written beforehand) and, for reference, ``segimage2itkimage`` on our SEG.
   These are command-line tools that read their input from disk, so compare them with the end-to-end figure.
4. With ``--highdicom``: highdicom's own complete encoding of the same input (``Segmentation`` from the
   stacked-segments array, then ``save_as``), once: what the writer's fast path saves.

Every figure is wall time with the CPU time of this process (and of the programs it ran) beside it: on a
shared machine the CPU time moves less with other load. The JSON also keeps the load average before and
after the run.

Targets (issue 6): saving takes at most 2 s and less than ``itkimage2segimage`` on the same input; reading
takes at most 1 s.

Usage: ``.venv/bin/python bench/seg.py [--slices 300] [--segments 20] [--repeats 3] [--highdicom]
[--json bench/results/seg.json]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` and ``webapp`` importable
    sys.path.insert(0, str(ROOT))
# webapp.studies.volume's package imports its Django models; the settings are the embedded default's.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

import django  # noqa: E402

django.setup()

from bench.series_builder import SOURCE, build_series, ping_pong  # noqa: E402
from webapp.segmentations.dicom_seg import Code, Labelmap, SegmentInfo, pack_layers  # noqa: E402
from webapp.segmentations.dicom_seg.writer import seg_bytes, write_seg  # noqa: E402
from webapp.studies.volume import Volume, volume_from_datasets  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"
LABELS = SHARED_DATA / "ct_totalseg" / "nifti" / "example_seg_dicom_dicomorder.nii.gz"
CLASSES = SHARED_DATA / "ct_totalseg" / "totalseg_classmap.json"
ANATOMY = Code("123037004", "SCT", "Anatomical Structure")
TARGET_SAVE_S = 2.0


def tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


@dataclass
class Timing:
    wall_s: float = 0.0
    cpu_s: float = 0.0  # of this process and the programs it ran: less sensitive to other load than wall time


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def clock() -> Iterator[Timing]:
    timing = Timing()
    wall, cpu, children = time.perf_counter(), time.process_time(), children_cpu_s()
    yield timing
    timing.wall_s = time.perf_counter() - wall
    timing.cpu_s = time.process_time() - cpu + children_cpu_s() - children


def medians(timings: list[Timing]) -> dict[str, Any]:
    return {
        "wall_median_s": statistics.median(t.wall_s for t in timings),
        "cpu_median_s": statistics.median(t.cpu_s for t in timings),
        "wall_s": [round(t.wall_s, 3) for t in timings],
        "cpu_s": [round(t.cpu_s, 3) for t in timings],
    }


def shown(figures: dict[str, Any]) -> str:
    return f"{figures['wall_median_s']:.2f} s (CPU {figures['cpu_median_s']:.2f} s)"


def make_labelmap(volume: Volume, segments: int) -> Labelmap:
    """``segments - 1`` TotalSegmentator structures (largest first) on the ping-ponged slices, and a sphere
    overlapping the liver on a second layer."""
    image = nib.load(LABELS)
    assert isinstance(image, nib.Nifti1Image)
    labels = np.asanyarray(image.dataobj).transpose(2, 1, 0)  # (i, j, k) → [k, j, i]
    names = json.loads(CLASSES.read_text())["total"]
    values, counts = np.unique(labels[labels > 0], return_counts=True)
    chosen = [int(v) for v in values[np.argsort(counts)[::-1]][: segments - 1]]
    if len(chosen) < segments - 1:
        raise SystemExit(
            f"the shared labels have only {len(chosen)} structures; ask for at most {len(chosen) + 1}"
        )
    stacked = labels[ping_pong(volume.array.shape[0], labels.shape[0])]
    masks = {number: stacked == value for number, value in enumerate(chosen, 1)}
    liver = np.argwhere(stacked == 5).mean(axis=0)  # TotalSegmentator 5 = liver
    k, j, i = np.ogrid[: volume.array.shape[0], : volume.array.shape[1], : volume.array.shape[2]]
    step, row, column = volume.spacing[2], volume.spacing[1], volume.spacing[0]
    distance = ((k - liver[0]) * step) ** 2 + ((j - liver[1]) * row) ** 2 + ((i - liver[2]) * column) ** 2
    masks[segments] = distance < 40.0**2  # a 4 cm sphere
    infos = [
        SegmentInfo(
            number=number,
            label=names[str(value)],
            color=f"#{(37 * number) % 256:02x}{(91 * number) % 256:02x}{(53 * number + 40) % 256:02x}",
            category=ANATOMY,
            algorithm_type="SEMIAUTOMATIC",
            algorithm_name="nnInteractive",
            algorithm_version="1.0",
        )
        for number, value in enumerate(chosen, 1)
    ]
    infos.append(SegmentInfo(number=segments, label="lesion", color="#ffff00"))
    return Labelmap(layers=pack_layers(masks), segments=infos)


def dcmqi_input(folder: Path, volume: Volume, labelmap: Labelmap) -> tuple[list[Path], Path]:
    """One NIfTI per layer (segment numbers as label values) and dcmqi's metadata JSON."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine()  # LPS → the RAS of NIfTI
    images = []
    groups = []
    for index, layer in enumerate(labelmap.layers):
        path = folder / f"layer{index}.nii.gz"
        nib.save(nib.Nifti1Image(np.ascontiguousarray(layer.transpose(2, 1, 0)), affine), path)
        images.append(path)
        numbers = [int(n) for n in np.unique(layer) if n]
        groups.append([dcmqi_segment(labelmap.segment(number)) for number in numbers])
    meta = {
        "ContentCreatorName": "Bench^Annovox",
        "ClinicalTrialSeriesID": "1",
        "ClinicalTrialTimePointID": "1",
        "SeriesDescription": "Annovox SEG benchmark",
        "SeriesNumber": "900",
        "InstanceNumber": "1",
        "ContentLabel": "ANNOVOX_BENCH",
        "ContentDescription": "benchmark",
        "ClinicalTrialCoordinatingCenterName": "Annovox",
        "BodyPartExamined": "",
        "segmentAttributes": groups,
    }
    meta_path = folder / "meta.json"
    meta_path.write_text(json.dumps(meta))
    return images, meta_path


def dcmqi_segment(info: SegmentInfo) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "labelID": info.number,
        "SegmentLabel": info.label,
        "SegmentDescription": info.label,
        "SegmentAlgorithmType": info.algorithm_type,
        "SegmentedPropertyCategoryCodeSequence": code_json(info.category),
        "SegmentedPropertyTypeCodeSequence": code_json(info.type),
        "recommendedDisplayRGBValue": [int(info.color[i : i + 2], 16) for i in (1, 3, 5)],
    }
    if info.algorithm_type != "MANUAL":
        attributes["SegmentAlgorithmName"] = info.algorithm_name
    return attributes


def code_json(code: Code) -> dict[str, str]:
    return {"CodeValue": code.value, "CodingSchemeDesignator": code.scheme, "CodeMeaning": code.meaning}


def run_tool(command: list[str]) -> Timing:
    with clock() as timing:
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    return timing


def highdicom_reference(
    labelmap: Labelmap, volume: Volume, headers: Sequence[pydicom.Dataset]
) -> dict[str, Any]:
    import highdicom as hd

    from webapp.segmentations.dicom_seg import writer

    by_uid = {ds.SOPInstanceUID: ds for ds in headers}
    stack = np.stack([labelmap.mask(info.number) for info in labelmap.segments], axis=-1)
    with clock() as encode:
        seg = hd.seg.Segmentation(
            source_images=[by_uid[uid] for uid in volume.sop_instance_uids],
            pixel_array=stack,
            segmentation_type="BINARY",
            segment_descriptions=[writer._description(info, volume) for info in labelmap.segments],
            series_instance_uid=pydicom.uid.generate_uid(),
            series_number=900,
            sop_instance_uid=pydicom.uid.generate_uid(),
            instance_number=1,
            manufacturer=writer.MANUFACTURER,
            manufacturer_model_name=writer.MANUFACTURER,
            software_versions=writer.DEFAULT_SOFTWARE_VERSIONS,
            device_serial_number="1",
            content_label="ANNOVOX_BENCH",
        )
    with clock() as serialise:
        seg.save_as(BytesIO())
    return {
        "encode_s": encode.wall_s,
        "serialise_s": serialise.wall_s,
        "save_s": encode.wall_s + serialise.wall_s,
        "save_cpu_s": encode.cpu_s + serialise.cpu_s,
    }


def provenance() -> dict[str, Any]:
    """When, at which commit and where; other work on the machine shows in the load average (1, 5 and 15
    minutes; this benchmark adds about 1)."""
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git.stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "load_average_before": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions after the first call")
    parser.add_argument("--highdicom", action="store_true", help="also time highdicom's complete encoding")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "seg.json")
    args = parser.parse_args()

    results = {**provenance(), "slices": args.slices, "segments": args.segments}
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="annovox-bench-seg-") as scratch:
        tmp = Path(scratch)
        print(f"building a {args.slices}-slice series from {SOURCE} ...")
        built = build_series(tmp / "series", slices=args.slices, seed="annovox seg bench")
        volume = volume_from_datasets([pydicom.dcmread(path) for path in built.files])
        headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in built.files]
        labelmap = make_labelmap(volume, args.segments)
        frames = sum(int(labelmap.mask(info.number).any(axis=(1, 2)).sum()) for info in labelmap.segments)
        results.update(layers=int(labelmap.layers.shape[0]), frames=frames)
        print(f"{args.segments} segments on {labelmap.layers.shape[0]} layers, {frames} frames")

        def encode(sources: Sequence[pydicom.Dataset]) -> pydicom.Dataset:
            return write_seg(
                labelmap,
                volume,
                sources,
                series_instance_uid=pydicom.uid.generate_uid(),
                sop_instance_uid=pydicom.uid.generate_uid(),
                series_number=900,
                instance_number=1,
                content_label="ANNOVOX_BENCH",
                content_creator="Bench^Annovox",
            )

        def save() -> tuple[Timing, Timing, bytes]:
            with clock() as encoding:
                dataset = encode(headers)
            with clock() as serialising:
                data = seg_bytes(dataset)
            return encoding, serialising, data

        first_encode, first_serialise, data = save()
        runs = []
        for _ in range(args.repeats):
            del data  # one SEG in memory at a time, as in the application
            encoding, serialising, data = save()
            runs.append((encoding, serialising))
        saves = [Timing(e.wall_s + s.wall_s, e.cpu_s + s.cpu_s) for e, s in runs]
        results["save"] = {
            "first_s": first_encode.wall_s + first_serialise.wall_s,
            **medians(saves),
            "encode": medians([encoding for encoding, _ in runs]),
            "serialise": medians([serialising for _, serialising in runs]),
            "bytes": len(data),
        }
        save_figures = results["save"]
        rows.append(("save: write_seg + seg_bytes, first call", f"{save_figures['first_s']:.2f} s"))
        rows.append(
            (f"save: median of {args.repeats}", f"{shown(save_figures)}, target ≤ {TARGET_SAVE_S:.0f} s")
        )
        rows.append(("  encode (write_seg)", shown(save_figures["encode"])))
        rows.append(("  serialise (seg_bytes)", shown(save_figures["serialise"])))
        rows.append(("SEG size", f"{len(data) / 1e6:.1f} MB"))

        def end_to_end() -> Timing:
            with clock() as timing:
                read = [pydicom.dcmread(path, stop_before_pixels=True) for path in built.files]
                (tmp / "ours.dcm").write_bytes(seg_bytes(encode(read)))
            return timing

        results["end_to_end"] = medians([end_to_end() for _ in range(max(1, args.repeats))])
        rows.append(("save end to end (read headers, write the file)", shown(results["end_to_end"])))

        try:
            from webapp.segmentations.dicom_seg.reader import read_seg
        except ImportError:
            rows.append(("read: read_seg", "not available"))
        else:
            reads = []
            for _ in range(max(1, args.repeats)):
                with clock() as timing:
                    decoded = read_seg(pydicom.dcmread(BytesIO(data)), volume)
                reads.append(timing)
            for info in labelmap.segments:
                if not np.array_equal(decoded.mask(info.number), labelmap.mask(info.number)):
                    raise SystemExit(f"read_seg gives segment {info.number} back differently")
            results["read"] = medians(reads)
            rows.append((f"read: dcmread + read_seg, median of {len(reads)}", shown(results["read"])))

        to_seg, to_itk = tool("itkimage2segimage"), tool("segimage2itkimage")
        if to_seg and to_itk:
            images, meta = dcmqi_input(tmp, volume, labelmap)
            dcmqi = run_tool(
                [to_seg, "--inputImageList", ",".join(map(str, images)), "--inputDICOMDirectory"]
                + [str(tmp / "series"), "--outputDICOM", str(tmp / "dcmqi.dcm"), "--inputMetadata", str(meta)]
            )
            (tmp / "itk").mkdir()
            back = run_tool(
                [to_itk, "--inputDICOM", str(tmp / "ours.dcm"), "--outputDirectory", str(tmp / "itk")]
                + ["--outputType", "nifti"]
            )
            results["dcmqi"] = {"itkimage2segimage": vars(dcmqi), "segimage2itkimage": vars(back)}
            rows.append(
                (
                    "dcmqi itkimage2segimage (same input, from disk)",
                    f"{dcmqi.wall_s:.2f} s (CPU {dcmqi.cpu_s:.2f} s)",
                )
            )
            rows.append(
                ("dcmqi segimage2itkimage (our SEG)", f"{back.wall_s:.2f} s (CPU {back.cpu_s:.2f} s)")
            )
            results["faster_than_dcmqi"] = results["end_to_end"]["wall_median_s"] < dcmqi.wall_s
        else:
            rows.append(("dcmqi", "not installed (PyPI package dcmqi)"))

        if args.highdicom:
            reference = highdicom_reference(labelmap, volume, headers)
            results["highdicom_complete"] = reference
            rows.append(
                (
                    "highdicom's complete encoding (Segmentation + save_as)",
                    f"{reference['save_s']:.2f} s (CPU {reference['save_cpu_s']:.2f} s; "
                    f"{reference['encode_s']:.2f} s encode + {reference['serialise_s']:.2f} s serialise)",
                )
            )

    results["meets_target"] = results["save"]["wall_median_s"] <= TARGET_SAVE_S
    results["load_average_after"] = os.getloadavg()
    report(rows, results, args.json)


def report(rows: list[tuple[str, str]], results: dict[str, Any], path: Path) -> None:
    width = max(len(name) for name, _ in rows)
    print("\n" + "\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(f"results in {path}")


if __name__ == "__main__":
    main()
