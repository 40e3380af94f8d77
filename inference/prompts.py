"""Prompts: validation, rasterisation on a slice, and encoding into the network's interaction channels.

Coordinates are voxel indices ``[k, j, i]`` of the image array, never transposed. Boxes are half-open:
``start <= index < stop`` on every axis.

Each accepted prompt becomes a `Stamp`: the voxels it marks in one interaction channel, with their values.
Sessions keep the stamps themselves (a few kilobytes per prompt) instead of dense channels, and draw the
channels only inside the crop the network is about to see (`draw_channels`).

The values follow what the nnInteractive weights were trained with, in the arithmetic of the reference
implementation, so that the network sees the same numbers:

- a point is a ball of the model's point radius, weighted by its Euclidean distance transform normalised
  to 1 at the centre; boxes, scribbles and lassos mark their voxels with 1; overlapping prompts of one
  channel merge by maximum;
- older prompts fade by the model's decay per newer prompt. Instead of rescaling every older stamp, each new
  stamp is stored at a running *intensity* that grows by 1/decay per prompt, rounded to float16, and the
  crop handed to the network is divided by the current intensity (`normalise_channels`). When the intensity
  would overflow float16, every stamp is rescaled so that the newest sits at a tenth of float16's maximum
  (`renormalise`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from inference.errors import PromptError

Index3 = tuple[int, int, int]
# Half-open [lo, hi) per axis.
Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]

FP16_MAX = float(torch.finfo(torch.float16).max)
RENORMALISED_INTENSITY = FP16_MAX / 10


def make_box(lo: Sequence[int], hi: Sequence[int]) -> Box:
    """The box [lo, hi) from its corners."""
    return ((int(lo[0]), int(hi[0])), (int(lo[1]), int(hi[1])), (int(lo[2]), int(hi[2])))


def centred_box(centre: Sequence[int], size: Sequence[int]) -> Box:
    """The box of `size` around `centre` (an even size reaches one voxel further towards the low end)."""
    lo = [c - s // 2 for c, s in zip(centre, size, strict=True)]
    return make_box(lo, [a + s for a, s in zip(lo, size, strict=True)])


def box_size(box: Box) -> Index3:
    return (box[0][1] - box[0][0], box[1][1] - box[1][0], box[2][1] - box[2][0])


def intersect(a: Box, b: Box) -> Box | None:
    """The overlap of two boxes, None when they do not overlap."""
    lo = [max(a[d][0], b[d][0]) for d in range(3)]
    hi = [min(a[d][1], b[d][1]) for d in range(3)]
    if any(h <= low for low, h in zip(lo, hi, strict=True)):
        return None
    return make_box(lo, hi)


def local_slices(box: Box, frame: Box) -> tuple[slice, slice, slice]:
    """Slices selecting `box` inside an array that covers `frame`."""
    return (
        slice(box[0][0] - frame[0][0], box[0][1] - frame[0][0]),
        slice(box[1][0] - frame[1][0], box[1][1] - frame[1][0]),
        slice(box[2][0] - frame[2][0], box[2][1] - frame[2][0]),
    )


def slices(box: Box) -> tuple[slice, slice, slice]:
    return (slice(*box[0]), slice(*box[1]), slice(*box[2]))


def whole(shape: Sequence[int]) -> Box:
    return ((0, int(shape[0])), (0, int(shape[1])), (0, int(shape[2])))


def fp16(value: float) -> float:
    """`value` rounded to the nearest float16, as stored in the interaction channels."""
    return float(torch.tensor(value, dtype=torch.float64).to(torch.float16))


@dataclass(frozen=True, eq=False)
class Stamp:
    """One prompt in one interaction channel: float16 values on the box it covers (inside the image).

    `footprint` is either the float16 values themselves (points), or the voxels marked with `value` (bool;
    None = the whole box). Stamps are immutable: sessions share them between undo levels.
    """

    channel: int
    box: Box
    value: float = 1.0
    footprint: np.ndarray | None = None

    def values(self, region: Box) -> torch.Tensor:
        """The stamp's float16 values on `region`, which lies inside the stamp's box."""
        sl = local_slices(region, self.box)
        if self.footprint is None:
            return torch.full(box_size(region), self.value, dtype=torch.float16)
        part = torch.from_numpy(np.ascontiguousarray(self.footprint[sl]))
        if part.dtype == torch.bool:
            return part.to(torch.float16) * self.value
        return part

    def scaled(self, factor: float) -> Stamp:
        """The stamp with its float16 values multiplied by `factor` (float16 arithmetic, as the reference)."""
        value = float(torch.tensor([self.value], dtype=torch.float16).mul_(factor)[0])
        footprint = self.footprint
        if footprint is not None and footprint.dtype == np.float16:
            footprint = torch.from_numpy(footprint.copy()).mul_(factor).numpy()
        return Stamp(self.channel, self.box, value, footprint)

    @property
    def nbytes(self) -> int:
        return 0 if self.footprint is None else int(self.footprint.nbytes)


def next_intensity(
    intensity: float, decay: float, stamps: tuple[Stamp, ...]
) -> tuple[float, tuple[Stamp, ...]]:
    """The intensity for a new prompt, and the stamps rescaled if the intensity would overflow float16."""
    if decay >= 1:
        return intensity, stamps
    intensity *= 1 / decay
    if intensity <= FP16_MAX:
        return intensity, stamps
    factor = RENORMALISED_INTENSITY / intensity
    return RENORMALISED_INTENSITY, tuple(s.scaled(factor) for s in stamps)


@lru_cache(maxsize=4)
def point_ball(radius: int) -> np.ndarray:
    """Float64 weights of a point: a ball of `radius` voxels weighted by its distance transform, 1 in the
    centre."""
    offsets = np.arange(-radius, radius + 1) ** 2
    ball = offsets[:, None, None] + offsets[None, :, None] + offsets[None, None, :] <= radius * radius
    weights = np.asarray(distance_transform_edt(ball), dtype=np.float64)
    weights /= weights.max()
    weights.flags.writeable = False
    return weights


def point_stamp(index: Index3, channel: int, radius: int, intensity: float, shape: Sequence[int]) -> Stamp:
    ball = point_ball(radius)
    k, j, i = index
    full: Box = ((k - radius, k + radius + 1), (j - radius, j + radius + 1), (i - radius, i + radius + 1))
    box = intersect(full, whole(shape))
    if box is None:  # the index was validated to lie inside the image
        raise AssertionError("point outside the image")
    values = torch.from_numpy(ball[local_slices(box, full)] * intensity).to(torch.float16).numpy()
    return Stamp(channel, box, footprint=values)


def box_stamp(box: Box, channel: int, intensity: float) -> Stamp:
    return Stamp(channel, box, value=fp16(intensity))


def slice_stamp(axis: int, index: int, drawn: np.ndarray, channel: int, intensity: float) -> Stamp:
    """A scribble or lasso: the voxels `drawn` (2D bool, a whole slice) on slice `index` of `axis`."""
    rows = np.flatnonzero(drawn.any(axis=1))
    cols = np.flatnonzero(drawn.any(axis=0))
    (r0, r1), (c0, c1) = (int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1)
    footprint = np.expand_dims(drawn[r0:r1, c0:c1], axis)
    ranges = [(r0, r1), (c0, c1)]
    ranges.insert(axis, (index, index + 1))
    return Stamp(channel, (ranges[0], ranges[1], ranges[2]), value=fp16(intensity), footprint=footprint)


def draw_channels(stamps: Sequence[Stamp], count: int, region: Box) -> torch.Tensor:
    """The `count` interaction channels on `region` (which may reach outside the image; zero there), float16,
    not yet divided by the intensity. The previous-segmentation channel is left to the caller."""
    out = torch.zeros((count, *box_size(region)), dtype=torch.float16)
    for stamp in stamps:
        overlap = intersect(stamp.box, region)
        if overlap is None:
            continue
        view = out[(stamp.channel, *local_slices(overlap, region))]
        torch.maximum(view, stamp.values(overlap), out=view)
    return out


def normalise_channels(channels: torch.Tensor, intensity: float, prev_seg: int) -> None:
    """Divide the prompt channels (all but the previous segmentation) by the current intensity, in place."""
    if intensity == 1:
        return
    for c in range(channels.shape[0]):
        if c != prev_seg:
            channels[c] /= intensity


# --- validation ------------------------------------------------------------------------------------------


def check_positive(positive: object) -> bool:
    if not isinstance(positive, bool | np.bool_):
        raise PromptError(f"positive must be True or False, got {positive!r}")
    return bool(positive)


def _integer(value: object, what: str) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise PromptError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _triple(value: object, what: str) -> Index3:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3:
        raise PromptError(f"{what} must be three voxel indices (k, j, i), got {value!r}")
    k, j, i = (_integer(v, what) for v in value)
    return (k, j, i)


def check_index(index: object, shape: Sequence[int]) -> Index3:
    point = _triple(index, "a point")
    if not all(0 <= c < s for c, s in zip(point, shape, strict=True)):
        raise PromptError(f"point {list(point)} lies outside the image of shape {list(shape)}")
    return point


def check_box(start: object, stop: object, shape: Sequence[int]) -> Box:
    lo, hi = _triple(start, "box start"), _triple(stop, "box stop")
    for d in range(3):
        if not 0 <= lo[d] < hi[d] <= shape[d]:
            raise PromptError(
                f"box [{list(lo)}, {list(hi)}) must be non-empty and inside the image of shape {list(shape)} "
                f"(start < stop on every axis; stop is exclusive)"
            )
    return ((lo[0], hi[0]), (lo[1], hi[1]), (lo[2], hi[2]))


def check_axis(axis: object) -> int:
    axis = _integer(axis, "axis")
    if axis not in (0, 1, 2):
        raise PromptError(f"axis must be 0 (k), 1 (j) or 2 (i), got {axis}")
    return axis


def in_plane(axis: int) -> tuple[int, int]:
    a, b = (d for d in range(3) if d != axis)
    return a, b


def check_slice_mask(
    mask: object, axis: object, index: object, shape: Sequence[int]
) -> tuple[int, int, np.ndarray]:
    """A 2D mask drawn on slice `index` of `axis`: (axis, index, bool mask)."""
    axis = check_axis(axis)
    index = _integer(index, "slice index")
    if not 0 <= index < shape[axis]:
        raise PromptError(f"slice {index} of axis {axis} lies outside the image of shape {list(shape)}")
    if not isinstance(mask, np.ndarray):
        raise PromptError(f"mask must be a numpy array, got {type(mask).__name__}")
    if mask.dtype != np.bool_ and not np.issubdtype(mask.dtype, np.integer):
        raise PromptError(f"mask must be bool or integer (non-zero = drawn), got dtype {mask.dtype}")
    expected = tuple(int(shape[d]) for d in in_plane(axis))
    if mask.shape != expected:
        raise PromptError(
            f"a mask on a slice of axis {axis} must have shape {list(expected)}, got {list(mask.shape)}"
        )
    drawn = mask != 0
    if not drawn.any():
        raise PromptError("the mask is empty: nothing is drawn")
    return axis, index, drawn


def _check_points(
    points: object, axis: object, index: object, shape: Sequence[int], what: str
) -> tuple[int, int, np.ndarray]:
    """Points of a polyline or polygon on one slice: (axis, index, in-plane coordinates (n, 2) float64)."""
    try:
        coords = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise PromptError(f"{what} must be a sequence of (k, j, i) voxel indices") from error
    if coords.ndim != 2 or coords.shape[1] != 3 or len(coords) == 0:
        raise PromptError(
            f"{what} must be a non-empty sequence of (k, j, i) voxel indices, got shape {list(coords.shape)}"
        )
    if not np.isfinite(coords).all():
        raise PromptError(f"{what} has coordinates that are not finite")
    upper = np.asarray(shape, dtype=np.float64) - 1
    if (coords < 0).any() or (coords > upper).any():
        raise PromptError(f"{what} reaches outside the image of shape {list(shape)}")
    flat = [d for d in range(3) if (coords[:, d] == coords[0, d]).all()]
    if axis is None:
        if len(flat) != 1:
            raise PromptError(
                f"{what} must lie on one slice; give `axis` when its points share more than one coordinate"
                if flat
                else f"{what} does not lie on one slice: no coordinate is the same for all its points"
            )
        axis = flat[0]
    axis = check_axis(axis)
    if axis not in flat:
        raise PromptError(f"{what} does not lie on one slice of axis {axis}")
    on = float(coords[0, axis])
    if on != round(on):
        raise PromptError(f"{what} lies between slices of axis {axis} (index {on})")
    if index is not None and _integer(index, "slice index") != round(on):
        raise PromptError(f"{what} lies on slice {round(on)}, not on slice {index}")
    return axis, round(on), coords[:, list(in_plane(axis))]


def _line_pixels(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Pixels (n, 2) of the segment p-q: one per step along its longer extent, each the nearest pixel."""
    steps = int(math.ceil(np.abs(q - p).max())) + 1
    t = np.linspace(0.0, 1.0, steps)[:, None]
    return np.floor(p + t * (q - p) + 0.5).astype(np.int64)


