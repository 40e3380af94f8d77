"""The shipped default model: what it is, where it came from, and that it segments real unseen data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference import Session, load_model
from inference.registry import BUILTIN_MODELS_DIR, MODEL_ENV, configured_model
from inference.training.data import (
    VALIDATION_PATIENTS,
    find_objects,
    object_mask,
    read_case,
    validation_cases,
)
from inference.training.folder import PROVENANCE_FILE
from inference.training.simulate import SimulatedUser

FOLDER = BUILTIN_MODELS_DIR / "default"
# Well below what bench/models.py measures for this model on this case (0.82 after 5 points), so that the
# test checks that the shipped model works rather than its exact score.
DICE_AFTER_FIVE_POINTS = 0.5


def test_it_is_the_configured_model_unless_another_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODEL_ENV, raising=False)
    assert configured_model() == "default"
    model = load_model()
    assert model.path == FOLDER.resolve() and model.license == "Apache-2.0"
    monkeypatch.setenv(MODEL_ENV, "nnInteractive_v1.0")
    assert configured_model() == "nnInteractive_v1.0"


def test_weights_are_small_and_provenance_is_complete() -> None:
    checkpoint = FOLDER / "fold_0" / "checkpoint_final.pth"
    assert checkpoint.stat().st_size <= 25 * 2**20
    provenance = json.loads((FOLDER / PROVENANCE_FILE).read_text())
    for key in ("steps", "seed", "commit", "license", "data", "data_licenses"):
        assert provenance[key] is not None, key
    assert provenance["license"] == "Apache-2.0" and provenance["steps"] > 0
    # Trained on the training split only: no validation patient appears in its data.
    images = [entry["image"] for entry in provenance["data"]]
    assert images and not [i for i in images if any(p in i for p in VALIDATION_PATIENTS)]
    assert not any(Path(i).is_absolute() for i in images)


def test_it_segments_an_unseen_tumour_with_a_few_points(shared_data: Path) -> None:
    """STS_018 PET (validation split, never trained on): Dice after five simulated point prompts."""
    pytest.importorskip("nibabel")
    [case] = [c for c in validation_cases(shared_data) if "STS_018" in str(c.image) and c.modality == "PET"]
    volume = read_case(case)
    [obj] = find_objects(volume.label)
    target = np.zeros(volume.label.shape, dtype=bool)
    target[obj.box] = object_mask(volume.label, obj)
    session = Session(load_model("default"))
    session.set_image(volume.image)
    user = SimulatedUser("points", seed=0)
    prediction = None
    for _ in range(5):
        prompt = user.next_prompt(target, prediction)
        if prompt is None:
            break
        prompt.apply(session)
        prediction = session.mask.astype(bool)
    assert prediction is not None
    dice = 2 * (prediction & target).sum() / (prediction.sum() + target.sum())
    assert dice > DICE_AFTER_FIVE_POINTS, dice
