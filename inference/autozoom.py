"""AutoZoom: one prompt's prediction, from a patch around the prompt to the refined mask.

The steps are those of nnInteractive (and of its reference implementation, whose numbers the weights expect):

1. Predict in a patch-sized crop centred on the newest prompt; prompts larger than the patch (boxes,
   scribbles, lassos) start zoomed out so that the crop holds them plus a third of a patch of context.
2. If the prediction changed along the crop's border (the object goes on outside it), enlarge the crop ×1.5,
   up to ×4, and predict again. A zoomed-out crop is resampled to the patch size: the image trilinearly, the
   interaction channels by area averaging after widening points and scribbles (a max filter) so that they do
   not average away.
3. Without zoom, the prediction is the new mask in the crop. With zoom, it is upsampled to the crop, and the
   region where it differs from the current mask is covered by patch-sized boxes (greedy set cover of the
   opened difference map); each box is predicted again at full resolution, in order, with the coarse
   prediction (and then the refined boxes) as the previous-segmentation input. Only the refined boxes change
   the mask.

`Predictor.segment` returns the new mask on a region; the session computes what changed and keeps undo data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from inference.prompts import (
    FP16_MAX,
    Box,
    Index3,
    box_size,
    centred_box,
    intersect,
    local_slices,
    make_box,
    normalise_channels,
    whole,
)

MAX_ZOOM = 4.0
ZOOM_STEP = 1.5
# A prompt's crop holds the prompt plus this fraction of a patch as context.
CONTEXT_FRACTION = 3
# Border-change test that triggers zooming out: on any face of the crop, more than ABSOLUTE_CHANGE voxels
# changed, or more than MIN_CHANGE changed and the foreground on that face grew or shrank by RELATIVE_CHANGE.
ABSOLUTE_CHANGE = 1500
MIN_CHANGE = 100
RELATIVE_CHANGE = 0.2
# Refinement planning: the difference map is opened with this window; each box counts as covering all but
# this margin of itself (the reference's value for its 192³ patch; a patch of 48 or less, for which the
# reference's planning fails, gets an eighth of itself).
OPENING_WINDOW = 5
COVER_MARGIN = 24
# Search limits of the set cover: grid refinements before falling back to sampled centres, and how many
# centres each fallback step samples (from a fixed seed, so that results are deterministic).
COVER_MAX_DEPTH = 3
COVER_SAMPLES_STUCK = 25
COVER_SAMPLES_REST = 10
COVER_SEED = 0


class Scene(Protocol):
    """What a prediction reads: the session's image, mask and prompts."""

    @property
    def shape(self) -> Index3: ...

    def image(self, region: Box) -> torch.Tensor:
        """The normalised image on `region`, (1, *size) float32, zero outside the image."""
        ...

    def channels(self, region: Box) -> torch.Tensor:
        """The interaction channels on `region` (previous segmentation included), (C, *size) float16, not yet
        divided by the intensity, zero outside the image."""
        ...

    def mask(self, region: Box) -> np.ndarray:
        """The current mask on `region`, which lies inside the image, bool."""
        ...


@dataclass(frozen=True)
class Plan:
    """Where and how to predict for the newest prompt."""

    centre: Index3
    zoom: float


def plan_for_point(index: Index3) -> Plan:
    return Plan(index, 1.0)


