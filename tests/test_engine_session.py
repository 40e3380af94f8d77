"""Sessions (inference/session.py): the API's behaviour on a real CT with a small random-weight model.

What a random network predicts is meaningless; what is tested is what the session promises around it: the
returned region, errors that change nothing, undo, reset, initial masks, replay, determinism, geometry, the
bound on AutoZoom's work and the memory of idle sessions.
"""

import contextlib
import gc
import json
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from inference import EngineError, PromptError, Result, Session, load_model
from inference.autozoom import COVER_SEED, Plan, Predictor, cover
from inference.model import Model
from inference.prompts import box_size
from inference.session import CPU_MAX_REFINEMENT_PATCHES
from tests.engine_checkpoints import SESSION_SETTINGS, make_checkpoint_folder

PATCH = 32


@pytest.fixture(scope="module")
def ct() -> np.ndarray:
    """The abdominal CT (122×101×112, 3 mm) as int16, indexed as stored."""
    nibabel = pytest.importorskip("nibabel")
    from tests.conftest import DATA

    path = DATA / "ct_totalseg" / "nifti" / "example_ct.nii.gz"
    if not path.is_file():
        pytest.skip(f"shared data missing: {path}")
    return np.ascontiguousarray(np.asarray(nibabel.load(path).dataobj).astype(np.int16))


@pytest.fixture(scope="module")
def image(ct: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(ct[40:80, 20:68, 50:106])  # 40×48×56: kidney, liver


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return load_model(make_checkpoint_folder(tmp_path_factory.mktemp("session"), patch_size=(PATCH,) * 3))


@contextlib.contextmanager
def network_inputs(model: Model) -> Iterator[list[torch.Tensor]]:
    inputs: list[torch.Tensor] = []
    handle = model.network.register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()))
    try:
        yield inputs
    finally:
        handle.remove()


def session_on(model: Model, image: np.ndarray, autozoom: bool = False, **kwargs) -> Session:
    """A session on `image`; without AutoZoom unless asked, to keep the tests quick (large prompts still start
    zoomed out and refine)."""
    session = Session(model, autozoom=autozoom, **kwargs)
    session.set_image(image)
    return session


def check_result(before: np.ndarray, session: Session, result: Result) -> None:
    """The box holds exactly the voxels that changed (tight), with the new mask inside it."""
    after = session.mask
    changed = after != before
    box = tuple(slice(a, b) for a, b in zip(result.start, result.stop, strict=True))
    if not changed.any():
        assert result.start == result.stop and result.mask.size == 0
        return
    hits = np.argwhere(changed)
    assert result.start == tuple(hits.min(0)) and result.stop == tuple(hits.max(0) + 1)
    assert result.mask.dtype == bool
    np.testing.assert_array_equal(result.mask, after[box].astype(bool))
    outside = after.copy()
    outside[box] = before[box]
    np.testing.assert_array_equal(outside, before)
    assert set(result.timings) == {"encode", "predict", "total"} and result.timings["total"] >= 0


def prompts(session: Session) -> list[Callable[[], Result]]:
    """One prompt of every kind, positive and negative, in both input forms."""
    slice_mask = np.zeros((40, 48), dtype=bool)
    slice_mask[10:14, 5:40] = True
    lasso_mask = np.zeros((48, 56), dtype=bool)
    lasso_mask[20:30, 30:45] = True
    return [
        lambda: session.add_point((20, 24, 28)),
        lambda: session.add_box((15, 10, 10), (16, 40, 30), positive=False),
        lambda: session.add_scribble(polyline=[(25, 5, 5), (25, 30, 20), (25, 40, 50)]),
        lambda: session.add_scribble(mask=slice_mask, axis=2, index=30, positive=False),
        lambda: session.add_lasso(polygon=[(5, 10, 10), (5, 10, 30), (5, 30, 20)]),
        lambda: session.add_lasso(mask=lasso_mask, axis=0, index=33, positive=False),
        lambda: session.add_point((30, 40, 50), positive=False),
    ]


