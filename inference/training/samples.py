"""Training samples: a view of an object as the engine would show it to the network after a few prompts.

One sample is built like one AutoZoom step of a session (autozoom.py): a crop of ``zoom`` patches, the
image z-scored with the whole image's statistics, the prompts so far encoded by the engine's own code
(stamps, fading by the model's decay, widening and area averaging when zoomed out) and the previous
prediction in its channel. The prompts come from a simulated user (simulate.py) who corrects the largest
error of the previous prediction; that prediction is the network's own (one pass without gradients per
earlier prompt) or, for some samples, a distorted copy of the truth (what refinement and corrections of
other people's masks look like).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from inference.autozoom import crop_input
from inference.model_folder import InteractionConfig
from inference.prompts import (
    Box,
    Stamp,
    box_size,
    box_stamp,
    check_box,
    draw_channels,
    intersect,
    local_slices,
    next_intensity,
    point_stamp,
    slice_stamp,
    whole,
)
from inference.session import zscore_statistics
from inference.training.augment import AugmentConfig, augment
from inference.training.data import LabelledVolume, TargetObject, crop, object_crop, patch_origin
from inference.training.simulate import POLICIES, Prompt, SimulatedUser

# Network: a batch (N, C, *patch) -> logits (N, 2, *patch).
Network = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SampleConfig:
    patch_size: tuple[int, int, int] = (64, 64, 64)
    # Crop sizes in patches, as AutoZoom's steps (1, ×1.5, ...). Larger zooms cost more to simulate on.
    zooms: tuple[float, ...] = (1.0, 1.5, 2.25, 3.375)
    # How many prompts precede the one the sample is about (0 = the first prompt of a session).
    prior_prompts: tuple[int, ...] = (0, 1, 2, 3, 4)
    prior_weights: tuple[float, ...] = (0.35, 0.2, 0.2, 0.15, 0.1)
    synthetic_previous: float = 0.2  # share of samples whose previous mask is a distorted truth
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def normalise_volume(image: np.ndarray) -> np.ndarray:
    """The image z-scored as the engine does it (Session: statistics of the non-zero bounding box)."""
    mean, std = zscore_statistics(image)
    return ((torch.from_numpy(np.asarray(image, dtype=np.float32)) - mean) / std).numpy()


class RegionScene:
    """The engine's Scene protocol over a training region: normalised image, previous mask, stamps."""

    def __init__(
        self, image: np.ndarray, previous: np.ndarray, stamps: Sequence[Stamp], config: InteractionConfig
    ):
        self.shape = (int(image.shape[0]), int(image.shape[1]), int(image.shape[2]))
        self._image, self._previous, self._stamps, self._config = image, previous, tuple(stamps), config

    def image(self, region: Box) -> torch.Tensor:
        return torch.from_numpy(_padded(self._image, region))[None]

    def channels(self, region: Box) -> torch.Tensor:
        out = draw_channels(self._stamps, self._config.num_channels, region)
        inside = intersect(region, whole(self.shape))
        if inside is not None:
            part = self._previous[tuple(slice(*b) for b in inside)]
            out[(self._config.prev_seg_channel, *local_slices(inside, region))] = torch.from_numpy(part)
        return out

    def mask(self, region: Box) -> np.ndarray:
        return self._previous[tuple(slice(*b) for b in region)].astype(bool)


def _padded(array: np.ndarray, region: Box) -> np.ndarray:
    return crop(array, [lo for lo, _ in region], box_size(region))


def prompt_stamp(prompt: Prompt, config: InteractionConfig, intensity: float, shape: Sequence[int]) -> Stamp:
    """The stamp a Session makes of ``prompt`` (see Session.add_point, add_box, add_scribble, add_lasso)."""
    sign = 0 if prompt.positive else 1
    if prompt.kind == "point":
        assert prompt.index is not None
        return point_stamp(prompt.index, config.point_channels[sign], config.point_radius, intensity, shape)
    if prompt.kind == "box":
        box = check_box(prompt.start, prompt.stop, shape)
        return box_stamp(box, config.box_channels[sign], intensity)
    assert prompt.mask is not None and prompt.axis is not None and prompt.slice_index is not None
    pair = config.scribble_channels if prompt.kind == "scribble" else config.lasso_channels
    return slice_stamp(prompt.axis, prompt.slice_index, prompt.mask.astype(bool), pair[sign], intensity)