def plan_for_region(region: Box, patch: Index3) -> Plan:
    """A prompt covering `region` (a box, or the bounding box of a scribble or lasso)."""
    centre = tuple(round((lo + hi) / 2) for lo, hi in region)
    wanted = [(hi - lo) + p // CONTEXT_FRACTION for (lo, hi), p in zip(region, patch, strict=True)]
    zoom = max(1.0, *(w / p for w, p in zip(wanted, patch, strict=True)))
    return Plan((centre[0], centre[1], centre[2]), zoom)


@dataclass
class Predictor:
    """Runs the steps above for one prompt. `predict` maps a network input batch to logits."""

    scene: Scene
    patch: Index3
    prev_seg: int
    thin_channels: frozenset[int]  # points and scribbles: widened before a zoomed-out crop is downsampled
    intensity: float
    predict: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    autozoom: bool = True
    max_patches: int | None = None  # cap on refinement boxes; None = no cap

    def segment(self, plan: Plan) -> tuple[Box, np.ndarray]:
        """The new mask on a region inside the image: (region, bool values). Outside it nothing changes."""
        zoom = min(MAX_ZOOM, plan.zoom)
        crop, prediction, previous = self._predict_crop(plan.centre, zoom)
        changed = _border_changed(prediction, previous)
        while changed and self.autozoom and zoom < MAX_ZOOM:
            zoom = min(MAX_ZOOM, zoom * ZOOM_STEP)
            crop, prediction, previous = self._predict_crop(plan.centre, zoom)
            changed = _border_changed(prediction, previous)
        if zoom == 1:
            inside = intersect(crop, whole(self.scene.shape))
            assert inside is not None  # the crop is centred on a voxel of the image
            return inside, prediction[local_slices(inside, crop)].bool().cpu().numpy()
        size = box_size(crop)
        if tuple(prediction.shape) != size:
            upsampled = F.interpolate(prediction[None, None].float(), size, mode="trilinear")[0, 0]
            prediction = (upsampled >= 0.5).to(torch.uint8)
        boxes = self._refinement_boxes(prediction, crop, plan.centre)
        return self._refine(boxes, prediction, crop)

    # --- network input ------------------------------------------------------------------------------------

    def _predict_crop(self, centre: Index3, zoom: float) -> tuple[Box, torch.Tensor, torch.Tensor]:
        """Predict in the crop of `zoom` patches around `centre`: (crop, prediction at patch size (uint8),
        previous segmentation at patch size)."""
        crop, batch, previous = crop_input(
            self.scene,
            centre,
            zoom,
            self.patch,
            self.prev_seg,
            self.thin_channels,
            self.intensity,
            self.device,
        )
        logits = self.predict(batch[None])
        return crop, logits[0].argmax(0).to(torch.uint8), previous

    # --- refinement ---------------------------------------------------------------------------------------

    def _fallback_box(self, centre: Index3) -> list[Box]:
        """One patch around the prompt, for when the difference map asks for nothing."""
        return [centred_box(centre, self.patch)]

    def _refinement_boxes(self, prediction: torch.Tensor, crop: Box, centre: Index3) -> list[Box]:
        planning = intersect(crop, whole(self.scene.shape))
        if planning is None:
            return self._fallback_box(centre)
        current = torch.from_numpy(self.scene.mask(planning)).to(prediction.device)
        diff = (prediction[local_slices(planning, crop)] != current)[None, None].to(torch.float16)
        # Opening: drops specks of difference that are not worth a forward pass.
        diff = -_max_filter(-diff, OPENING_WINDOW)
        diff = _max_filter(diff, OPENING_WINDOW)[0, 0] > 0
        m = [COVER_MARGIN if p > 2 * COVER_MARGIN else p // 8 for p in self.patch]
        margin = (m[0], m[1], m[2])
        rng = np.random.RandomState(COVER_SEED)
        limit = math.inf if self.max_patches is None else self.max_patches
        local = cover(diff, self.patch, margin, rng, limit)
        if not local:
            return self._fallback_box(centre)
        offset = [lo for lo, _ in planning]
        boxes = [
            make_box([b[d][0] + offset[d] for d in range(3)], [b[d][1] + offset[d] for d in range(3)])
            for b in local
        ]
        return boxes

    def _refine(self, boxes: list[Box], coarse: torch.Tensor, crop: Box) -> tuple[Box, np.ndarray]:
        hull = make_box(
            [min(b[d][0] for b in boxes) for d in range(3)], [max(b[d][1] for b in boxes) for d in range(3)]
        )
        inside = intersect(hull, whole(self.scene.shape))
        assert inside is not None  # every box holds a voxel of the image
        # The previous segmentation the boxes see: the current mask, overwritten by the coarse prediction
        # inside the image, then by each refined box in turn. Zero outside the image, like every other input.
        seen = torch.zeros(box_size(hull), dtype=torch.uint8, device=self.device)
        seen[local_slices(inside, hull)] = torch.from_numpy(self.scene.mask(inside)).to(self.device)
        coarse_part = intersect(crop, inside)
        if coarse_part is not None:
            seen[local_slices(coarse_part, hull)] = coarse[local_slices(coarse_part, crop)]
        for box in boxes:
            channels = self.scene.channels(box).to(self.device)
            channels[self.prev_seg] = seen[local_slices(box, hull)]
            normalise_channels(channels, self.intensity, self.prev_seg)
            image = self.scene.image(box).to(self.device)
            logits = self.predict(torch.cat((image, channels))[None])
            seen[local_slices(box, hull)] = logits[0].argmax(0).to(torch.uint8)
        # Only the refined boxes reach the mask; between them it keeps its previous values.
        result = torch.from_numpy(self.scene.mask(inside)).to(self.device)
        for box in boxes:
            part = intersect(box, inside)
            if part is not None:
                result[local_slices(part, inside)] = seen[local_slices(part, hull)].bool()
        return inside, result.cpu().numpy()


def crop_input(
    scene: Scene,
    centre: Sequence[int],
    zoom: float,
    patch: Index3,
    prev_seg: int,
    thin_channels: frozenset[int],
    intensity: float,
    device: torch.device,
) -> tuple[Box, torch.Tensor, torch.Tensor]:
    """The network input for the crop of `zoom` patches around `centre`: (crop, input (C, *patch) with the
    image first, previous segmentation at patch size). Training builds its inputs with this too, so that the
    network learns on exactly what it is given here."""
    size = [round(p * zoom) for p in patch]
    crop = centred_box(centre, size)
    image = scene.image(crop).to(device)
    channels = scene.channels(crop).to(device)
    if tuple(size) != patch:
        previous = F.interpolate(channels[prev_seg][None, None], patch, mode="nearest")[0, 0]
        channels = _downsample_channels(channels, zoom, patch, thin_channels, intensity)
        image = F.interpolate(image[None], patch, mode="trilinear")[0]
    else:
        previous = channels[prev_seg].clone()
    normalise_channels(channels, intensity, prev_seg)
    return crop, torch.cat((image, channels)), previous


def _downsample_channels(
    channels: torch.Tensor, zoom: float, patch: Index3, thin_channels: frozenset[int], intensity: float
) -> torch.Tensor:
    window = _nearest_odd(zoom * 2 - 1)
    # Area averaging of float16 on CPU sums in float16 (as the reference does there): exact parity, but
    # a window of prompts stored at a high intensity (hundreds of prompts into a session) would sum to
    # infinity. Then average in float32 instead.
    overflow = intensity * (math.ceil(zoom) + 1) ** 3 > FP16_MAX
    out = torch.zeros((channels.shape[0], *patch), dtype=channels.dtype, device=channels.device)
    for c in range(channels.shape[0]):
        channel = channels[c][None, None]
        if not bool(channel.any()):  # most channels hold no prompt in the crop: their average is zero
            continue
        if window > 1 and c in thin_channels:
            channel = _max_filter(channel, window)
        if overflow:
            channel = channel.float()
        out[c] = F.interpolate(channel, patch, mode="area")[0, 0]
    return out


def _nearest_odd(value: float) -> int:
    """The odd integer nearest to `value` (the reference's rounding of the widening window)."""
    up, down = math.ceil(value), math.floor(value)
    if up % 2 == 1:
        return up
    if down % 2 == 1:
        return down
    return round(value) + 1


def _max_filter(x: torch.Tensor, window: int) -> torch.Tensor:
    """Maximum over a window³ neighbourhood clipped to the volume (the last three axes).

    Separable, and each axis by doubling windows over shifted views: a few elementwise maxima instead of
    max_pool3d, which is slow on CPU for the large crops of a zoomed-out prompt."""
    r = window // 2
    for axis in (-3, -2, -1):
        shape = list(x.shape)
        shape[axis] = r
        pad = x.new_full(shape, float("-inf"))
        acc = torch.cat((pad, x, pad), dim=axis)
        width = 1
        while width < window:
            step = min(width, window - width)
            n = acc.shape[axis] - step
            acc = torch.maximum(acc.narrow(axis, 0, n), acc.narrow(axis, step, n))
            width += step
        x = acc
    return x


def _border_changed(prediction: torch.Tensor, previous: torch.Tensor) -> bool:
    """Whether the prediction differs from the previous segmentation on a face of the crop enough to zoom
    out."""
    faces = []
    for dim in range(3):
        for position in (0, prediction.shape[dim] - 1):
            new = prediction.select(dim, position).float()
            old = previous.select(dim, position).float()
            faces.append(torch.stack((old.sum(), new.sum(), (old != new).sum().float())))
    for old, new, changed in torch.stack(faces).tolist():
        relative = max(old, new) / max(min(old, new), 1e-5) - 1
        if changed > ABSOLUTE_CHANGE or (changed > MIN_CHANGE and relative > RELATIVE_CHANGE):
            return True
    return False


# --- set cover of the difference map ---------------------------------------------------------------------


def _integral(mask: torch.Tensor) -> torch.Tensor:
    """Summed-volume table with a zero border: sum of mask[a0:a1, b0:b1, c0:c1] in eight lookups."""
    table = F.pad(mask.to(torch.int32), (1, 0, 1, 0, 1, 0))
    for dim in range(3):
        table = table.cumsum(dim, dtype=torch.int32)
    return table


def _counts(table: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Sums of the regions [lo, hi) (rows of (n, 3) corners) from a summed-volume table."""
    hi = torch.maximum(hi, lo)  # an empty region counts zero
    total = torch.zeros(lo.shape[0], dtype=torch.int64, device=table.device)
    for corner in range(8):
        bits = [(corner >> d) & 1 for d in range(3)]
        index = [hi[:, d] if bit else lo[:, d] for d, bit in enumerate(bits)]
        sign = 1 if (3 - sum(bits)) % 2 == 0 else -1
        total += sign * table[index[0], index[1], index[2]].long()
    return total


def _covered(
    centres: torch.Tensor, patch: Index3, margin: Index3, shape: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The region each centre's box counts as covered: the box shrunk by the margin, clipped to the map."""
    device = centres.device
    half = torch.tensor([p // 2 for p in patch], device=device)
    end = torch.tensor([p - p // 2 for p in patch], device=device)
    m = torch.tensor(margin, device=device)
    lo = torch.clamp(centres - half + m, min=0)
    hi = torch.minimum(centres + end - m, torch.tensor(list(shape), device=device))
    return lo, hi


def cover(
    mask: torch.Tensor,
    patch: Index3,
    margin: Index3,
    rng: np.random.RandomState,
    limit: float = math.inf,
    depth: int = 0,
    stride: Sequence[int] | None = None,
) -> list[Box]:
    """Patch-sized boxes (local to `mask`, possibly reaching outside it) that together cover the true voxels
    of `mask` with their interior (each box minus `margin`).

    Greedy: candidate centres lie on a grid (a quarter of the object's extent apart) over the object; each
    step takes the candidate covering the most uncovered voxels. A grid that misses the object is refined up
    to COVER_MAX_DEPTH times; what the grid cannot reach is covered from sampled centres. With a `limit`, the
    first `limit` boxes of that sequence.
    """
    if not bool(mask.any()):
        return []
    if depth > COVER_MAX_DEPTH:
        return _sampled_cover(mask.clone(), patch, margin, rng, COVER_SAMPLES_STUCK, limit)
    shape = mask.shape
    nonzero = [torch.nonzero(mask.any(dim=tuple(a for a in range(3) if a != d))).flatten() for d in range(3)]
    first = [int(n[0]) for n in nonzero]
    last = [int(n[-1]) for n in nonzero]
    if stride is None:
        stride = [max(1, round((b - a) / 4)) for a, b in zip(first, last, strict=True)]
    axes = [torch.arange(first[d], last[d] + 1, stride[d], device=mask.device) for d in range(3)]
    grid = torch.cartesian_prod(*axes)
    centres = grid[mask[grid[:, 0], grid[:, 1], grid[:, 2]]]
    if len(centres) == 0:
        return cover(mask, patch, margin, rng, limit, depth + 1, [max(1, s // 2) for s in stride])
    uncovered = mask.clone()
    boxes: list[Box] = []
    while len(centres) > 0 and bool(uncovered.any()) and len(boxes) < limit:
        lo, hi = _covered(centres, patch, margin, shape)
        counts = _counts(_integral(uncovered), lo, hi)
        best = int(torch.argmax(counts))
        if int(counts[best]) == 0:
            break
        boxes.append(centred_box(centres[best].tolist(), patch))
        a, b = lo[best].tolist(), hi[best].tolist()
        uncovered[a[0] : b[0], a[1] : b[1], a[2] : b[2]] = False
        centres = centres[uncovered[centres[:, 0], centres[:, 1], centres[:, 2]]]
    if bool(uncovered.any()) and len(boxes) < limit:
        boxes.extend(_sampled_cover(uncovered, patch, margin, rng, COVER_SAMPLES_REST, limit - len(boxes)))
    return boxes


def _sampled_cover(
    mask: torch.Tensor,
    patch: Index3,
    margin: Index3,
    rng: np.random.RandomState,
    samples: int,
    limit: float,
) -> list[Box]:
    """Cover what is left (mask is consumed): each step samples centres among the voxels still uncovered and
    takes the one covering the most."""
    boxes: list[Box] = []
    while bool(mask.any()) and len(boxes) < limit:
        voxels = torch.nonzero(mask)
        picks = voxels[[rng.choice(len(voxels)) for _ in range(samples)]]
        lo, hi = _covered(picks, patch, margin, mask.shape)
        counts = _counts(_integral(mask), lo, hi)
        best = int(torch.argmax(counts))
        boxes.append(centred_box(picks[best].tolist(), patch))
        a, b = lo[best].tolist(), hi[best].tolist()
        mask[a[0] : b[0], a[1] : b[1], a[2] : b[2]] = False
    return boxes