def _polyline_pixels(coords: np.ndarray, closed: bool) -> np.ndarray:
    ends = np.concatenate([coords, coords[:1]]) if closed else coords
    if len(ends) == 1:
        return np.floor(ends + 0.5).astype(np.int64)
    return np.concatenate([_line_pixels(ends[n], ends[n + 1]) for n in range(len(ends) - 1)])


def rasterise_polyline(coords: np.ndarray, plane: tuple[int, int], thickness: tuple[int, int]) -> np.ndarray:
    """A stroke along the polyline `coords` ((n, 2) in-plane pixel coordinates): the centre line widened to
    `thickness` pixels per in-plane axis (for an even thickness the extra pixel is on the positive side)."""
    drawn = np.zeros(plane, dtype=bool)
    centre = _polyline_pixels(coords, closed=False)
    for da in range(-((thickness[0] - 1) // 2), thickness[0] // 2 + 1):
        for db in range(-((thickness[1] - 1) // 2), thickness[1] // 2 + 1):
            a, b = centre[:, 0] + da, centre[:, 1] + db
            inside = (a >= 0) & (a < plane[0]) & (b >= 0) & (b < plane[1])
            drawn[a[inside], b[inside]] = True
    return drawn


def rasterise_polygon(coords: np.ndarray, plane: tuple[int, int]) -> np.ndarray:
    """A filled polygon ((n, 2) in-plane vertices): pixels whose centre is inside (even-odd rule), plus the
    pixels of its outline, so that a lasso always includes what it was drawn along."""
    drawn = np.zeros(plane, dtype=bool)
    start, end = coords, np.roll(coords, -1, axis=0)
    lo_row = max(0, int(math.ceil(coords[:, 0].min())))
    hi_row = min(plane[0] - 1, int(math.floor(coords[:, 0].max())))
    cols = np.arange(plane[1])
    for row in range(lo_row, hi_row + 1):
        # Half-open rule per edge, so a vertex on the scan line is counted once.
        crosses = (start[:, 0] <= row) != (end[:, 0] <= row)
        if not crosses.any():
            continue
        s, e = start[crosses], end[crosses]
        x = np.sort(s[:, 1] + (row - s[:, 0]) * (e[:, 1] - s[:, 1]) / (e[:, 0] - s[:, 0]))
        for left, right in zip(x[0::2], x[1::2], strict=True):
            drawn[row, (cols >= left) & (cols <= right)] = True
    outline = _polyline_pixels(coords, closed=True)
    drawn[outline[:, 0], outline[:, 1]] = True
    return drawn


def check_polyline(
    polyline: object, axis: object, index: object, shape: Sequence[int], thickness: Sequence[int]
) -> tuple[int, int, np.ndarray]:
    """A scribble given as a polyline of voxel indices on one slice: (axis, index, drawn 2D bool)."""
    axis, index, coords = _check_points(polyline, axis, index, shape, "the scribble's polyline")
    a, b = in_plane(axis)
    drawn = rasterise_polyline(coords, (int(shape[a]), int(shape[b])), (int(thickness[a]), int(thickness[b])))
    return axis, index, drawn


def check_polygon(
    polygon: object, axis: object, index: object, shape: Sequence[int]
) -> tuple[int, int, np.ndarray]:
    """A lasso given as a polygon of voxel indices on one slice: (axis, index, filled 2D bool)."""
    axis, index, coords = _check_points(polygon, axis, index, shape, "the lasso's polygon")
    if len(np.unique(coords, axis=0)) < 3:
        raise PromptError("the lasso's polygon is degenerate: it needs at least three distinct vertices")
    nxt = np.roll(coords, -1, axis=0)
    area = 0.5 * abs(float(np.sum(coords[:, 0] * nxt[:, 1] - nxt[:, 0] * coords[:, 1])))
    if area < 0.5:
        raise PromptError(f"the lasso's polygon is degenerate: it encloses an area of {area:g} pixels")
    a, b = in_plane(axis)
    return axis, index, rasterise_polygon(coords, (int(shape[a]), int(shape[b])))
