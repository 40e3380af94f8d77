"""Model folders, the network, the model registry and `python -m inference` (download, import, list).

Every folder is written by tests/engine_checkpoints.py with random weights; nothing is downloaded. The
reference package nninteractive is the oracle for what a folder means.
"""

import contextlib
import fnmatch
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inference import EngineError, InteractionConfig, ModelError, PromptError, load_model, registry
from inference.cli import main
from inference.model_folder import PROVENANCE_FILE, inspect_model_folder
from inference.registry import list_models, register, resolve
from tests.conftest import ROOT
from tests.engine_checkpoints import OFFICIAL_CONFIGURATION, OFFICIAL_DATASET, make_checkpoint_folder


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "models"
    monkeypatch.setenv("ANNOVOX_MODELS_DIR", str(directory))
    return directory


def reference_session(folder: Path):
    from nnInteractive.inference.inference_session import nnInteractiveInferenceSession

    session = nnInteractiveInferenceSession(
        device=torch.device("cpu"), torch_n_threads=torch.get_num_threads()
    )
    with contextlib.redirect_stdout(io.StringIO()):
        session.initialize_from_trained_model_folder(str(folder))
    return session


def write_json(path: Path, content: object) -> None:
    path.write_text(json.dumps(content))


# Loading, and agreement with the reference.


