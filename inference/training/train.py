"""The training loop: simulated interactions on image/label pairs, resumable, writing an engine model folder.

    trainer = Trainer(TrainConfig(output=Path("runs/compact"), steps=4000), cases)
    trainer.run()            # resumes from runs/compact/checkpoint.pth if it is there

Every ``checkpoint_every`` steps the full state (network, optimiser, step, random generators, loss history)
goes to ``checkpoint.pth`` and the network to the model folder ``model/`` (see folder.py), which the engine
loads like any official checkpoint. A run resumed from a checkpoint continues exactly as an uninterrupted
run would: every random draw comes from generators whose state the checkpoint holds.
"""

from __future__ import annotations

import math
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inference.errors import ModelError
from inference.model_folder import InteractionConfig, network_from_architecture, open_model_folder
from inference.registry import resolve
from inference.training.data import LabelledVolume, TargetObject, TrainingCase, find_objects, read_case
from inference.training.folder import (
    COMPACT_CPU_REFINEMENT_PATCHES,
    COMPACT_PATCH,
    plain_unet_architecture,
    write_model_folder,
)
from inference.training.samples import SampleConfig, make_sample, normalise_volume

CHECKPOINT = "checkpoint.pth"
MODEL_FOLDER = "model"
# Cases with many labels (an atlas, a whole-body segmentation) count this many times a single-object case
# when a case is drawn, so that they add variety without drowning the rest.
MULTI_OBJECT_WEIGHT = 8.0


@dataclass(frozen=True)
class TrainConfig:
    output: Path
    steps: int = 4000
    batch_size: int = 2
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    seed: int = 0
    checkpoint_every: int = 100
    device: str = "cpu"
    threads: int | None = None
    # A model folder (or registered name) to fine-tune; None trains the compact network from scratch.
    init: str | None = None
    patch_size: tuple[int, int, int] = COMPACT_PATCH
    min_object_voxels: int = 20
    samples: SampleConfig = field(default_factory=SampleConfig)


@dataclass
class Loaded:
    volume: LabelledVolume
    normalised: np.ndarray
    objects: list[TargetObject]


class ObjectPool:
    """The training cases in memory with their target objects; draws (case, object) pairs."""

    def __init__(self, cases: Sequence[TrainingCase], min_voxels: int, progress: bool = False):
        if not cases:
            raise ValueError("no training cases")
        self.cases: list[Loaded] = []
        iterator = _progress(cases, "reading cases", progress)
        for case in iterator:
            volume = read_case(case)
            objects = find_objects(volume.label, components=case.components, min_voxels=min_voxels)
            if objects:
                self.cases.append(Loaded(volume, normalise_volume(volume.image), objects))
        if not self.cases:
            raise ValueError("the training cases hold no object large enough to train on")
        weights = np.array([MULTI_OBJECT_WEIGHT if len(c.objects) > 3 else 1.0 for c in self.cases])
        self.weights = weights / weights.sum()

    def draw(self, rng: np.random.Generator) -> tuple[Loaded, TargetObject]:
        case = self.cases[int(rng.choice(len(self.cases), p=self.weights))]
        return case, case.objects[int(rng.integers(len(case.objects)))]

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "image": _shown(c.volume.case.image),
                "label": _shown(c.volume.case.label),
                "modality": c.volume.case.modality,
                "objects": len(c.objects),
            }
            for c in self.cases
        ]


def _shown(path: Path) -> str:
    """A data path as recorded in provenance: relative to the shared data folder, never this machine's."""
    parts = path.parts
    return "/".join(parts[parts.index("data") + 1 :]) if "data" in parts else path.name


def _progress(items: Sequence[Any], what: str, show: bool) -> Any:
    if not show:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=what, unit="case")


