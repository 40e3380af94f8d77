"""The simulated user (inference/training/simulate.py) on a real kidney label from the shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from inference.prompts import check_box, check_index, check_slice_mask, in_plane
from inference.training.simulate import POLICIES, Prompt, SimulatedUser, error_region, sample_point

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KIDNEY_RIGHT = 2


@pytest.fixture(scope="module")
def kidney() -> np.ndarray:
    """The right kidney of the TotalSegmentator example, cropped with a margin (about 3,900 voxels)."""
    nibabel = pytest.importorskip("nibabel")
    path = DATA / "ct_totalseg" / "nifti" / "example_seg.nii.gz"
    if not path.is_file():
        pytest.skip(f"shared data missing: {path}")
    label = np.asarray(nibabel.load(path).dataobj) == KIDNEY_RIGHT
    box = ndimage.find_objects(label.astype(np.uint8))[0]
    crop = tuple(slice(max(s.start - 6, 0), s.stop + 6) for s in box)
    return np.ascontiguousarray(label[crop])


def slice_of(volume: np.ndarray, prompt: Prompt) -> np.ndarray:
    assert prompt.axis is not None and prompt.slice_index is not None
    return np.take(volume, prompt.slice_index, axis=prompt.axis)


def validate(prompt: Prompt, shape: tuple[int, ...]) -> None:
    """The engine's own checks accept the prompt's arguments, so the Session would too."""
    assert isinstance(prompt.positive, bool)
    if prompt.kind == "point":
        check_index(prompt.index, shape)
    elif prompt.kind == "box":
        box = check_box(prompt.start, prompt.stop, shape)
        assert sum(hi - lo == 1 for lo, hi in box) >= 1, "boxes are 2D: one axis of size 1"
    else:
        assert prompt.kind in ("scribble", "lasso")
        check_slice_mask(prompt.mask, prompt.axis, prompt.slice_index, shape)


def fake_model(target: np.ndarray, step: int) -> np.ndarray:
    """Predictions with both kinds of error: too large, too small, shifted."""
    ball = ndimage.generate_binary_structure(3, 1)
    if step % 3 == 0:
        return ndimage.binary_dilation(target, ball, iterations=2)
    if step % 3 == 1:
        return ndimage.binary_erosion(target, ball, iterations=2)
    return np.roll(target, 3, axis=1)


def test_first_prompts_lie_on_the_object(kidney: np.ndarray) -> None:
    for policy in POLICIES:
        for seed in range(6):
            prompt = SimulatedUser(policy, seed).next_prompt(kidney)
            assert prompt is not None and prompt.positive
            validate(prompt, kidney.shape)
            if policy == "box_points":
                assert prompt.kind == "box"
            if prompt.kind == "point":
                assert kidney[prompt.index]
            elif prompt.kind == "scribble":
                assert not (prompt.mask & ~slice_of(kidney, prompt)).any(), "scribbles stay inside"
            elif prompt.kind == "lasso":
                region = slice_of(kidney, prompt)
                assert prompt.mask is not None
                assert (prompt.mask & region).sum() >= 0.8 * region.sum(), "a lasso surrounds the region"


def test_negative_prompts_fall_in_false_positives(kidney: np.ndarray) -> None:
    ball = ndimage.generate_binary_structure(3, 1)
    prediction = ndimage.binary_dilation(kidney, ball, iterations=2)
    extra = prediction & ~kidney
    for policy in ("points", "scribbles", "mixed"):
        for seed in range(5):
            prompt = SimulatedUser(policy, seed).next_prompt(kidney, prediction)
            assert prompt is not None and not prompt.positive
            validate(prompt, kidney.shape)
            if prompt.kind == "point":
                assert extra[prompt.index]
            elif prompt.kind == "scribble":
                assert not (prompt.mask & ~slice_of(extra, prompt)).any()


def test_the_largest_error_is_corrected(kidney: np.ndarray) -> None:
    ball = ndimage.generate_binary_structure(3, 1)
    too_small = ndimage.binary_erosion(kidney, ball, iterations=1)
    too_small[:3, :3, :3] = True  # a small false positive far away: smaller than the missed rim
    found = error_region(kidney, too_small)
    assert found is not None
    region, positive = found
    assert positive and not (region & ~kidney).any()
    assert error_region(kidney, kidney) is None
    assert SimulatedUser("mixed", 0).next_prompt(kidney, kidney) is None
    assert SimulatedUser("points", 0).next_prompt(np.zeros((4, 4, 4), bool)) is None


def test_points_favour_the_interior(kidney: np.ndarray) -> None:
    distance = ndimage.distance_transform_edt(np.pad(kidney, 1))[1:-1, 1:-1, 1:-1]
    rng = np.random.default_rng(0)
    sampled = [distance[sample_point(kidney, rng, 2.0)] for _ in range(100)]
    uniform = [distance[sample_point(kidney, rng, 0.0)] for _ in range(100)]
    assert np.mean(sampled) > 1.3 * np.mean(distance[kidney])
    assert np.mean(sampled) > 1.3 * np.mean(uniform)
    assert min(sampled) >= 1  # every sampled point is on the object


def test_boxes_hold_most_of_the_slice_region(kidney: np.ndarray) -> None:
    covered = []
    for seed in range(40):
        prompt = SimulatedUser("box_points", seed).next_prompt(kidney)
        assert prompt is not None and prompt.kind == "box"
        assert prompt.start is not None and prompt.stop is not None
        validate(prompt, kidney.shape)
        axis = next(d for d in range(3) if prompt.stop[d] - prompt.start[d] == 1)
        region = np.take(kidney, prompt.start[axis], axis=axis)
        a, b = in_plane(axis)
        inside = region[prompt.start[a] : prompt.stop[a], prompt.start[b] : prompt.stop[b]].sum()
        covered.append(inside / region.sum())
    assert np.mean(covered) > 0.85 and min(covered) > 0.5
    # Boxes are jittered: not all the same box.
    assert len({(p, q) for p, q in zip(covered, covered[1:], strict=False)}) > 1


def test_strokes_are_thin_and_lassos_filled(kidney: np.ndarray) -> None:
    thick = np.ones((3, 3), dtype=bool)
    for seed in range(15):
        scribble = SimulatedUser("scribbles", seed).next_prompt(kidney)
        assert scribble is not None and scribble.mask is not None
        validate(scribble, kidney.shape)
        assert not ndimage.binary_erosion(scribble.mask, thick).any(), "a scribble is 1-2 px wide"
        lasso = SimulatedUser("lassos", seed).next_prompt(kidney)
        assert lasso is not None and lasso.mask is not None
        validate(lasso, kidney.shape)
        assert np.array_equal(ndimage.binary_fill_holes(lasso.mask), lasso.mask)


def run(user: SimulatedUser, target: np.ndarray, steps: int) -> list[Prompt]:
    prompts: list[Prompt] = []
    prediction: np.ndarray | None = None
    for step in range(steps):
        prompt = user.next_prompt(target, prediction)
        assert prompt is not None
        prompts.append(prompt)
        prediction = fake_model(target, step)
    return prompts


def describe(prompt: Prompt) -> tuple[object, ...]:
    mask = None if prompt.mask is None else prompt.mask.tobytes()
    return (prompt.kind, prompt.positive, prompt.index, prompt.start, prompt.stop, prompt.axis,
            prompt.slice_index, mask)  # fmt: skip


def test_every_policy_is_valid_and_deterministic(kidney: np.ndarray) -> None:
    kinds: set[str] = set()
    for policy in POLICIES:
        first = run(SimulatedUser(policy, 7), kidney, 8)
        again = run(SimulatedUser(policy, 7), kidney, 8)
        other = run(SimulatedUser(policy, 8), kidney, 8)
        assert [describe(p) for p in first] == [describe(p) for p in again]
        assert [describe(p) for p in first] != [describe(p) for p in other]
        for prompt in first:
            validate(prompt, kidney.shape)
        kinds |= {p.kind for p in first}
        if policy != "mixed" and policy != "box_points":
            assert len({p.kind for p in first}) == 1
        if policy == "box_points":
            assert [p.kind for p in first] == ["box"] + ["point"] * 7
    assert kinds == {"point", "box", "scribble", "lasso"}
    mixed = run(SimulatedUser("mixed", 1), kidney, 12)
    assert len({p.kind for p in mixed}) > 1, "the mixed user switches types"
    assert {p.positive for p in mixed} == {True, False}


def test_apply_calls_the_matching_session_method(kidney: np.ndarray) -> None:
    calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = []

    class Recorder:
        def __getattr__(self, name: str) -> object:
            return lambda *args, **kwargs: calls.append((name, args, kwargs))

    for policy in ("points", "box_points", "scribbles", "lassos"):
        prompt = SimulatedUser(policy, 0).next_prompt(kidney)
        assert prompt is not None
        prompt.apply(Recorder())  # type: ignore[arg-type]
    assert [c[0] for c in calls] == ["add_point", "add_box", "add_scribble", "add_lasso"]
    assert calls[2][2]["axis"] in (0, 1, 2) and calls[3][2]["mask"] is not None


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="policy"):
        SimulatedUser("boxes", 0)  # type: ignore[arg-type]


def test_prompts_run_on_a_real_session(kidney: np.ndarray, tmp_path: Path) -> None:
    """Every prompt type goes through an engine Session (a tiny random network, no AutoZoom)."""
    from inference import Session, load_model
    from tests.engine_checkpoints import make_checkpoint_folder

    session = Session(load_model(make_checkpoint_folder(tmp_path, patch_size=(32, 32, 32))), autozoom=False)
    session.set_image(kidney.astype(np.int16) * 200)
    prediction: np.ndarray | None = None
    for policy in ("box_points", "scribbles", "lassos"):
        user = SimulatedUser(policy, 3)
        for _ in range(2):
            prompt = user.next_prompt(kidney, prediction)
            assert prompt is not None
            prompt.apply(session)
            prediction = session.mask
    assert [entry["type"] for entry in session.record] == [
        "box",
        "point",
        "scribble",
        "scribble",
        "lasso",
        "lasso",
    ]
