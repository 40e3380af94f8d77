"""Parity of the engine with the reference implementation (the `nninteractive` package, a test-only oracle).

Both sessions load the same random-weight model folder and see the same CT crop and the same prompts. Every
forward pass of both is captured (a forward pre-hook on each network): the passes must match one to one, with
the interaction channels equal to 1e-3, and the masks must agree (Dice >= 0.999) after every step.

The model's patch is 64³: the reference's refinement planning leaves a 24-voxel margin inside each patch and
fails on patches of 48 or less. The image (48×72×88) is larger than the patch on two axes, so AutoZoom zooms
out. The last layer's background logit is raised in proportion to the features (a plain bias shift gives
either no zooming or dozens of refinement patches), so that the random network's objects, and the refinement
they cause, stay small enough for a quick test.
"""

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from inference import load_model
from inference.autozoom import COVER_SEED, _border_changed, _max_filter, cover
from inference.prompts import check_polygon, check_polyline, point_ball
from inference.session import Session
from tests.engine_checkpoints import SESSION_SETTINGS, make_checkpoint_folder

nnInteractive = pytest.importorskip("nnInteractive")
from nnInteractive.inference.inference_session import nnInteractiveInferenceSession  # noqa: E402
from nnInteractive.interaction.point import build_point  # noqa: E402
from nnInteractive.utils.bboxes import generate_bounding_boxes  # noqa: E402
from nnInteractive.utils.erosion_dilation import iterative_3x3_same_padding_pool3d  # noqa: E402

PATCH = (64, 64, 64)
CROP = (slice(26, 74), slice(14, 86), slice(24, 112))  # of example_ct.nii.gz: kidney, liver, stomach
KIDNEY_LEFT = 3  # label in example_seg_fast_force_split.nii.gz
BACKGROUND_WEIGHT = 1.0
MAX_CHANNEL_DIFFERENCE = 1e-3
MIN_DICE = 0.999


def _folder(root: Path, patch: tuple[int, int, int] = PATCH, **kwargs: Any) -> Path:
    folder = make_checkpoint_folder(root, patch_size=patch, **kwargs)
    path = folder / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, weights_only=False)
    weights = checkpoint["network_weights"]
    last = max(k for k in weights if k.startswith("decoder.seg_layers.") and k.endswith(".weight"))
    weights[last][0] += BACKGROUND_WEIGHT  # the background logit of the last layer, from every feature
    torch.save(checkpoint, path)
    return folder


@pytest.fixture(scope="module")
def data() -> SimpleNamespace:
    nibabel = pytest.importorskip("nibabel")
    from tests.conftest import DATA

    nifti = DATA / "ct_totalseg" / "nifti"
    if not nifti.is_dir():
        pytest.skip(f"shared data missing: {nifti}")
    image = np.asarray(nibabel.load(nifti / "example_ct.nii.gz").dataobj)[CROP].astype(np.int16)
    labels = np.asarray(nibabel.load(nifti / "example_seg_fast_force_split.nii.gz").dataobj)[CROP]
    return SimpleNamespace(image=np.ascontiguousarray(image), kidney=(labels == KIDNEY_LEFT).astype(np.uint8))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _folder(tmp_path_factory.mktemp("parity"))


@contextlib.contextmanager
def _captured(network: torch.nn.Module, into: list[torch.Tensor]) -> Iterator[None]:
    handle = network.register_forward_pre_hook(lambda module, args: into.append(args[0].detach().clone()))
    try:
        yield
    finally:
        handle.remove()


