"""The training loop (inference/training/train.py): a few steps on small real cases, never a real training.

What is checked: the samples are the inputs the engine itself builds; the model folder it writes loads in the
engine and segments; a seed fixes the run; a resumed run equals an uninterrupted one; fine-tuning starts
from another model folder's weights; the command line reports bad input.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inference import Session, load_model
from inference.autozoom import crop_input
from inference.model_folder import InteractionConfig
from inference.training.__main__ import main as training_main
from inference.training.data import TrainingCase, find_objects, read_case
from inference.training.folder import PROVENANCE_FILE
from inference.training.samples import RegionScene, SampleConfig, make_sample, normalise_volume, prompt_stamp
from inference.training.simulate import Prompt
from inference.training.train import CHECKPOINT, MODEL_FOLDER, TrainConfig, Trainer
from tests.engine_checkpoints import make_checkpoint_folder

PATCH = (32, 32, 32)


@pytest.fixture
def cases(shared_data: Path) -> list[TrainingCase]:
    """Two small PET tumour cases of the training split (about 40x40x60 voxels each)."""
    pytest.importorskip("nibabel")
    root = shared_data / "sts_ibsi" / "nifti"
    return [
        TrainingCase(root / p / "PET_image.nii.gz", root / p / "PET_mask.nii.gz", "PET", components=True)
        for p in ("STS_002", "STS_003")
    ]


def config(output: Path, **changes: object) -> TrainConfig:
    settings: dict[str, object] = {
        "output": output,
        "steps": 3,
        "batch_size": 2,
        "checkpoint_every": 2,
        "patch_size": PATCH,
        "warmup_steps": 1,
        "samples": SampleConfig(patch_size=PATCH, zooms=(1.0, 1.5)),
        **changes,
    }
    return TrainConfig(**settings)  # type: ignore[arg-type]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=True)["network_weights"]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_sample_is_what_the_engine_feeds_its_network(cases: list[TrainingCase], tmp_path: Path) -> None:
    """A point prompt encoded for training equals the network input a Session builds for the same point."""
    volume = read_case(cases[0])
    model = load_model(make_checkpoint_folder(tmp_path, patch_size=PATCH))
    seen: list[torch.Tensor] = []
    model.network.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach().clone()))
    session = Session(model, autozoom=False)
    session.set_image(volume.image)
    obj = find_objects(volume.label)[0]
    centre = tuple((s.start + s.stop) // 2 for s in obj.box)
    session.add_point(centre)

    interaction = model.interaction
    stamp = prompt_stamp(Prompt("point", True, index=centre), interaction, 1 / 0.98, volume.image.shape)
    scene = RegionScene(
        normalise_volume(volume.image), np.zeros(volume.image.shape, np.uint8), [stamp], interaction
    )
    _, batch, _ = crop_input(
        scene,
        centre,
        1.0,
        PATCH,
        interaction.prev_seg_channel,
        interaction.thin_channels,
        1 / 0.98,
        torch.device("cpu"),
    )
    assert len(seen) == 1
    assert torch.allclose(seen[0][0].float(), batch.float(), atol=1e-5)


def test_samples_hold_prompts_on_the_object(cases: list[TrainingCase]) -> None:
    volume = read_case(cases[1])
    normalised = normalise_volume(volume.image)
    obj = find_objects(volume.label)[0]
    rng = np.random.default_rng(3)
    interaction = InteractionConfig()
    for _ in range(6):
        x, y = make_sample(
            volume,
            normalised,
            obj,
            rng,
            SampleConfig(patch_size=PATCH),
            interaction,
            None,
            torch.device("cpu"),
        )
        assert x.shape == (8, *PATCH) and y.shape == PATCH
        assert y.sum() > 0, "the object is in view"
        positive = x[[2, 4, 6]].sum(0)
        assert positive.sum() > 0, "a first prompt is positive"
        assert float((positive * y).sum()) > 0, "and touches the object"


def test_training_writes_a_model_the_engine_loads(cases: list[TrainingCase], tmp_path: Path) -> None:
    trainer = Trainer(config(tmp_path / "run"), cases)
    folder = trainer.run()
    assert trainer.step == 3 and len(trainer.history) == 3
    assert all(np.isfinite(trainer.history))
    provenance = json.loads((folder / PROVENANCE_FILE).read_text())
    assert provenance["steps"] == 3 and provenance["seed"] == 0 and provenance["license"] == "Apache-2.0"
    assert [d["image"] for d in provenance["data"]] == [
        "sts_ibsi/nifti/STS_002/PET_image.nii.gz",
        "sts_ibsi/nifti/STS_003/PET_image.nii.gz",
    ]
    model = load_model(folder)
    assert model.license == "Apache-2.0" and model.patch_size == PATCH
    volume = read_case(cases[0])
    session = Session(model)
    session.set_image(volume.image)
    centre = tuple((s.start + s.stop) // 2 for s in find_objects(volume.label)[0].box)
    result = session.add_point(centre)
    assert result.mask.dtype == bool
    assert session.mask.shape == volume.image.shape


def test_a_seed_fixes_the_run_and_resuming_changes_nothing(cases: list[TrainingCase], tmp_path: Path) -> None:
    first = Trainer(config(tmp_path / "a", steps=4), cases).run()
    second = Trainer(config(tmp_path / "b", steps=4), cases).run()
    assert same(weights(first), weights(second))

    # Stop after 2 steps (a checkpoint), then a new Trainer picks the run up from the checkpoint.
    Trainer(config(tmp_path / "c", steps=2), cases).run()
    assert (tmp_path / "c" / CHECKPOINT).is_file()
    resumed = Trainer(config(tmp_path / "c", steps=4), cases)
    assert resumed.step == 2
    assert same(weights(resumed.run()), weights(first))

    other = Trainer(config(tmp_path / "d", steps=4, seed=1), cases).run()
    assert not same(weights(other), weights(first))


def test_resuming_with_other_settings_is_refused(cases: list[TrainingCase], tmp_path: Path) -> None:
    Trainer(config(tmp_path / "run", steps=2), cases).run()
    with pytest.raises(Exception, match="seed"):
        Trainer(config(tmp_path / "run", steps=4, seed=5), cases)


def test_fine_tuning_starts_from_the_given_model(cases: list[TrainingCase], tmp_path: Path) -> None:
    parent = make_checkpoint_folder(tmp_path, patch_size=PATCH, features=(8, 16, 32))
    trainer = Trainer(config(tmp_path / "run", steps=1, init=str(parent), learning_rate=0.0), cases)
    # Same architecture (the parent's ResidualEncoderUNet), same starting weights.
    assert same({k: v.float() for k, v in trainer.network.state_dict().items()}, weights(parent))
    folder = trainer.run()
    tuned = load_model(folder)
    assert tuned.info.architecture == "ResidualEncoderUNet"
    provenance = json.loads((folder / PROVENANCE_FILE).read_text())
    assert provenance["fine_tuned_from"] == parent.name
    assert provenance["fine_tuned_from_version"] == load_model(parent).info.version


def test_command_line_trains_and_reports_bad_input(
    cases: list[TrainingCase], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "cases.csv"
    manifest.write_text(
        "image,label,modality\n" + "".join(f"{c.image},{c.label},{c.modality}\n" for c in cases)
    )
    # The command line trains the compact network on its 64³ patch: one step is enough to show it works.
    assert (
        training_main(["--output", str(tmp_path / "run"), "--manifest", str(manifest), "--steps", "1"]) == 0
    )
    assert load_model(tmp_path / "run" / MODEL_FOLDER).patch_size == (64, 64, 64)

    broken = tmp_path / "broken.csv"
    broken.write_text("image,label\nx.nii.gz,y.nii.gz\n")
    assert training_main(["--output", str(tmp_path / "other"), "--manifest", str(broken)]) == 1
    assert "missing column(s) modality" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        training_main(["--output", str(tmp_path / "other")])