def run(calls: list[Callable[[], Result]]) -> list[Result]:
    return [call() for call in calls]


@pytest.mark.parametrize("autozoom", [True, False], ids=["autozoom", "no-autozoom"])
def test_each_prompt_returns_what_changed(model: Model, image: np.ndarray, autozoom: bool):
    session = session_on(model, image, autozoom)
    before = session.mask
    for prompt in prompts(session):
        check_result(before, session, prompt())
        before = session.mask
    assert session.mask.dtype == np.uint8 and session.mask.shape == image.shape
    assert [entry["type"] for entry in session.record] == [
        "point",
        "box",
        "scribble",
        "scribble",
        "lasso",
        "lasso",
        "point",
    ]
    assert [entry["positive"] for entry in session.record] == [True, False, True, False, True, False, False]


def test_same_prompts_same_mask(model: Model, image: np.ndarray):
    first, second = session_on(model, image), session_on(model, image)
    for prompt_a, prompt_b in zip(prompts(first), prompts(second), strict=True):
        a, b = prompt_a(), prompt_b()
        assert (a.start, a.stop) == (b.start, b.stop)
        np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(first.mask, second.mask)


def test_errors_leave_the_session_unchanged(model: Model, image: np.ndarray):
    session, twin = session_on(model, image), session_on(model, image)
    session.add_point((20, 24, 28))
    twin.add_point((20, 24, 28))
    mask, record = session.mask, session.record
    empty = np.zeros((48, 56), dtype=bool)
    bad_calls = [
        lambda: session.add_point((40, 0, 0)),
        lambda: session.add_point((1, 2)),
        lambda: session.add_point((1.5, 2, 3)),
        lambda: session.add_point((1, 2, 3), positive="no"),
        lambda: session.add_box((0, 0, 0), (5, 5, 5)),  # 3D: this model takes 2D boxes only
        lambda: session.add_box((3, 0, 0), (4, 0, 5)),
        lambda: session.add_box((3, 0, 0), (4, 49, 5)),
        lambda: session.add_scribble(mask=empty, axis=0, index=3),
        lambda: session.add_scribble(mask=empty.astype(float), axis=0, index=3),
        lambda: session.add_scribble(mask=np.ones((48, 55), dtype=bool), axis=0, index=3),
        lambda: session.add_scribble(mask=np.ones((48, 56), dtype=bool), axis=0, index=40),
        lambda: session.add_scribble(polyline=[]),
        lambda: session.add_scribble(polyline=[(3, 1, 1), (4, 9, 9)]),
        lambda: session.add_scribble(polyline=[(3, 1, 1), (3, 9, 99)]),
        lambda: session.add_scribble(),
        lambda: session.add_scribble(mask=empty, polyline=[(3, 1, 1)], axis=0, index=3),
        lambda: session.add_lasso(polygon=[(3, 1, 1), (3, 5, 5), (3, 9, 9)]),
        lambda: session.add_lasso(polygon=[(3, 1, 1), (3, 5, 5)]),
        lambda: session.add_lasso(mask=empty, axis=0, index=3),
        lambda: session.set_initial_mask(np.ones((40, 48, 55), dtype=np.uint8)),
        lambda: session.set_initial_mask(np.ones(image.shape, dtype=np.float32)),
    ]
    for call in bad_calls:
        with pytest.raises(PromptError):
            call()
        np.testing.assert_array_equal(session.mask, mask)
        assert session.record == record
    # the hidden state (prompts, decay, undo) is unchanged too: the next prompt and undo match a clean twin
    for s in (session, twin):
        s.add_scribble(polyline=[(25, 5, 5), (25, 40, 50)])
    np.testing.assert_array_equal(session.mask, twin.mask)
    session.undo()
    twin.undo()
    np.testing.assert_array_equal(session.mask, twin.mask)
    np.testing.assert_array_equal(session.undo().mask, twin.undo().mask)
    with pytest.raises(EngineError):
        session.undo()