class Pair:
    """Our session and the reference's, stepped together."""

    def __init__(self, folder: Path, image: np.ndarray, *, autozoom: bool) -> None:
        self.model = load_model(folder)
        self.ours = Session(self.model, autozoom=autozoom, max_refinement_patches=10_000)
        self.ours.set_image(image)
        with contextlib.redirect_stdout(io.StringIO()):
            self.reference = nnInteractiveInferenceSession(
                device=torch.device("cpu"), torch_n_threads=torch.get_num_threads(), do_autozoom=autozoom
            )
            self.reference.initialize_from_trained_model_folder(str(folder))
            self.reference.set_image(image[None])
        self.buffer = np.zeros(image.shape, dtype=np.uint8)
        self.reference.set_target_buffer(self.buffer)
        self.shape = image.shape
        self.figures: list[tuple[str, int, float, float]] = []

    def step(self, name: str, ours: Callable[[Session], object], reference: Callable[[Any], object]) -> None:
        our_inputs: list[torch.Tensor] = []
        reference_inputs: list[torch.Tensor] = []
        with _captured(self.model.network, our_inputs):
            ours(self.ours)
        np.random.seed(COVER_SEED)  # the reference's refinement planner samples from numpy's global generator
        with _captured(self.reference.network, reference_inputs), contextlib.redirect_stdout(io.StringIO()):
            reference(self.reference)
        assert len(our_inputs) == len(reference_inputs), f"{name}: forward passes differ"
        difference = max(
            (
                float((a[:, 1:] - b[:, 1:]).abs().max())
                for a, b in zip(our_inputs, reference_inputs, strict=True)
            ),
            default=0.0,
        )
        for a, b in zip(our_inputs, reference_inputs, strict=True):
            torch.testing.assert_close(a[:, :1], b[:, :1], rtol=0, atol=1e-5)  # the normalised image
        ours_mask, reference_mask = self.ours.mask.astype(bool), self.buffer.astype(bool)
        total = int(ours_mask.sum() + reference_mask.sum())
        dice = 1.0 if total == 0 else 2 * int((ours_mask & reference_mask).sum()) / total
        self.figures.append((name, len(our_inputs), difference, dice))
        assert difference <= MAX_CHANNEL_DIFFERENCE, f"{name}: interaction channels differ by {difference}"
        assert dice >= MIN_DICE, f"{name}: Dice {dice}"

    def point(self, index: tuple[int, int, int], positive: bool = True) -> None:
        self.step(
            f"point {'+' if positive else '-'}",
            lambda s: s.add_point(index, positive),
            lambda r: r.add_point_interaction(index, include_interaction=positive),
        )

    def box(self, start: tuple[int, int, int], stop: tuple[int, int, int], positive: bool = True) -> None:
        self.step(
            f"box {'+' if positive else '-'}",
            lambda s: s.add_box(start, stop, positive),
            lambda r: r.add_bbox_interaction(
                [list(b) for b in zip(start, stop, strict=True)], include_interaction=positive
            ),
        )

    def _volume(self, axis: int, index: int, drawn: np.ndarray) -> np.ndarray:
        volume = np.zeros(self.shape, dtype=np.uint8)
        where: list[Any] = [slice(None)] * 3
        where[axis] = index
        volume[tuple(where)] = drawn
        return volume

    def scribble(self, polyline: list[tuple[int, int, int]], positive: bool = True) -> None:
        axis, index, drawn = check_polyline(
            polyline, None, None, self.shape, self.model.interaction.preferred_scribble_thickness
        )
        volume = self._volume(axis, index, drawn)
        self.step(
            f"scribble {'+' if positive else '-'}",
            lambda s: s.add_scribble(polyline=polyline, positive=positive),
            lambda r: r.add_scribble_interaction(volume, include_interaction=positive),
        )

    def lasso(self, polygon: list[tuple[int, int, int]], positive: bool = True) -> None:
        axis, index, drawn = check_polygon(polygon, None, None, self.shape)
        volume = self._volume(axis, index, drawn)
        self.step(
            f"lasso {'+' if positive else '-'}",
            lambda s: s.add_lasso(polygon=polygon, positive=positive),
            lambda r: r.add_lasso_interaction(volume, include_interaction=positive),
        )

    def drawn(self, kind: str, axis: int, index: int, drawn: np.ndarray, positive: bool = True) -> None:
        """A scribble or lasso given as a 2D mask."""
        volume = self._volume(axis, index, drawn)
        ours = Session.add_scribble if kind == "scribble" else Session.add_lasso
        theirs = "add_scribble_interaction" if kind == "scribble" else "add_lasso_interaction"
        self.step(
            f"{kind} mask {'+' if positive else '-'}",
            lambda s: ours(s, mask=drawn, axis=axis, index=index, positive=positive),
            lambda r: getattr(r, theirs)(volume, include_interaction=positive),
        )

    def initial_mask(self, mask: np.ndarray) -> None:
        self.step(
            "initial mask", lambda s: s.set_initial_mask(mask), lambda r: r.add_initial_seg_interaction(mask)
        )

    def undo(self) -> None:
        self.step("undo", lambda s: s.undo(), lambda r: r.undo())


def _report(pair: Pair, scenario: str) -> None:
    """Printed with pytest -s: the figures docs/engine.md quotes."""
    passes = [f[1] for f in pair.figures]
    worst = max(f[2] for f in pair.figures)
    dice = min(f[3] for f in pair.figures)
    print(f"\n{scenario}: passes per step {passes}, max channel difference {worst:.1e}, min Dice {dice:.4f}")