def loss_function(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice of the foreground, the usual nnU-Net pairing."""
    ce = F.cross_entropy(logits, target)
    probability = torch.softmax(logits.float(), 1)[:, 1]
    truth = target.float()
    axes = (1, 2, 3)
    dice = (2 * (probability * truth).sum(axes) + 1) / (probability.sum(axes) + truth.sum(axes) + 1)
    return ce + (1 - dice.mean())


class Trainer:
    def __init__(self, config: TrainConfig, cases: Sequence[TrainingCase], *, progress: bool = False) -> None:
        self.config = config
        self.progress = progress
        self.device = torch.device(config.device)
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.architecture, patch, self.interaction, weights, self.parent = _starting_point(config)
        self.patch_size = patch
        self.samples = replace(config.samples, patch_size=patch)
        self.network: nn.Module = network_from_architecture(
            self.architecture, 1 + self.interaction.num_channels
        ).to(self.device)
        if weights is not None:
            self.network.load_state_dict(weights)
        self.optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")
        self.rng = np.random.default_rng(config.seed)
        self.step = 0
        self.history: list[float] = []
        self.pool = ObjectPool(cases, config.min_object_voxels, progress=progress)
        self.seconds = 0.0
        checkpoint = config.output / CHECKPOINT
        if checkpoint.is_file():
            self._load(checkpoint)

    # --- one step -----------------------------------------------------------------------------------------

    def learning_rate(self, step: int) -> float:
        """Linear warm-up, then cosine decay to a twentieth over the configured steps."""
        config = self.config
        if step < config.warmup_steps:
            return config.learning_rate * (step + 1) / config.warmup_steps
        progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
        return config.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = [], []
        self.network.eval()
        for _ in range(self.config.batch_size):
            case, obj = self.pool.draw(self.rng)
            x, y = make_sample(
                case.volume,
                case.normalised,
                obj,
                self.rng,
                self.samples,
                self.interaction,
                self._predict,
                self.device,
            )
            inputs.append(x)
            targets.append(y)
        return torch.stack(inputs).to(self.device), torch.stack(targets).to(self.device)

    def _predict(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda"):
            return self.network(batch.to(self.device)).float()

    def train_step(self) -> float:
        began = time.perf_counter()
        x, y = self.batch()
        self.network.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda"):
            logits = self.network(x)
        loss = loss_function(logits.float(), y)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.network.parameters(), 12.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        value = float(loss.detach())
        self.history.append(value)
        self.seconds += time.perf_counter() - began
        return value

    # --- the run ------------------------------------------------------------------------------------------

    def run(self, on_step: Callable[[int, float], None] | None = None) -> Path:
        """Train up to ``config.steps`` (from wherever a checkpoint left off); returns the model folder."""
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.config.steps, initial=self.step, desc="training", unit="step")
        try:
            while self.step < self.config.steps:
                loss = self.train_step()
                if bar is not None:
                    recent = self.history[-50:]
                    bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}")
                    bar.update(1)
                if on_step is not None:
                    on_step(self.step, loss)
                if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                    self.save()
        finally:
            if bar is not None:
                bar.close()
        return self.config.output / MODEL_FOLDER

    # --- checkpoints and the model folder -----------------------------------------------------------------

    def save(self) -> None:
        """The full state to checkpoint.pth (written aside, then renamed) and the model folder."""
        output = self.config.output
        output.mkdir(parents=True, exist_ok=True)
        state = {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "seconds": self.seconds,
            "config": _plain(asdict(self.config)),
        }
        partial = output / (CHECKPOINT + ".partial")
        torch.save(state, partial)
        os.replace(partial, output / CHECKPOINT)
        self.export(output / MODEL_FOLDER)

    def _load(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=True)
        saved, current = state["config"], _plain(asdict(self.config))
        for key in ("seed", "patch_size", "init", "batch_size"):
            if saved.get(key) != current[key]:
                raise ModelError(
                    f"{path} was made with {key}={saved.get(key)!r}, not {getattr(self.config, key)!r}: "
                    "resume with the same settings, or start afresh in another output folder"
                )
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        self.history = list(state["history"])
        self.seconds = float(state.get("seconds", 0.0))

    def export(self, destination: Path) -> Path:
        recent = self.history[-200:]
        provenance = {
            "trainer": "inference.training (Annovox)",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": _commit(),
            "steps": self.step,
            "batch_size": self.config.batch_size,
            "seed": self.config.seed,
            "device": str(self.device),
            "training_seconds": round(self.seconds, 1),
            "patch_size": list(self.patch_size),
            "fine_tuned_from": self.parent[0] if self.parent else None,
            "fine_tuned_from_version": self.parent[1] if self.parent else None,
            "loss_last_200_steps": round(sum(recent) / len(recent), 4) if recent else None,
            "data": self.pool.describe(),
            "data_licenses": {
                "sts_ibsi": "CC BY 3.0 (IBSI / TCIA Soft-tissue-Sarcoma)",
                "ct_totalseg": "Apache-2.0 (TotalSegmentator)",
                "brain_atlas": "BSD-3 (Debian mricron-data)",
            },
        }
        return write_model_folder(
            destination,
            architecture=self.architecture,
            patch_size=self.patch_size,
            interaction=self.interaction,
            weights=self.network.state_dict(),
            provenance=provenance,
        )


def _starting_point(
    config: TrainConfig,
) -> tuple[
    dict[str, Any],
    tuple[int, int, int],
    InteractionConfig,
    dict[str, torch.Tensor] | None,
    tuple[str, str] | None,
]:
    """Architecture, patch size, prompt encoding, weights (None: random) and the parent model's name and
    version (a fine-tune of "default" names the default it started from, which it may go on to replace)."""
    if config.init is None:
        interaction = InteractionConfig(cpu_refinement_patches=COMPACT_CPU_REFINEMENT_PATCHES)
        return plain_unet_architecture(), config.patch_size, interaction, None, None
    folder, checkpoint = open_model_folder(resolve(config.init))
    if folder.info.num_image_channels != 1:
        raise ModelError(f"{folder.info.path}: fine-tuning takes models with one image channel")
    weights = dict(checkpoint["network_weights"])
    return (
        dict(folder.architecture),
        folder.info.patch_size,
        folder.info.interaction,
        weights,
        (folder.info.name, folder.info.version),
    )


def _commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _plain(value: Any) -> Any:
    """Config values as plain data (paths as strings, tuples as lists) for the checkpoint."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