def test_bad_images_are_refused(model: Model, image: np.ndarray):
    session = session_on(model, image)
    session.add_point((20, 24, 28))
    mask = session.mask
    for bad in [
        image[0],
        np.zeros((4, 5, 6), dtype=np.int16),
        image.astype(bool),
        np.full((4, 5, 6), np.nan),
        np.full((4, 5, 6), 7.0),  # nothing to normalise
        image.tolist(),
    ]:
        with pytest.raises(PromptError):
            session.set_image(bad)  # type: ignore[arg-type]
    for spacing in [(1.0, 0.0, 2.0), (1.0, 2.0), "abc", (1.0, None, 2.0)]:
        with pytest.raises(PromptError):
            session.set_image(image, spacing=spacing)  # type: ignore[arg-type]
    np.testing.assert_array_equal(session.mask, mask)
    assert len(session.record) == 1


def test_no_image_yet(model: Model):
    session = Session(model)
    with pytest.raises(EngineError, match="set_image"):
        session.add_point((0, 0, 0))
    with pytest.raises(EngineError):
        _ = session.mask


def test_undo_levels(model: Model, image: np.ndarray):
    session = session_on(model, image, undo_levels=3)
    masks, records = [session.mask], [session.record]
    for prompt in prompts(session)[:5]:
        prompt()
        masks.append(session.mask)
        records.append(session.record)
    for level in range(3):
        before = session.mask
        check_result(before, session, session.undo())
        np.testing.assert_array_equal(session.mask, masks[-2 - level])
        assert session.record == records[-2 - level]
    with pytest.raises(EngineError, match="nothing to undo"):
        session.undo()
    # after undoing, prompting continues from the restored state, as for a session that never had them
    replayed = Session.replay(model, image, session.record, autozoom=False)
    np.testing.assert_array_equal(session.add_point((8, 8, 8)).mask, replayed.add_point((8, 8, 8)).mask)
    np.testing.assert_array_equal(session.mask, replayed.mask)


def test_reset(model: Model, image: np.ndarray):
    session = session_on(model, image)
    run(prompts(session))
    session.reset()
    assert session.mask.sum() == 0 and session.record == []
    with pytest.raises(EngineError):
        session.undo()
    fresh = session_on(model, image)
    np.testing.assert_array_equal(session.add_point((20, 24, 28)).mask, fresh.add_point((20, 24, 28)).mask)


def test_mask_in_a_box(model: Model, image: np.ndarray):
    session = session_on(model, image)
    run(prompts(session))
    whole = session.mask.astype(bool)
    part = session.mask_in((3, 5, 7), (30, 41, 44))
    assert part.dtype == bool and np.array_equal(part, whole[3:30, 5:41, 7:44])
    with pytest.raises(PromptError):
        session.mask_in((0, 0, 0), (1, 1, 10_000))


def test_initial_mask(model: Model, image: np.ndarray):
    session = session_on(model, image)
    session.add_point((5, 5, 5))
    before = session.mask
    initial = np.zeros(image.shape, dtype=np.int32)
    initial[10:30, 12:40, 20:50] = 5  # non-zero = object
    result = session.set_initial_mask(initial)
    check_result(before, session, result)
    np.testing.assert_array_equal(session.mask, initial != 0)
    assert [entry["type"] for entry in session.record] == ["initial_mask"]
    # the next prompt sees it as the previous segmentation (input channel 1, after the image)
    with network_inputs(model) as inputs:
        session.add_point((20, 24, 28))
    crop = initial[4:36, 8:40, 12:44] != 0  # the patch around (20, 24, 28)
    np.testing.assert_array_equal(inputs[0][0, 1].numpy() == 1, crop)
    session.undo()
    session.undo()
    np.testing.assert_array_equal(session.mask, before)


