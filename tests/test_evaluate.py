"""The evaluation harness (inference/evaluate.py) and the classical baseline (inference/baseline.py), on real
soft-tissue sarcoma scans from the shared data; the learned-model run uses a random-weight model folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from inference.baseline import RandomWalkerSession
from inference.errors import EngineError, PromptError
from inference.evaluate import main
from inference.training.data import TrainingCase, find_objects, object_mask, read_case
from inference.training.simulate import POLICIES, SimulatedUser
from tests.engine_checkpoints import make_checkpoint_folder

nibabel = pytest.importorskip("nibabel")

MANDATED = {"dice_mean", "dice_ci95", "seconds_per_interaction_p50"}


def sts(data: Path, patient: str, prefix: str) -> tuple[Path, Path]:
    folder = data / "sts_ibsi" / "nifti" / patient
    return folder / f"{prefix}_image.nii.gz", folder / f"{prefix}_mask.nii.gz"


def write_crop(data: Path, patient: str, prefix: str, out: Path, margin: int, name: str) -> tuple[Path, Path]:
    """The tumour's bounding box plus ``margin`` voxels, image and label written as NIfTI on one grid."""
    image_path, label_path = sts(data, patient, prefix)
    image = nibabel.load(image_path)
    label = np.asarray(nibabel.load(label_path).dataobj)
    box = ndimage.find_objects((label > 0).astype(np.uint8))[0]
    crop = tuple(slice(max(s.start - margin, 0), s.stop + margin) for s in box)
    affine = image.affine.copy()
    affine[:3, 3] = image.affine[:3, :3] @ [s.start for s in crop] + image.affine[:3, 3]
    paths = out / f"{name}_image.nii.gz", out / f"{name}_mask.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.asarray(image.dataobj)[crop].astype(np.float32), affine), paths[0])
    nibabel.save(nibabel.Nifti1Image(label[crop].astype(np.uint8), affine), paths[1])
    return paths


@pytest.fixture
def pet(shared_data: Path):
    """STS_001's PET (41 x 43 x 59 voxels of 4.7 x 4.7 x 3.3 mm) and its tumour as a target."""
    image, label = sts(shared_data, "STS_001", "PET")
    volume = read_case(TrainingCase(image, label, "PET", components=True))
    obj = find_objects(volume.label, components=True)[0]
    target = np.zeros(volume.label.shape, dtype=bool)
    target[obj.box] = object_mask(volume.label, obj)
    return volume, target


def run_points(volume, target, count: int) -> tuple[RandomWalkerSession, list[float]]:
    session = RandomWalkerSession()
    session.set_image(volume.image, volume.spacing)
    user = SimulatedUser("points", 0)
    prediction, scores = None, []
    for _ in range(count):
        prompt = user.next_prompt(target, prediction)
        assert prompt is not None
        prompt.apply(session)
        prediction = session.mask.astype(bool)
        scores.append(2 * (prediction & target).sum() / (prediction.sum() + target.sum()))
    return session, scores


def test_baseline_segments_a_pet_tumour_deterministically(pet):
    volume, target = pet
    first, scores = run_points(volume, target, 4)
    assert max(scores) > 0.3, scores
    again, repeated = run_points(volume, target, 4)
    assert repeated == scores
    assert np.array_equal(first.mask, again.mask)


def test_baseline_prompts_results_and_undo(pet):
    volume, target = pet
    session = RandomWalkerSession()
    assert (session.name, session.license) == ("baseline", "Apache-2.0")
    with pytest.raises(EngineError):
        session.add_point((0, 0, 0))
    session.set_image(volume.image, volume.spacing)
    centre = tuple(int(c) for c in np.argwhere(ndimage.binary_erosion(target, iterations=2))[0])
    result = session.add_point(centre)
    after_point = session.mask
    # The result is the box of what changed and the new mask in it.
    assert after_point.sum() > 0 and result.mask.sum() == after_point.sum()
    inside = tuple(slice(a, b) for a, b in zip(result.start, result.stop, strict=True))
    assert np.array_equal(after_point[inside], result.mask.view(np.uint8))
    assert set(result.timings) == {"encode", "predict", "total"}
    # Bad prompts are refused and change nothing.
    with pytest.raises(PromptError):
        session.add_point((0, 0, 999))
    with pytest.raises(PromptError, match="2D boxes only"):
        session.add_box((0, 0, 0), (5, 5, 5))
    with pytest.raises(PromptError):
        session.add_lasso(mask=np.zeros((2, 2), dtype=bool), axis=0, index=0)
    assert np.array_equal(session.mask, after_point)
    # A box, a negative scribble and a polygon lasso on the tumour's middle slice along k.
    k = centre[0]
    plane = target[k]
    rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    session.add_box((k, rows[0], cols[0]), (k + 1, rows[-1] + 1, cols[-1] + 1))
    outside = np.zeros_like(plane)
    outside[0, :] = True
    session.add_scribble(mask=outside, axis=0, index=k, positive=False)
    session.add_lasso(polygon=[(k, rows[0], cols[0]), (k, rows[0], cols[-1]), (k, rows[-1], cols[-1])])
    assert session.mask[k][outside].sum() == 0
    for _ in range(3):
        session.undo()
    assert np.array_equal(session.mask, after_point)
    session.reset()
    assert session.mask.sum() == 0