@pytest.mark.parametrize("info_file", ["inference_session_class.json", "inference_info.json"])
def test_loads_both_info_files_like_the_reference(tmp_path, info_file):
    folder = make_checkpoint_folder(tmp_path, info_file=info_file, seed=3)
    model = load_model(folder)
    reference = reference_session(folder)

    assert model.interaction == InteractionConfig()
    assert model.patch_size == (32, 32, 32) == tuple(reference.configuration_manager.patch_size)
    assert model.num_image_channels == 1
    assert model.interaction.channels == (
        "prev_seg",
        "bbox+",
        "bbox-",
        "point+",
        "point-",
        "scribble+",
        "scribble-",
    )
    assert model.interaction.num_channels == reference.num_interaction_channels
    assert model.interaction.interaction_decay == reference.interaction_decay
    assert list(model.interaction.preferred_scribble_thickness) == list(
        reference.preferred_scribble_thickness
    )
    assert model.device == torch.device("cpu") and not model.network.training

    batch = torch.randn(2, 8, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference.network(batch)
    logits = model.predict_logits(batch)
    assert logits.shape == (2, 2, 32, 32, 32) and logits.dtype == torch.float32
    assert torch.allclose(logits, expected, atol=1e-5, rtol=0)
    assert 0.05 < logits.argmax(1).float().mean() < 0.95  # random weights, but not a constant mask


def test_same_seed_same_network_and_deterministic_predictions(tmp_path):
    first = load_model(make_checkpoint_folder(tmp_path / "a", seed=5))
    second = load_model(make_checkpoint_folder(tmp_path / "b", seed=5))
    other = load_model(make_checkpoint_folder(tmp_path / "c", seed=6))
    batch = torch.randn(1, 8, 32, 32, 32, generator=torch.Generator().manual_seed(2))
    logits = first.predict_logits(batch)
    assert torch.equal(logits, first.predict_logits(batch))
    assert torch.equal(logits, second.predict_logits(batch))
    key = "decoder.seg_layers.0.weight"
    assert not torch.equal(first.network.state_dict()[key], other.network.state_dict()[key])
    # Any float dtype goes in; float32 logits come out.
    assert first.predict_logits(batch.half()).dtype == torch.float32
    parameters = sum(p.numel() for p in first.network.parameters())
    assert first.memory_bytes() == 4 * parameters


def test_predict_refuses_a_batch_of_the_wrong_shape_or_dtype(tmp_path):
    model = load_model(make_checkpoint_folder(tmp_path))
    with pytest.raises(ValueError, match="shape"):
        model.predict_logits(torch.zeros(1, 7, 32, 32, 32))
    with pytest.raises(ValueError, match="shape"):
        model.predict_logits(torch.zeros(1, 8, 16, 32, 32))
    with pytest.raises(ValueError, match="float"):
        model.predict_logits(torch.zeros(1, 8, 32, 32, 32, dtype=torch.int64))


def test_capabilities_and_channel_layout_are_read_like_the_reference(tmp_path):
    info = {
        "inference_class": "nnInteractiveInferenceSession",
        "inference_class_min_version": "2.0",
        "point_radius": 3,
        "preferred_scribble_thickness": 3,
        "interaction_decay": 0.9,
        "supported_interactions": {"bbox3d": True, "lasso": False},
        "supports_initial_label": False,
        # A different layout: points first, then the shared box channels, scribbles counted from the end.
        "channel_mapping": {
            "prev_seg": 0,
            "points": [1, 2],
            "bbox2d": [3, 4],
            "bbox3d": [3, 4],
            "scribble": [-2, -1],
        },
        "interaction_channels": 6,
    }
    folder = make_checkpoint_folder(tmp_path, info_file="inference_info.json", info=info)
    config = load_model(folder).interaction
    reference = reference_session(folder)

    assert config.point_channels == reference.channel_mapping["points"] == (1, 2)
    assert config.box_channels == reference.channel_mapping["bbox2d"] == (3, 4)
    assert config.scribble_channels == reference.channel_mapping["scribble"] == (5, 6)
    assert config.lasso_channels == reference.channel_mapping["lasso"] == (1, 2)  # not remapped: the default
    assert config.channels == ("prev_seg", "point+", "point-", "bbox+", "bbox-", "scribble+", "scribble-")
    assert config.supports_3d_box is reference.supported_interactions["bbox3d"] is True
    assert config.supports_lasso is reference.supported_interactions["lasso"] is False
    assert config.supports_initial_seg is False
    assert config.point_radius == 3 and config.preferred_scribble_thickness == (3, 3, 3)
    assert config.interaction_decay == reference.interaction_decay == 0.9


def test_older_info_files(tmp_path):
    # A bare class name: the oldest form, whose prompts fade by 0.9.
    bare = make_checkpoint_folder(tmp_path / "bare", info="nnInteractiveInferenceSessionV3")
    assert inspect_model_folder(bare).interaction.interaction_decay == 0.9
    assert reference_session(bare).interaction_decay == 0.9
    # Capability keys in the older file are not read: no 3D boxes, as with the reference.
    legacy = make_checkpoint_folder(
        tmp_path / "legacy", info={"point_radius": 4, "supported_interactions": {"bbox3d": True}}
    )
    assert inspect_model_folder(legacy).interaction.supports_3d_box is False
    assert reference_session(legacy).supported_interactions["bbox3d"] is False


# Name, version and licence.


def test_name_version_and_licence(tmp_path):
    licensed = make_checkpoint_folder(tmp_path / "a", license="\n  Apache-2.0  \nthe full text ...\n")
    model = load_model(licensed)
    assert (model.name, model.version, model.license) == ("test_model_v0.1", "0.1", "Apache-2.0")
    assert model.path == licensed.resolve()

    unlicensed = inspect_model_folder(make_checkpoint_folder(tmp_path / "b", name="my-model"))
    assert (unlicensed.name, unlicensed.version, unlicensed.license) == ("my-model", "unknown", "unknown")

    official = make_checkpoint_folder(
        tmp_path / "c",
        name="nnInteractive_v1.0",
        dataset_name=OFFICIAL_DATASET,
        configuration=OFFICIAL_CONFIGURATION,
    )
    info = inspect_model_folder(official)
    assert (info.version, info.license) == ("1.0", "CC BY-NC-SA 4.0")
    assert info.configuration == OFFICIAL_CONFIGURATION  # inherits everything else from 3d_fullres
    assert reference_session(official).license == "CC BY-NC-SA 4.0"


# Broken folders.


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _plans(folder: Path, change) -> None:
    plans = json.loads((folder / "plans.json").read_text())
    change(plans["configurations"]["3d_fullres"]["architecture"])
    write_json(folder / "plans.json", plans)


def _checkpoint(folder: Path, change) -> None:
    path = folder / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, weights_only=False)
    change(checkpoint)
    torch.save(checkpoint, path)


class Executable:
    """Stands for any object a pickle could smuggle in."""


