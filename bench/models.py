"""Interactive accuracy and latency: the shipped default model against the classical baseline (issue 4).

Runs ``python -m inference.evaluate`` twice on identical work, once with ``--model default`` (the compact
network shipped in ``inference/models/default``) and once with ``--model baseline`` (the seeded random
walker of inference/baseline.py):

- the validation split of the shared data (STS_016–STS_020: CT, MR and PET tumours, never trained on), and
- structures of a kind the model never saw: the first ``--nuclei`` nuclei of the synthetic 3D microscopy set
  (``microscopy_3d/img3d.tif`` with its instance mask; kept out of training), as modality "microscopy".

Five protocols, ``--interactions`` simulated prompts each, seed 0. Prints the table of docs/benchmarks.md
(Dice after interactions 1..10 per protocol, model minus baseline, per modality after 5 mixed interactions,
p50 seconds per interaction) and checks the targets: mean Dice ≥ 0.80 after 5 mixed interactions on the
validation split, at least 0.10 above the baseline at every interaction count of every protocol, and p50 ≤
0.3 s per prompt. Writes both evaluation JSONs, their plots and a plot of the two side by side.

The latency is that of ``Session`` calls in this process, AutoZoom included, with torch on ``--threads``
threads; run it on an otherwise idle machine.

Usage: ``.venv/bin/python bench/models.py [--data ../shared/data] [--out bench/results] [--threads 2]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.evaluate import main as evaluate_main  # noqa: E402
from inference.training.simulate import POLICIES  # noqa: E402

MIXED_TARGET = 0.80
MARGIN_TARGET = 0.10
LATENCY_TARGET = 0.3


def run(model: str, data: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    microscopy = data / "microscopy_3d"
    argv = [
        "--model", model,
        "--validation", str(data),
        "--case", str(microscopy / "img3d.tif"), str(microscopy / "mask3d.tif"), "--modality", "microscopy",
        "--limit-objects", str(args.nuclei),
        "--interactions", str(args.interactions),
        "--threads", str(args.threads),
        "--json", str(out / f"{model}.json"),
        "--plot", str(out / f"{model}.png"),
    ]  # fmt: skip
    status = evaluate_main(argv)
    if status != 0:
        raise SystemExit(f"evaluation of {model} failed with status {status}")
    return json.loads((out / f"{model}.json").read_text())


def side_by_side(model: dict[str, Any], baseline: dict[str, Any], modalities: list[str], path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4 * len(POLICIES), 3.6))
    axes = figure.subplots(1, len(POLICIES), sharey=True)
    for axis, protocol in zip(axes, POLICIES, strict=True):
        for document, style in ((model, "-"), (baseline, "--")):
            for modality in modalities:
                values = document["per_modality"].get(modality, {}).get(protocol)
                if values is None:
                    continue
                x = range(1, len(values["dice_mean"]) + 1)
                axis.plot(x, values["dice_mean"], style, marker=".", label=f"{document['model']} {modality}")
        axis.set_title(protocol)
        axis.set_xlabel("interaction")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("Dice")
    axes[-1].legend(fontsize=6, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def validation_means(document: dict[str, Any], modalities: list[str]) -> dict[str, list[float]]:
    """Per protocol, the mean over the validation objects (all modalities but microscopy), weighted by the
    number of objects of each modality."""
    out: dict[str, list[float]] = {}
    for protocol in POLICIES:
        total: list[float] | None = None
        count = 0
        for modality in modalities:
            entry = document["per_modality"][modality][protocol]
            n = int(entry.get("objects", 1))
            values = [v * n for v in entry["dice_mean"]]
            total = values if total is None else [a + b for a, b in zip(total, values, strict=True)]
            count += n
        assert total is not None
        out[protocol] = [v / count for v in total]
    return out


def validation_p50(document: dict[str, Any], modalities: list[str], protocol: str | None) -> float:
    """Median seconds per prompt over the runs of ``modalities`` (and ``protocol``, None = all)."""
    seconds = [
        s
        for run in document["per_object"]
        if run["modality"] in modalities and protocol in (None, run["protocol"])
        for s in run["seconds"]
    ]
    return float(np.median(seconds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--interactions", type=int, default=10)
    parser.add_argument("--nuclei", type=int, default=10, help="microscopy nuclei evaluated (of 51)")
    parser.add_argument(
        "--report-only", action="store_true", help="print the table from the JSON files of an earlier run"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    if args.report_only:
        model, baseline = (json.loads((args.out / f"{m}.json").read_text()) for m in ("default", "baseline"))
    else:
        model = run("default", args.data, args.out, args)
        baseline = run("baseline", args.data, args.out, args)
    modalities = sorted(model["per_modality"])
    validation = [m for m in modalities if m != "microscopy"]
    side_by_side(model, baseline, modalities, args.out / "default_vs_baseline.png")

    ours, theirs = validation_means(model, validation), validation_means(baseline, validation)
    n = args.interactions
    print(f"\nValidation split ({', '.join(validation)}), mean Dice after interaction 1..{n}")
    print(f"{'protocol':<11} {'method':<9} " + " ".join(f"{i:>5}" for i in range(1, n + 1)) + "  p50 s")
    failures = []
    for protocol in POLICIES:
        for name, means, document in (("default", ours, model), ("baseline", theirs, baseline)):
            p50 = validation_p50(document, validation, protocol)
            print(
                f"{protocol:<11} {name:<9} " + " ".join(f"{v:5.2f}" for v in means[protocol]) + f"  {p50:.3f}"
            )
        margins = [a - b for a, b in zip(ours[protocol], theirs[protocol], strict=True)]
        print(f"{protocol:<11} {'margin':<9} " + " ".join(f"{v:+5.2f}" for v in margins))
        if min(margins) < MARGIN_TARGET:
            failures.append(f"{protocol}: margin over the baseline {min(margins):+.2f} < {MARGIN_TARGET}")
    print("\nAfter 5 mixed interactions, per modality (mean ± 95 % CI, objects)")
    for modality in modalities:
        for name, document in (("default", model), ("baseline", baseline)):
            entry = document["per_modality"][modality]["mixed"]
            print(
                f"{modality:<11} {name:<9} {entry['dice_mean'][4]:.3f} ± {entry['dice_ci95'][4]:.3f}"
                f"  ({entry.get('objects', '?')})"
            )
    mixed5 = ours["mixed"][4]
    if mixed5 < MIXED_TARGET:
        failures.append(f"mixed after 5: {mixed5:.3f} < {MIXED_TARGET}")
    latency = validation_p50(model, validation, None)
    print(f"\np50 seconds per prompt on the validation split, all protocols: {latency:.3f}")
    if latency > LATENCY_TARGET:
        failures.append(f"p50 latency {latency:.3f} s > {LATENCY_TARGET} s")
    print("\nTargets: " + ("all met" if not failures else "NOT met: " + "; ".join(failures)))
    print(f"JSON and plots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