def test_replay_after_eviction(model: Model, image: np.ndarray):
    session = session_on(model, image, autozoom=True, max_refinement_patches=2)
    calls = prompts(session)
    run(calls[:2])
    session.undo()
    initial = np.zeros(image.shape, dtype=bool)
    initial[5:15, 5:15, 5:15] = True
    session.set_initial_mask(initial)
    run(calls[2:6])
    record = json.loads(json.dumps(session.record))  # through the database and back
    mask = session.mask
    del session
    replayed = Session.replay(model, image, record, autozoom=True, max_refinement_patches=2)
    np.testing.assert_array_equal(replayed.mask, mask)
    assert replayed.record == record
    for broken in ([{"type": "point"}], [{"type": "ellipse"}], [{"type": "box", "start": [0, 0], "stop": 3}]):
        with pytest.raises(PromptError):
            Session.replay(model, image, broken)


def test_no_transposition(model: Model, image: np.ndarray):
    """Prompts and image share [k, j, i]: the patch is centred on the point, channels in the model's order."""
    session = session_on(model, image)
    with network_inputs(model) as inputs:
        session.add_point((20, 24, 45))  # the patch: k 4..35, j 8..39, i 29..60 (the image ends at 55)
    (x,) = inputs
    assert x.shape == (1, 8, PATCH, PATCH, PATCH)
    point_channel = 1 + model.interaction.point_channels[0]
    assert x[0, point_channel, 16, 16, 16] == 1
    assert x[0, point_channel].sum() == x[0, point_channel, 12:21, 12:21, 12:21].sum()
    values = image.astype(np.float64)
    expected = (image[4:36, 8:40, 29:56] - values.mean()) / values.std(ddof=1)  # CT: no zero border
    np.testing.assert_allclose(x[0, 0, :, :, :27].numpy(), expected, atol=1e-4)
    assert (x[0, :, :, :, 27:] == 0).all()  # beyond the image's last column every channel is zero-padded


def test_normalisation_uses_the_non_zero_box(model: Model, image: np.ndarray):
    padded = np.zeros((60, 60, 70), dtype=np.float32)
    padded[10:50, 6:54, 7:63] = image
    session = session_on(model, padded)
    with network_inputs(model) as inputs:
        session.add_point((30, 30, 35))
    values = image.astype(np.float64)
    expected = (padded[14:46, 14:46, 19:51] - values.mean()) / values.std(ddof=1)
    np.testing.assert_allclose(inputs[0][0, 0].numpy(), expected, atol=1e-4)


def test_scribble_thickness_and_decay_reach_the_network(model: Model, image: np.ndarray):
    session = session_on(model, image)
    session.add_point((20, 24, 28))
    with network_inputs(model) as inputs:
        session.add_scribble(polyline=[(20, 14, 20), (20, 14, 36)], axis=0)
    x = inputs[0][0]
    scribble = x[1 + model.interaction.scribble_channels[0]]
    # the patch is centred on the stroke (k 20, j 14..15, i 20..37): k 4..35, j -1..30, i 13..44
    drawn = torch.nonzero(scribble).tolist()
    assert scribble.max() == 1 and {(k, j) for k, j, _ in drawn} == {(16, 15), (16, 16)}  # 2 voxels wide
    assert {i for _, _, i in drawn} == set(range(7, 25))
    older_point = x[1 + model.interaction.point_channels[0]]
    assert older_point.max() == pytest.approx(0.98, abs=1e-3)


def test_3d_boxes_when_the_model_takes_them(tmp_path: Path, image: np.ndarray, model: Model):
    with pytest.raises(PromptError, match="2D boxes only"):
        session_on(model, image).add_box((0, 0, 0), (5, 5, 5))
    info = {**SESSION_SETTINGS, "supported_interactions": {"bbox3d": True}}
    folder = make_checkpoint_folder(
        tmp_path, patch_size=(PATCH,) * 3, info_file="inference_info.json", info=info
    )
    session = session_on(load_model(folder), image)
    before = session.mask
    check_result(before, session, session.add_box((10, 10, 10), (20, 30, 25)))