@pytest.mark.parametrize("autozoom", [True, False], ids=["autozoom", "no-autozoom"])
def test_mixed_prompts(folder: Path, data: SimpleNamespace, autozoom: bool) -> None:
    pair = Pair(folder, data.image, autozoom=autozoom)
    pair.point((12, 30, 60))
    pair.point((20, 40, 30), positive=False)
    pair.box((5, 10, 50), (30, 45, 51))
    pair.scribble([(30, 20, 40), (30, 35, 55), (30, 50, 52)])
    pair.lasso([(10, 5, 60), (10, 5, 85), (10, 30, 85), (10, 30, 60)], positive=False)
    pair.undo()
    pair.box((40, 50, 10), (41, 70, 40), positive=False)
    if not autozoom:  # the same encoding as above once drawn; one scenario is enough
        drawn = np.zeros((48, 72), dtype=bool)
        drawn[20:24, 30:60] = True
        pair.drawn("scribble", 2, 70, drawn, positive=False)
        drawn = np.zeros((48, 88), dtype=bool)
        drawn[10:30, 20:50] = True
        pair.drawn("lasso", 1, 36, drawn)
    _report(pair, f"mixed prompts, autozoom {autozoom}")
    if autozoom:  # some prompts zoomed out and refined
        assert max(passes for _, passes, _, _ in pair.figures) > 2


def test_initial_mask_then_prompts(folder: Path, data: SimpleNamespace) -> None:
    pair = Pair(
        folder, data.image, autozoom=False
    )  # the kidney differs from the random network's object a lot
    pair.initial_mask(data.kidney)
    pair.point((10, 30, 60), positive=False)
    pair.scribble([(12, 20, 52), (12, 30, 70)])
    pair.undo()
    pair.point((15, 25, 65))
    _report(pair, "initial mask")


def test_renormalised_intensity(tmp_path: Path, data: SimpleNamespace) -> None:
    """With a fast decay the running intensity passes float16's maximum at the 16th prompt and every stored
    prompt is rescaled; the channels must still match. Points without AutoZoom never refine, so the reference
    takes a 32³ patch here."""
    folder = _folder(tmp_path, (32, 32, 32), info={**SESSION_SETTINGS, "interaction_decay": 0.5})
    pair = Pair(folder, data.image, autozoom=False)
    rng = np.random.default_rng(0)
    for n in range(17):
        index = tuple(int(rng.integers(4, s - 4)) for s in data.image.shape)
        pair.point((index[0], index[1], index[2]), positive=n % 3 != 2)
    # 2^16 > float16's maximum: rescaled to a tenth of it, then doubled once
    assert pair.reference.current_interaction_intensity == pytest.approx(65504 / 10 * 2)
    _report(pair, "renormalisation")


# --- the pieces, without a network ------------------------------------------------------------------------


def test_point_weights_match() -> None:
    np.testing.assert_array_equal(point_ball(4), build_point((4, 4, 4), True, False).numpy())


@pytest.mark.parametrize("window", [3, 5, 7])
def test_max_filter_matches(window: int) -> None:
    x = torch.rand((1, 1, 19, 23, 17)).half()
    expected = iterative_3x3_same_padding_pool3d(x, window)
    torch.testing.assert_close(_max_filter(x, window), expected, rtol=0, atol=0)
    expected = iterative_3x3_same_padding_pool3d(x, window, use_min_pool=True)
    torch.testing.assert_close(-_max_filter(-x, window), expected, rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(6))
def test_refinement_cover_matches(seed: int) -> None:
    """Greedy cover and the sampled fallback (seeded the same way) choose the same boxes as the reference."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(30, 90, 3))
    blobs = torch.zeros(shape, dtype=torch.float32)
    for _ in range(int(rng.integers(1, 5))):
        centre = [int(rng.integers(0, s)) for s in shape]
        radius = int(rng.integers(3, 20))
        grid = np.ogrid[tuple(slice(0, s) for s in shape)]
        blobs += torch.from_numpy(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2)
    mask = blobs > 0
    patch = (64, 64, 64) if seed % 2 else (96, 80, 64)
    np.random.seed(COVER_SEED)
    expected = generate_bounding_boxes(
        mask.to(torch.uint8), patch, stride="auto", margin=(24, 24, 24), max_depth=3
    )
    ours = cover(mask, patch, (24, 24, 24), np.random.RandomState(COVER_SEED))
    assert [list(map(list, b)) for b in ours] == expected


def test_border_change_matches() -> None:
    reference = SimpleNamespace(verbose=False)
    generator = torch.Generator().manual_seed(0)
    for fraction in (0.0, 0.01, 0.1, 0.5):
        previous = (torch.rand((32, 40, 48), generator=generator) < 0.3).half()
        prediction = torch.where(
            torch.rand((32, 40, 48), generator=generator) < fraction, 1 - previous, previous
        )
        prediction = prediction.long()
        expected = nnInteractiveInferenceSession._detect_change_at_border(reference, prediction, previous)  # type: ignore[arg-type]
        assert _border_changed(prediction, previous) == expected
