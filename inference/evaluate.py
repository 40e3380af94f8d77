"""``python -m inference.evaluate``: Dice after each of N interactions with simulated users, per protocol and
per modality, for a learned model or the classical baseline, on identical prompts.

    python -m inference.evaluate --model default --validation ../shared/data --json out.json --plot out.png
    python -m inference.evaluate --model baseline --case IMAGE LABEL --modality MR --case IMAGE LABEL \\
        --json out.json
    python -m inference.evaluate --model PATH --manifest cases.csv --json out.json --device cuda

For each case, each target object (see training/data.py: every label value, and with ``components`` every
connected component) and each protocol, a fresh segmentation session is prompted by a SimulatedUser (see
training/simulate.py) whose generator is seeded from (seed, case index, object index, protocol index): the
first prompt is the same for every model; later prompts correct each model's own errors. A user who finds the
prediction perfect stops, and the Dice stays as it is. The evaluator only calls the public Session methods, so
the learned model (Session) and the baseline (RandomWalkerSession) do the same work. See docs/evaluation.md.

Exit status: 0 on success, 2 for bad usage or unreadable input, 1 when a session fails.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from inference.errors import EngineError
from inference.session import Result, Session
from inference.training.data import (
    TrainingCase,
    TrainingDataError,
    find_objects,
    object_mask,
    read_case,
    read_manifest,
    validation_cases,
)
from inference.training.simulate import POLICIES, Policy, Prompt, SimulatedUser

__all__ = ["DEFAULT_SEED", "ObjectRun", "Segmenter", "evaluate", "main", "plot", "summarise"]

DEFAULT_SEED = 0
DEFAULT_INTERACTIONS = 10
BASELINE = "baseline"


class Segmenter(Protocol):
    """What the evaluator uses of a session: Session and RandomWalkerSession both have it."""

    def set_image(self, image: np.ndarray, spacing: Sequence[float] | None = None) -> None: ...

    def reset(self) -> None: ...

    @property
    def mask(self) -> np.ndarray: ...

    def add_point(self, index: tuple[int, int, int], positive: bool = True) -> Result: ...

    def add_box(
        self, start: tuple[int, int, int], stop: tuple[int, int, int], positive: bool = True
    ) -> Result: ...

    def add_scribble(
        self,
        *,
        mask: np.ndarray | None = None,
        axis: int | None = None,
        index: int | None = None,
        polyline: Sequence[tuple[int, int, int]] | None = None,
        positive: bool = True,
    ) -> Result: ...

    def add_lasso(
        self,
        *,
        mask: np.ndarray | None = None,
        axis: int | None = None,
        index: int | None = None,
        polygon: Sequence[tuple[int, int, int]] | None = None,
        positive: bool = True,
    ) -> Result: ...


class UsageError(Exception):
    """Bad arguments or unreadable input: exit status 2."""


@dataclass
class ObjectRun:
    """One object of one case under one protocol: Dice after each interaction, seconds per applied prompt."""

    case: int
    image: str
    modality: str
    object: int
    label: int
    voxels: int
    protocol: str
    dice: list[float]
    seconds: list[float]
    prompts: list[str]  # "+point", "-box", ...: what the simulated user did


def _apply(prompt: Prompt, session: Segmenter) -> Result:
    # Prompt.apply is typed for Session but calls only the add_* methods that Segmenter has.
    return prompt.apply(cast(Session, session))


def dice(prediction: np.ndarray, target: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty."""
    total = int(prediction.sum()) + int(target.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(prediction & target)) / total


def user_seed(seed: int, case: int, obj: int, protocol: str) -> np.random.Generator:
    """The simulated user's generator for one run: fixed by the base seed and the run's position, and by the
    protocol's place in POLICIES (not in the subset asked for), so a subset gets the same prompts."""
    return np.random.default_rng([seed, case, obj, POLICIES.index(protocol)])