def test_autozoom_work_is_bounded(model: Model, image: np.ndarray):
    """On CPU at most 5 zoom levels (×1 to ×4) and CPU_MAX_REFINEMENT_PATCHES refined patches per prompt."""
    with network_inputs(model) as inputs:
        session_on(model, image).add_point((20, 24, 28))
    assert len(inputs) == 1
    for cap, limit in ((None, CPU_MAX_REFINEMENT_PATCHES), (2, 2)):
        session = session_on(model, image, autozoom=True, max_refinement_patches=cap)
        with network_inputs(model) as inputs:
            session.add_box((2, 2, 2), (3, 46, 54))  # larger than the patch: starts zoomed out, then refines
        zooms = sum(1 for x in inputs if x.shape[2:] == (PATCH,) * 3)
        assert 2 <= zooms <= 5 + limit


def test_sessions_share_a_model_across_threads(model: Model, image: np.ndarray):
    expected = session_on(model, image)
    for point in ((20, 24, 28), (10, 10, 10)):
        expected.add_point(point)
    results: list[np.ndarray] = []

    def annotate() -> None:
        session = session_on(model, image)
        for point in ((20, 24, 28), (10, 10, 10)):
            session.add_point(point)
        results.append(session.mask)

    threads = [threading.Thread(target=annotate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3
    for mask in results:
        np.testing.assert_array_equal(mask, expected.mask)


def test_idle_sessions_cost_little_more_than_their_image(model: Model, ct: np.ndarray):
    """Issue 3's target: each additional idle session holds at most 1.3× the image's size."""
    count = 4
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        sessions = []
        for _ in range(count):
            session = session_on(model, ct)
            session.add_point((60, 50, 56))
            session.add_scribble(polyline=[(60, 40, 40), (60, 50, 60)], positive=False)
            session.add_box((30, 40, 40), (31, 50, 60))
            sessions.append(session)
        gc.collect()
        held = (tracemalloc.get_traced_memory()[0] - start) / count
    finally:
        tracemalloc.stop()
    print(f"each idle session holds {held / ct.nbytes:.3f}× its image")
    assert held <= 1.3 * ct.nbytes, f"{held / ct.nbytes:.2f}× the image"
    for session in sessions:
        assert ct.nbytes < session.memory_bytes() <= 1.3 * ct.nbytes


def test_zoomed_out_channels_stay_finite_at_high_intensity():
    """Hundreds of prompts into a session the stored prompts sit near float16's maximum; averaging them for a
    zoomed-out crop must not overflow (the reference's float16 sums on CPU would)."""
    intensity = 60000.0

    class Scene:
        shape = (64, 64, 64)

        def image(self, region):
            return torch.zeros((1, *box_size(region)))

        def channels(self, region):
            return torch.full((7, *box_size(region)), intensity, dtype=torch.float16)

        def mask(self, region):
            return np.zeros(box_size(region), dtype=bool)

    seen: list[torch.Tensor] = []

    def predict(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch)
        return torch.zeros((1, 2, 8, 8, 8))

    predictor = Predictor(Scene(), (8, 8, 8), 0, frozenset({3, 4}), intensity, predict, torch.device("cpu"))
    predictor.segment(Plan((32, 32, 32), 4.0))
    assert torch.isfinite(seen[0]).all()
    assert seen[0][0, 2:].max() == pytest.approx(1.0, abs=1e-3)


def test_refinement_cover_limit_keeps_the_first_boxes() -> None:
    mask = torch.zeros((70, 80, 90), dtype=torch.bool)
    mask[5:60, 10:70, 20:85] = True
    boxes = cover(mask, (64, 64, 64), (24, 24, 24), np.random.RandomState(COVER_SEED))
    assert len(boxes) > 3
    assert cover(mask, (64, 64, 64), (24, 24, 24), np.random.RandomState(COVER_SEED), limit=3) == boxes[:3]