def check_document(document: dict, interactions: int, modalities: set[str]) -> None:
    assert isinstance(document["model"], str)
    assert isinstance(document["cases"], int) and isinstance(document["objects"], int)
    assert set(document["protocols"]) == set(POLICIES)
    assert set(document["per_modality"]) == modalities
    for protocols in (document["protocols"], *document["per_modality"].values()):
        assert set(protocols) == set(POLICIES)
        for stats in protocols.values():
            assert MANDATED <= set(stats)
            assert len(stats["dice_mean"]) == len(stats["dice_ci95"]) == interactions
            assert all(isinstance(v, float) and 0 <= v <= 1 for v in stats["dice_mean"])
            # With few objects Student's t makes the interval wider than the range of Dice: it is not clipped.
            assert all(isinstance(v, float) and v >= 0 for v in stats["dice_ci95"])
            assert isinstance(stats["seconds_per_interaction_p50"], float)
            assert stats["seconds_per_interaction_p50"] > 0


def test_main_with_the_baseline_writes_the_report_and_plot(shared_data: Path, tmp_path: Path, capsys):
    pet_image, pet_label = sts(shared_data, "STS_001", "PET")
    ct_image, ct_label = write_crop(shared_data, "STS_008", "CT", tmp_path, 3, "ct")
    out, figure = tmp_path / "baseline.json", tmp_path / "baseline.png"
    argv = [
        "--model", "baseline", "--interactions", "3", "--limit-objects", "1", "--quiet",
        "--case", str(pet_image), str(pet_label), "--modality", "PET",
        "--case", str(ct_image), str(ct_label), "--modality", "CT",
        "--json", str(out), "--plot", str(figure),
    ]  # fmt: skip
    assert main(argv) == 0
    document = json.loads(out.read_text())
    check_document(document, 3, {"PET", "CT"})
    assert (document["model"], document["cases"], document["objects"]) == ("baseline", 2, 1 + 1)
    # Two objects: the interval is a real one; the first prompt (from the ground truth) always helps.
    assert any(v > 0 for v in document["protocols"]["points"]["dice_ci95"])
    assert all(run["dice"][0] > 0 for run in document["per_object"])
    assert figure.stat().st_size > 1000 and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "baseline: 2 cases, 2 objects" in capsys.readouterr().out
    # The same seed gives the same users, also for a subset of the protocols: the runs repeat exactly.
    again = tmp_path / "again.json"
    subset = ["--protocols", "lassos", "points", "--json", str(again)]
    assert main([*argv[: argv.index("--json")], *subset]) == 0
    rerun = json.loads(again.read_text())
    assert list(rerun["protocols"]) == ["points", "lassos"]
    first = {(r["case"], r["protocol"]): r for r in document["per_object"]}
    for run in rerun["per_object"]:
        original = first[run["case"], run["protocol"]]
        assert (run["dice"], run["prompts"]) == (original["dice"], original["prompts"])


def test_main_with_a_learned_model_folder(shared_data: Path, tmp_path: Path):
    model = make_checkpoint_folder(tmp_path)
    image, label = write_crop(shared_data, "STS_001", "PET", tmp_path, 1, "pet")
    out = tmp_path / "model.json"
    argv = ["--model", str(model), "--case", str(image), str(label), "--components"]
    argv += ["--interactions", "2", "--limit-objects", "1", "--threads", "1", "--quiet", "--json", str(out)]
    assert main(argv) == 0
    document = json.loads(out.read_text())
    check_document(document, 2, {"unknown"})
    assert document["model"] == "test_model_v0.1" and document["model_info"]["path"] == str(model)


def test_usage_errors(shared_data: Path, tmp_path: Path, capsys):
    image, label = sts(shared_data, "STS_001", "PET")
    out = str(tmp_path / "out.json")
    missing = tmp_path / "nowhere_mask.nii.gz"
    assert main(["--model", "baseline", "--case", str(image), str(missing), "--json", out]) == 2
    assert f"the label file {missing} does not exist" in capsys.readouterr().err
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"image,mask\n{image},{label}\n")
    assert main(["--model", "baseline", "--manifest", str(manifest), "--json", out]) == 2
    assert "missing column(s) label, modality" in capsys.readouterr().err
    assert main(["--model", "baseline", "--modality", "CT", "--json", out]) == 2
    assert "--modality applies to the --case before it" in capsys.readouterr().err
    assert main(["--model", "baseline", "--json", out]) == 2
    assert "no cases" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "no_model"), "--case", str(image), str(label), "--json", out]) == 2
    assert "cannot load the model" in capsys.readouterr().err
    assert not Path(out).exists()