BROKEN = {
    "missing plans": (lambda f: _remove(f / "plans.json"), "plans.json is missing"),
    "plans not JSON": (lambda f: (f / "plans.json").write_text("{"), "plans.json: not readable JSON"),
    "missing dataset": (lambda f: _remove(f / "dataset.json"), "dataset.json is missing"),
    "missing info": (
        lambda f: _remove(f / "inference_session_class.json"),
        "neither inference_info.json nor inference_session_class.json",
    ),
    "missing checkpoint": (
        lambda f: _remove(f / "fold_0" / "checkpoint_final.pth"),
        "checkpoint_final.pth is missing",
    ),
    "no fold": (lambda f: _remove(f / "fold_0"), "exactly one fold_"),
    "two folds": (lambda f: shutil.copytree(f / "fold_0", f / "fold_1"), "found fold_0, fold_1"),
    "checkpoint not a checkpoint": (
        lambda f: (f / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a zip"),
        "not a torch checkpoint",
    ),
    "no network_weights": (
        lambda f: _checkpoint(f, lambda c: c.pop("network_weights")),
        "lacks network_weights",
    ),
    "no trainer_name": (lambda f: _checkpoint(f, lambda c: c.pop("trainer_name")), "lacks trainer_name"),
    "no configuration": (
        lambda f: _checkpoint(f, lambda c: c["init_args"].pop("configuration")),
        "must name the plans 'configuration'",
    ),
    "unknown configuration": (
        lambda f: _checkpoint(f, lambda c: c["init_args"].update(configuration="2d")),
        "configuration '2d' is not among",
    ),
    "pickled object": (
        lambda f: _checkpoint(f, lambda c: c.update(extra=Executable())),
        "cannot be read as tensors and plain data only",
    ),
    "weights of another network": (
        lambda f: _plans(f, lambda a: a["arch_kwargs"].update(features_per_stage=[8, 16, 64])),
        "the weights do not fit the network",
    ),
    "unknown architecture": (
        lambda f: _plans(f, lambda a: a.update(network_class_name="my_package.MyTransformer")),
        "unsupported architecture 'my_package.MyTransformer'",
    ),
    "layer class outside torch.nn": (
        lambda f: _plans(f, lambda a: a["arch_kwargs"].update(nonlin="os.system")),
        "'os.system' is not a torch.nn",
    ),
    "bad architecture arguments": (
        lambda f: _plans(f, lambda a: a["arch_kwargs"].update(n_blocks_per_stage=[1, 1])),
        "cannot build ResidualEncoderUNet",
    ),
    "patch not divisible by the strides": (
        lambda f: _plans(f, lambda a: a["arch_kwargs"].update(strides=[1, 2, 3])),
        "not divisible by the total stride",
    ),
    "another inference class": (
        lambda f: write_json(f / "inference_info.json", {"inference_class": "SomeOtherSession"}),
        "needs inference class 'SomeOtherSession'",
    ),
    "newer encoding": (
        lambda f: write_json(f / "inference_info.json", {"inference_class_min_version": "9.0"}),
        "needs the encoding of nnInteractive >= 9.0",
    ),
    "unknown interaction": (
        lambda f: write_json(f / "inference_info.json", {"supported_interactions": {"voice": True}}),
        "unknown interactions ['voice']",
    ),
    "channel out of range": (
        lambda f: write_json(
            f / "inference_info.json", {"channel_mapping": {"points": [3, 9]}, "interaction_channels": 6}
        ),
        "do not fit 7 channels",
    ),
    "reflect padding": (
        lambda f: write_json(f / "inference_session_class.json", {"pad_mode_image": "reflect"}),
        "pad_mode_image 'reflect' is not supported",
    ),
    "decay above 1": (
        lambda f: write_json(f / "inference_session_class.json", {"interaction_decay": 1.5}),
        "interaction_decay must be in (0, 1]",
    ),
}


@pytest.mark.parametrize("breakage", BROKEN)
def test_broken_folders_are_refused_with_the_file_named(tmp_path, breakage):
    folder = make_checkpoint_folder(tmp_path)
    damage, message = BROKEN[breakage]
    damage(folder)
    with pytest.raises(ModelError) as refused:
        load_model(folder)
    assert message in str(refused.value)
    assert str(folder.resolve()) in str(refused.value) or str(folder) in str(refused.value)


def test_no_folder_and_error_classes(tmp_path):
    with pytest.raises(ModelError, match="neither a model folder nor"):
        load_model(tmp_path / "nowhere" / "x")
    assert issubclass(ModelError, EngineError) and issubclass(PromptError, EngineError)
    assert issubclass(PromptError, ValueError)


# Devices.


def test_devices(tmp_path):
    folder = make_checkpoint_folder(tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            load_model(folder, "cuda")
        with pytest.raises(ModelError, match="CUDA is not available"):
            load_model(folder, "cuda:1")
    with pytest.raises(ModelError, match="unsupported device"):
        load_model(folder, "mps")
    with pytest.raises(ModelError, match="unknown device"):
        load_model(folder, "gpu please")
    with pytest.raises(ModelError, match="threads"):
        load_model(folder, threads=0)
    with pytest.warns(UserWarning, match="only used on CUDA"):
        load_model(folder, torch.device("cpu"), compile=True)
    threads = torch.get_num_threads()
    try:
        load_model(folder, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


# The registry.


def test_registry_import_list_resolve(tmp_path, models_dir, monkeypatch):
    monkeypatch.setattr(registry, "BUILTIN_MODELS_DIR", tmp_path / "no-builtin")  # registered models only
    source = make_checkpoint_folder(tmp_path / "hand-copied", license="Apache-2.0")
    info = register(source)
    assert info.path == models_dir / "test_model_v0.1" and info.license == "Apache-2.0"
    register(source, "second")
    shutil.rmtree(source)  # the registry holds copies
    assert [(m.name, m.info and m.info.version) for m in list_models()] == [
        ("second", "unknown"),
        ("test_model_v0.1", "0.1"),
    ]
    assert resolve("second") == models_dir / "second"
    assert load_model("test_model_v0.1").license == "Apache-2.0"

    with pytest.raises(ModelError, match="already registered"):
        register(models_dir / "second", "test_model_v0.1")
    assert register(models_dir / "second", "test_model_v0.1", replace=True).version == "0.1"
    for bad in ("default", ".hidden", "a/b", ""):
        with pytest.raises(ModelError):
            register(models_dir / "second", bad)
    with pytest.raises(ModelError, match="no model named 'missing'.*installed: second, test_model_v0.1"):
        resolve("missing")
    with pytest.raises(ModelError, match="the default model is missing from this installation"):
        load_model("default")
    assert not [p for p in models_dir.iterdir() if p.name.startswith(".")]  # no leftovers


def test_registry_refuses_broken_folders_and_lists_broken_entries(tmp_path, models_dir, monkeypatch):
    monkeypatch.setattr(registry, "BUILTIN_MODELS_DIR", tmp_path / "no-builtin")  # registered models only
    broken = make_checkpoint_folder(tmp_path)
    (broken / "plans.json").unlink()
    with pytest.raises(ModelError, match="plans.json is missing"):
        register(broken)
    assert not models_dir.exists() or not any(models_dir.iterdir())
    shutil.copytree(broken, models_dir / "damaged")
    [entry] = list_models()
    assert entry.name == "damaged" and entry.info is None and "plans.json is missing" in str(entry.error)


# The command line.


def run_cli(*args: str, models: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "ANNOVOX_MODELS_DIR": str(models)}
    return subprocess.run(
        [sys.executable, "-m", "inference", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def test_cli_import_and_list(tmp_path):
    models = tmp_path / "models"
    source = make_checkpoint_folder(tmp_path, license="Apache-2.0")
    imported = run_cli("import", str(source), "--name", "mine_v2", models=models)
    assert imported.returncode == 0, imported.stderr
    assert "registered mine_v2 (version 2, licence Apache-2.0)" in imported.stdout
    (models / "broken").mkdir()
    listed = run_cli("list", models=models)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "LICENCE", "PATH"]
    # The shipped default model comes first (versioned by its training steps and commit), then the
    # registered ones by name.
    provenance = json.loads((resolve("default") / PROVENANCE_FILE).read_text())
    assert lines[1].split()[:3] == ["default", f"{provenance['steps']}-{provenance['commit']}", "Apache-2.0"]
    assert lines[2].startswith("broken") and "(broken: " in lines[2]
    assert lines[3].split() == ["mine_v2", "2", "Apache-2.0", str(models / "mine_v2")]


def hf_mirror(root: Path) -> Path:
    """A local copy of the Hugging Face repository's layout: the official folder with random weights."""
    make_checkpoint_folder(
        root, name="nnInteractive_v1.0", dataset_name=OFFICIAL_DATASET, configuration=OFFICIAL_CONFIGURATION
    )
    (root / "README.md").write_text("other files of the repository")
    return root


def test_cli_download_asks_for_the_licence(tmp_path):
    models, mirror = tmp_path / "models", hf_mirror(tmp_path / "mirror")
    refused = run_cli("download", "nnInteractive_v1.0", "--from-dir", str(mirror), models=models)
    assert refused.returncode == 1
    assert "CC BY-NC-SA 4.0" in refused.stdout and "--accept-license" in refused.stderr
    assert not models.exists()

    dest = tmp_path / "elsewhere"
    accepted = run_cli(
        "download", "nnInteractive_v1.0", "--accept-license", "--from-dir", str(mirror), "--dest", str(dest),
        models=models,
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr
    assert "downloaded nnInteractive_v1.0 (version 1.0, licence CC BY-NC-SA 4.0)" in accepted.stdout
    assert sorted(p.name for p in dest.iterdir()) == ["nnInteractive_v1.0"]
    assert load_model(dest / "nnInteractive_v1.0").license == "CC BY-NC-SA 4.0"


def test_cli_asks_on_a_terminal_and_reports_errors(tmp_path, models_dir, monkeypatch, capsys):
    mirror = hf_mirror(tmp_path / "mirror")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["download", "nnInteractive_v1.0", "--from-dir", str(mirror)]) == 1
    assert "not accepted" in capsys.readouterr().err and not models_dir.exists()
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    assert main(["download", "nnInteractive_v1.0", "--from-dir", str(mirror)]) == 0
    assert (models_dir / "nnInteractive_v1.0").is_dir()

    assert main(["import", str(tmp_path / "mirror" / "README.md")]) == 1
    assert "error: " in capsys.readouterr().err
    assert main(["download", "nnInteractive_v1.0", "--accept-license", "--from-dir", str(mirror)]) == 1
    assert "already registered" in capsys.readouterr().err


def test_download_from_hugging_face(tmp_path, models_dir, monkeypatch):
    """The real download path, with huggingface_hub's snapshot_download answering from a local mirror."""
    import huggingface_hub

    from inference.registry import download

    mirror = hf_mirror(tmp_path / "mirror")
    calls = []

    def snapshot_download(repo_id, *, allow_patterns, local_dir, **kwargs):
        calls.append((repo_id, allow_patterns))
        for file in mirror.rglob("*"):
            relative = file.relative_to(mirror).as_posix()
            if file.is_file() and any(fnmatch.fnmatch(relative, pattern) for pattern in allow_patterns):
                (Path(local_dir) / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(file, Path(local_dir) / relative)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    info = download("nnInteractive_v1.0")
    assert calls == [("MIC-DKFZ/nnInteractive", ["nnInteractive_v1.0/*"])]
    assert info.path == models_dir / "nnInteractive_v1.0" and info.license == "CC BY-NC-SA 4.0"
    assert sorted(p.name for p in models_dir.iterdir()) == ["nnInteractive_v1.0"]
    assert load_model("nnInteractive_v1.0").patch_size == (32, 32, 32)

    with pytest.raises(ModelError, match="already registered"):
        download("nnInteractive_v1.0")
    # Offline, snapshot_download may return without fetching anything.
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *args, **kwargs: None)
    with pytest.raises(ModelError, match="did not complete"):
        download("nnInteractive_v1.0", replace=True)
    assert sorted(p.name for p in models_dir.iterdir()) == ["nnInteractive_v1.0"]
    with pytest.raises(ModelError, match="unknown model"):
        download("nnInteractive_v9")