def evaluate(
    session: Segmenter,
    cases: Sequence[TrainingCase],
    *,
    protocols: Sequence[Policy] = POLICIES,
    interactions: int = DEFAULT_INTERACTIONS,
    seed: int = DEFAULT_SEED,
    limit_objects: int | None = None,
    progress: bool = True,
) -> Iterator[ObjectRun]:
    """Run every protocol on every object of every case, one ObjectRun at a time (cases are read one by one).

    Raises TrainingDataError for an unreadable case and EngineError when the session fails."""
    from tqdm import tqdm

    bar = tqdm(total=0, unit="run", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    try:
        for case_index, case in enumerate(cases):
            volume = read_case(case)
            objects = find_objects(volume.label, case.components)
            if limit_objects is not None:
                objects = objects[:limit_objects]
            bar.total += len(objects) * len(protocols)
            bar.refresh()
            if not objects:
                continue
            session.set_image(volume.image, volume.spacing)
            for object_index, obj in enumerate(objects):
                target = np.zeros(volume.label.shape, dtype=bool)
                target[obj.box] = object_mask(volume.label, obj)
                for protocol in protocols:
                    bar.set_description(
                        f"{case.image.parent.name}/{case.image.name} #{object_index} {protocol}"
                    )
                    session.reset()
                    user = SimulatedUser(protocol, user_seed(seed, case_index, object_index, protocol))
                    scores, seconds, prompts = _interact(session, user, target, interactions)
                    yield ObjectRun(
                        case_index,
                        str(case.image),
                        case.modality,
                        object_index,
                        obj.label,
                        obj.voxels,
                        protocol,
                        scores,
                        seconds,
                        prompts,
                    )
                    bar.update(1)
    finally:
        bar.close()


def _interact(
    session: Segmenter, user: SimulatedUser, target: np.ndarray, interactions: int
) -> tuple[list[float], list[float], list[str]]:
    scores: list[float] = []
    seconds: list[float] = []
    prompts: list[str] = []
    prediction: np.ndarray | None = None
    for _ in range(interactions):
        prompt = user.next_prompt(target, prediction)
        if prompt is None:  # perfect: the user stops, the Dice stays, no time is counted
            scores += [scores[-1] if scores else 1.0] * (interactions - len(scores))
            break
        began = time.perf_counter()
        _apply(prompt, session)
        seconds.append(time.perf_counter() - began)
        prompts.append(("+" if prompt.positive else "-") + prompt.kind)
        prediction = session.mask.view(bool)
        scores.append(dice(prediction, target))
    return scores, seconds, prompts


def _ci95(values: np.ndarray) -> np.ndarray:
    """Half-width of the 95 % confidence interval of the mean over axis 0 (Student's t); 0 for one row."""
    count = values.shape[0]
    if count < 2:
        return np.zeros(values.shape[1:])
    from scipy.stats import t

    return float(t.ppf(0.975, count - 1)) * values.std(axis=0, ddof=1) / math.sqrt(count)


def summarise(runs: Sequence[ObjectRun], protocols: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per protocol (those with runs): dice_mean, dice_ci95, seconds_per_interaction_p50 and extras."""
    out: dict[str, dict[str, Any]] = {}
    for protocol in protocols:
        chosen = [run for run in runs if run.protocol == protocol]
        if not chosen:
            continue
        scores = np.array([run.dice for run in chosen], dtype=np.float64)
        seconds = np.array([s for run in chosen for s in run.seconds], dtype=np.float64)
        out[protocol] = {
            "dice_mean": [float(v) for v in scores.mean(axis=0)],
            "dice_ci95": [float(v) for v in _ci95(scores)],
            "seconds_per_interaction_p50": float(np.median(seconds)) if seconds.size else 0.0,
            "dice_std": [
                float(v)
                for v in (scores.std(axis=0, ddof=1) if len(chosen) > 1 else np.zeros(scores.shape[1]))
            ],
            "seconds_per_interaction_p95": float(np.percentile(seconds, 95)) if seconds.size else 0.0,
            "objects": len(chosen),
        }
    return out


def report(
    runs: Sequence[ObjectRun], protocols: Sequence[str], model: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    """The JSON document: the mandated keys (model, cases, objects, protocols, per_modality) and extras."""
    modalities = sorted({run.modality for run in runs})
    objects = {(run.case, run.object): run.modality for run in runs}
    return {
        "model": model["name"],
        "cases": len({run.case for run in runs}),
        "objects": len(objects),
        "protocols": summarise(runs, protocols),
        "per_modality": {m: summarise([r for r in runs if r.modality == m], protocols) for m in modalities},
        "objects_per_modality": {m: sum(1 for v in objects.values() if v == m) for m in modalities},
        "model_info": model,
        **settings,
        "per_object": [asdict(run) for run in runs],
    }


def plot(document: dict[str, Any], path: Path) -> None:
    """Dice against interactions per protocol with 95 % CI bands: all objects, then one panel per modality
    when there are several."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise UsageError("--plot needs matplotlib: pip install matplotlib") from error
    panels = [("all", document["protocols"], document["objects"])]
    if len(document["per_modality"]) > 1:
        counts = document["objects_per_modality"]
        panels += [(m, p, counts[m]) for m, p in document["per_modality"].items()]
    # A Figure without pyplot: no global backend state, nothing opens a window.
    figure = Figure(figsize=(4.5 * len(panels), 4.0), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (title, protocols, count) in zip(axes, panels, strict=True):
        for name, stats in protocols.items():
            mean, ci = np.array(stats["dice_mean"]), np.array(stats["dice_ci95"])
            x = np.arange(1, mean.size + 1)
            (line,) = ax.plot(x, mean, marker="o", markersize=3, label=name)
            ax.fill_between(
                x, np.clip(mean - ci, 0, 1), np.clip(mean + ci, 0, 1), color=line.get_color(), alpha=0.2
            )
        ax.set_title(f"{title} ({count} object{'s' if count != 1 else ''})")
        ax.set_xlabel("interaction")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Dice")
    axes[-1].legend(loc="lower right", fontsize="small")
    figure.suptitle(f"{document['model']}: Dice after each interaction (mean, 95 % CI)")
    figure.savefig(path, dpi=120)


# --- command line ----------------------------------------------------------------------------------------


class _CaseAction(argparse.Action):
    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        cases = list(getattr(namespace, self.dest) or [])
        cases.append({"image": values[0], "label": values[1], "modality": None})
        setattr(namespace, self.dest, cases)


class _ModalityAction(argparse.Action):
    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        cases = namespace.case or []
        if not cases:
            parser.error("--modality applies to the --case before it; give --case IMAGE LABEL first")
        if cases[-1]["modality"] is not None:
            parser.error(f"--modality given twice for --case {cases[-1]['image']} {cases[-1]['label']}")
        cases[-1]["modality"] = str(values)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference.evaluate",
        description="Dice after each interaction with simulated users, per protocol and modality.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help=f"a model folder, a registered model name, 'default' (the shipped model) or '{BASELINE}' "
        "(the classical random walker)",
    )
    source = parser.add_argument_group("cases (any combination, at least one)")
    source.add_argument(
        "--case",
        nargs=2,
        metavar=("IMAGE", "LABEL"),
        action=_CaseAction,
        help="a NIfTI image and its label map; repeatable",
    )
    source.add_argument(
        "--modality", action=_ModalityAction, help="the modality of the --case before it (default: unknown)"
    )
    source.add_argument(
        "--components",
        action="store_true",
        help="with --case: each connected component of a label is an object too",
    )
    source.add_argument("--manifest", type=Path, help="a CSV with columns image,label,modality[,components]")
    source.add_argument(
        "--validation",
        type=Path,
        metavar="DATA_ROOT",
        help="the validation split (STS_016-020) of the shared data",
    )
    parser.add_argument("--json", type=Path, required=True, metavar="OUT", help="where to write the results")
    parser.add_argument("--plot", type=Path, metavar="OUT.png", help="a plot of Dice against interactions")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (learned models; default cpu)")
    parser.add_argument("--threads", type=_positive, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"base seed (default {DEFAULT_SEED})")
    parser.add_argument(
        "--interactions",
        type=_positive,
        default=DEFAULT_INTERACTIONS,
        help=f"interactions per object (default {DEFAULT_INTERACTIONS})",
    )
    parser.add_argument(
        "--protocols", nargs="+", choices=POLICIES, default=list(POLICIES), help="protocols (default: all)"
    )
    parser.add_argument("--limit-objects", type=_positive, metavar="N", help="at most N objects per case")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _gather_cases(args: argparse.Namespace) -> list[TrainingCase]:
    cases: list[TrainingCase] = []
    for entry in args.case or []:
        modality = entry["modality"] or "unknown"
        cases.append(TrainingCase(Path(entry["image"]), Path(entry["label"]), modality, args.components))
    if args.manifest is not None:
        if not args.manifest.is_file():
            raise UsageError(f"the manifest {args.manifest} does not exist")
        try:
            cases += read_manifest(args.manifest)
        except (TrainingDataError, OSError, UnicodeDecodeError, csv.Error) as error:
            raise UsageError(f"cannot read the manifest {args.manifest}: {error}") from error
    if args.validation is not None:
        if not args.validation.is_dir():
            raise UsageError(f"the data folder {args.validation} does not exist")
        found = validation_cases(args.validation)
        if not found:
            raise UsageError(f"no validation cases (sts_ibsi/nifti/STS_016-020) under {args.validation}")
        cases += found
    if not cases:
        raise UsageError("no cases: give --case IMAGE LABEL, --manifest CSV or --validation DATA_ROOT")
    for case in cases:
        for what, path in (("image", case.image), ("label", case.label)):
            if not path.is_file():
                raise UsageError(f"the {what} file {path} does not exist")
    return cases


def _check_output(path: Path, option: str) -> None:
    if not path.parent.is_dir():
        raise UsageError(f"{option}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise UsageError(f"{option}: {path} is a folder, not a file")


def _segmenter(args: argparse.Namespace) -> tuple[Segmenter, dict[str, Any]]:
    if args.model == BASELINE:
        from inference.baseline import RandomWalkerSession

        baseline = RandomWalkerSession()
        info = {"name": baseline.name, "version": baseline.version, "license": baseline.license, "path": None}
        return baseline, {**info, "device": "cpu"}
    from inference.model import load_model  # torch and the network only when a learned model is asked for

    model = load_model(args.model, args.device, threads=args.threads)
    info = {"name": model.name, "version": model.version, "license": model.license, "path": str(model.path)}
    return Session(model), {**info, "device": str(model.device)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse exits on bad usage (2) and --help (0): report, do not exit
        return stop.code if isinstance(stop.code, int) else 2
    try:
        cases = _gather_cases(args)
        _check_output(args.json, "--json")
        if args.plot is not None:
            _check_output(args.plot, "--plot")
            if importlib.util.find_spec("matplotlib") is None:
                raise UsageError("--plot needs matplotlib: pip install matplotlib")
        try:
            session, model = _segmenter(args)
        except EngineError as error:
            raise UsageError(f"cannot load the model {args.model!r}: {error}") from error
        protocols = [p for p in POLICIES if p in args.protocols]  # POLICIES order, each once
        runs = list(
            evaluate(
                session,
                cases,
                protocols=protocols,
                interactions=args.interactions,
                seed=args.seed,
                limit_objects=args.limit_objects,
                progress=not args.quiet,
            )
        )
        if not runs:
            raise UsageError("the cases hold no target objects (labels of at least 10 voxels)")
        settings = {
            "device": model.pop("device"),
            "seed": args.seed,
            "interactions": args.interactions,
            "case_files": [
                {"image": str(c.image), "label": str(c.label), "modality": c.modality} for c in cases
            ],
        }
        document = report(runs, protocols, model, settings)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        if args.plot is not None:
            plot(document, args.plot)
    except (UsageError, TrainingDataError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except EngineError as error:
        print(f"{parser.prog}: error: the session failed: {error}", file=sys.stderr)
        return 1
    _print_summary(document)
    return 0


def _print_summary(document: dict[str, Any]) -> None:
    print(f"{document['model']}: {document['cases']} cases, {document['objects']} objects")
    for name, stats in document["protocols"].items():
        curve = stats["dice_mean"]
        print(
            f"  {name:<11} Dice after 1: {curve[0]:.3f}  after {len(curve)}: {curve[-1]:.3f} "
            f"± {stats['dice_ci95'][-1]:.3f}  {stats['seconds_per_interaction_p50']:.3f} s per interaction"
        )


if __name__ == "__main__":
    sys.exit(main())