def distorted(target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible wrong mask: the truth grown, shrunk, shifted, coarsened or cut, as an imperfect earlier
    prediction or someone else's mask would be."""
    mask = target.astype(bool)
    style = int(rng.integers(5))
    ball = ndimage.generate_binary_structure(3, 1)
    if style == 0:
        mask = ndimage.binary_dilation(mask, ball, iterations=int(rng.integers(1, 4)))
    elif style == 1:
        eroded = ndimage.binary_erosion(mask, ball, iterations=int(rng.integers(1, 3)))
        mask = eroded if eroded.any() else mask
    elif style == 2:
        shift = rng.integers(-3, 4, size=3)
        mask = np.roll(mask, tuple(int(s) for s in shift), axis=(0, 1, 2))
    elif style == 3:
        factor = int(rng.integers(2, 4))
        small = torch.from_numpy(mask.astype(np.float32))[None, None]
        coarse = F.avg_pool3d(small, factor, ceil_mode=True)
        mask = (F.interpolate(coarse, size=mask.shape, mode="trilinear") >= 0.5)[0, 0].numpy()
    else:
        axis = int(rng.integers(3))
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if len(hits) > 1:
            cut = int(rng.integers(hits[0], hits[-1] + 1))
            index = [slice(None)] * 3
            index[axis] = slice(cut, None) if rng.random() < 0.5 else slice(None, cut)
            mask = mask.copy()
            mask[tuple(index)] = False
    return mask.astype(np.uint8)


def choose_zoom(obj: TargetObject, config: SampleConfig, rng: np.random.Generator) -> float:
    """The zoom AutoZoom would end at for this object half of the time (the smallest crop that holds it with
    some context), a smaller one otherwise (the first, partial views of a large object)."""
    extent = max((s.stop - s.start) * 1.2 / p for s, p in zip(obj.box, config.patch_size, strict=True))
    fitting = [z for z in config.zooms if z >= extent]
    fit = fitting[0] if fitting else config.zooms[-1]
    smaller = [z for z in config.zooms if z <= fit]
    return fit if rng.random() < 0.5 else float(smaller[int(rng.integers(len(smaller)))])


def make_sample(
    volume: LabelledVolume,
    normalised: np.ndarray,
    obj: TargetObject,
    rng: np.random.Generator,
    config: SampleConfig,
    interaction: InteractionConfig,
    network: Network | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training pair: the network input (C, *patch) float32 and the target (*patch) int64."""
    zoom = choose_zoom(obj, config, rng)
    size = [round(p * zoom) for p in config.patch_size]
    origin = patch_origin(obj, size, rng)
    original = crop(normalised, origin, size), object_crop(volume.label, obj, origin, size)
    # Rescaling a zoomed-out region is slow and zooming already varies the scale: only at zoom 1.
    augment_config = config.augment
    if zoom != 1:
        augment_config = replace(augment_config, scale_probability=0.0)
    image, target = augment(*original, rng, augment_config)
    if not target.any():  # scaling can push a small object out of the region: keep it unscaled then
        image, target = original

    shape = (int(image.shape[0]), int(image.shape[1]), int(image.shape[2]))
    centre = tuple(s // 2 for s in shape)
    user = SimulatedUser(POLICIES[int(rng.integers(len(POLICIES)))], rng)
    prior = int(
        rng.choice(config.prior_prompts, p=np.asarray(config.prior_weights) / sum(config.prior_weights))
    )
    previous = np.zeros(shape, dtype=np.uint8)
    prediction: np.ndarray | None = None
    if prior > 0 and rng.random() < config.synthetic_previous:
        prediction = previous = distorted(target, rng)
        prior = int(rng.integers(0, prior))  # some prompts on top of the distorted mask, or none

    def network_input(
        previous: np.ndarray, stamps: tuple[Stamp, ...], intensity: float, device: torch.device
    ) -> torch.Tensor:
        scene = RegionScene(image, previous, stamps, interaction)
        thin = interaction.thin_channels
        _, batch, _ = crop_input(
            scene, centre, zoom, config.patch_size, interaction.prev_seg_channel, thin, intensity, device
        )
        return batch

    stamps: tuple[Stamp, ...] = ()
    intensity = 1.0
    for step in range(prior + 1):
        prompt = user.next_prompt(target, prediction)
        if prompt is None:
            break
        intensity, stamps = next_intensity(intensity, interaction.interaction_decay, stamps)
        stamps = (*stamps, prompt_stamp(prompt, interaction, intensity, shape))
        if step == prior or network is None:
            continue
        batch = network_input(previous, stamps, intensity, device)
        with torch.no_grad():
            logits = network(batch[None].float())
        predicted = logits[0].argmax(0).to(torch.float32)
        if tuple(predicted.shape) != shape:
            predicted = (F.interpolate(predicted[None, None], shape, mode="trilinear")[0, 0] >= 0.5).float()
        prediction = previous = predicted.to(torch.uint8).cpu().numpy()
    batch = network_input(previous, stamps, intensity, torch.device("cpu"))
    goal = torch.from_numpy(target.astype(np.float32))[None, None]
    if tuple(size) != config.patch_size:
        goal = F.interpolate(goal, config.patch_size, mode="area")
    return batch.float(), (goal[0, 0] >= 0.5).long()
