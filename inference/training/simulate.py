"""Simulated users for training and evaluation: prompts in the engine's Session format, drawn from a
ground-truth mask and the current prediction.

The first prompt comes from the ground truth; each next prompt corrects the largest error region (the
largest connected component of false negatives gives a positive prompt, of false positives a negative one,
whichever is larger). Points favour the interior (probability ∝ distance transform ** power); 2D boxes
are jittered, shifted and scaled; lassos are closed, dilated and smoothly deformed outlines; scribbles are
lines, centre lines or pieces of contour. Everything is drawn from one numpy Generator, so a seed fixes the
whole sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import ndimage

from inference.prompts import Index3, in_plane
from inference.session import Result, Session

__all__ = ["KINDS", "POLICIES", "Prompt", "SimulatedUser", "error_region"]

Kind = Literal["point", "box", "scribble", "lasso"]
Policy = Literal["points", "box_points", "scribbles", "lassos", "mixed"]
KINDS: tuple[Kind, ...] = ("point", "box", "scribble", "lasso")
POLICIES: tuple[Policy, ...] = ("points", "box_points", "scribbles", "lassos", "mixed")
_SINGLE: dict[str, Kind] = {"points": "point", "scribbles": "scribble", "lassos": "lasso"}


@dataclass(frozen=True, eq=False)  # eq=False: the mask is an array, which has no single truth value
class Prompt:
    """One simulated prompt: ``kind`` and ``positive``, plus the arguments of the matching Session method
    (``index`` for a point; ``start``/``stop`` for a box; ``axis``, ``slice_index`` and a 2D ``mask`` for a
    scribble or lasso)."""

    kind: Kind
    positive: bool
    index: Index3 | None = None
    start: Index3 | None = None
    stop: Index3 | None = None
    axis: int | None = None
    slice_index: int | None = None
    mask: np.ndarray | None = field(default=None, repr=False)

    def apply(self, session: Session) -> Result:
        """Give this prompt to ``session``."""
        if self.kind == "point":
            assert self.index is not None
            return session.add_point(self.index, positive=self.positive)
        if self.kind == "box":
            assert self.start is not None and self.stop is not None
            return session.add_box(self.start, self.stop, positive=self.positive)
        method = session.add_scribble if self.kind == "scribble" else session.add_lasso
        return method(mask=self.mask, axis=self.axis, index=self.slice_index, positive=self.positive)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask.astype(bool, copy=True)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(labels == int(np.argmax(sizes)))


def error_region(target: np.ndarray, prediction: np.ndarray | None) -> tuple[np.ndarray, bool] | None:
    """The region the next prompt corrects and whether the prompt is positive; None when nothing is wrong.

    Without a prediction the whole (largest component of the) target is missing, so the first prompt is
    positive and lies on the object."""
    target = np.asarray(target, dtype=bool)
    if prediction is None:
        return (_largest_component(target), True) if target.any() else None
    prediction = np.asarray(prediction, dtype=bool)
    missed = _largest_component(target & ~prediction)
    extra = _largest_component(prediction & ~target)
    n_missed, n_extra = int(missed.sum()), int(extra.sum())
    if n_missed == 0 and n_extra == 0:
        return None
    # Ties go to the missing part: adding the object matters more than trimming it.
    return (missed, True) if n_missed >= n_extra else (extra, False)


def _interior_distance(region: np.ndarray) -> np.ndarray:
    # Pad with background so that the image border counts as the region's edge.
    padded = np.pad(region, 1)
    inner = tuple(slice(1, -1) for _ in range(region.ndim))
    return np.asarray(ndimage.distance_transform_edt(padded))[inner]


def sample_point(region: np.ndarray, rng: np.random.Generator, power: float) -> tuple[int, ...]:
    """A voxel of ``region`` with probability ∝ (distance to the region's edge) ** power."""
    weights = _interior_distance(region).ravel() ** power
    total = weights.sum()
    if not np.isfinite(total) or total <= 0:  # power 0 or overflow: uniform over the region
        weights = region.ravel().astype(np.float64)
        total = weights.sum()
    flat = int(rng.choice(weights.size, p=weights / total))
    return tuple(int(c) for c in np.unravel_index(flat, region.shape))


class SimulatedUser:
    """A simulated user who corrects the largest error with prompts of one type or of random types.

    ``policy``: "points", "box_points" (a box first, then points), "scribbles", "lassos", or "mixed" (a random
    type for each prompt). Deterministic for a ``seed`` (and the same sequence of calls).
    """

    def __init__(
        self,
        policy: Policy = "mixed",
        seed: int | np.random.Generator | None = 0,
        *,
        point_power: float = 2.0,
        axes: tuple[int, ...] = (0, 1, 2),
        box_jitter: float = 0.05,
        box_shift: float = 0.05,
        box_scale: float = 0.1,
        lasso_closing: int = 2,
        lasso_dilation: int = 2,
        lasso_deform: float = 2.0,
        lasso_smoothness: float = 4.0,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if not axes or any(a not in (0, 1, 2) for a in axes):
            raise ValueError(f"axes must be a non-empty subset of (0, 1, 2), got {axes!r}")
        self.policy: Policy = policy
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.point_power = point_power
        self.axes = axes
        self.box_jitter, self.box_shift, self.box_scale = box_jitter, box_shift, box_scale
        self.lasso_closing, self.lasso_dilation = lasso_closing, lasso_dilation
        self.lasso_deform, self.lasso_smoothness = lasso_deform, lasso_smoothness

    # --- choice of prompt ---------------------------------------------------------------------------------

    def kind_for(self, first: bool) -> Kind:
        if self.policy == "box_points":
            return "box" if first else "point"
        if self.policy == "mixed":
            return KINDS[int(self.rng.integers(len(KINDS)))]
        return _SINGLE[self.policy]

    def next_prompt(self, target: np.ndarray, prediction: np.ndarray | None = None) -> Prompt | None:
        """The next prompt for ``target`` given the current ``prediction`` (None before the first prompt);
        None when the prediction is already right."""
        target = np.asarray(target, dtype=bool)
        if target.ndim != 3:
            raise ValueError(f"target must be 3D, got shape {target.shape}")
        if prediction is not None and np.shape(prediction) != target.shape:
            raise ValueError(f"prediction shape {np.shape(prediction)} differs from target {target.shape}")
        found = error_region(target, prediction)
        if found is None:
            return None
        region, positive = found
        kind = self.kind_for(prediction is None)
        if kind == "point":
            k, j, i = sample_point(region, self.rng, self.point_power)
            return Prompt("point", positive, index=(k, j, i))
        axis, index, plane = self._slice(region)
        if kind == "box":
            return self._box(plane, axis, index, positive)
        drawn = self._lasso(plane) if kind == "lasso" else self._scribble(plane)
        return Prompt(kind, positive, axis=axis, slice_index=index, mask=drawn)

    def _slice(self, region: np.ndarray) -> tuple[int, int, np.ndarray]:
        """A random axis and a slice through the region, slices with more of it more likely (users pick a
        slice where the error shows well)."""
        axis = int(self.axes[int(self.rng.integers(len(self.axes)))])
        others = tuple(d for d in range(3) if d != axis)
        areas = region.sum(axis=others).astype(np.float64)
        index = int(self.rng.choice(areas.size, p=areas / areas.sum()))
        plane = np.take(region, index, axis=axis)
        return axis, index, plane

    # --- prompt types -------------------------------------------------------------------------------------

    def _box(self, plane: np.ndarray, axis: int, index: int, positive: bool) -> Prompt:
        """The region's bounding box on the slice, scaled and shifted as a whole and jittered per edge,
        clipped to the image and never empty."""
        rows = [np.flatnonzero(plane.any(axis=1 - d)) for d in range(2)]
        lo = np.array([r[0] for r in rows], dtype=np.float64)
        hi = np.array([r[-1] + 1 for r in rows], dtype=np.float64)
        size, centre = hi - lo, (lo + hi) / 2
        size = size * (1 + self.rng.uniform(-self.box_scale, self.box_scale))
        centre = centre + self.rng.uniform(-self.box_shift, self.box_shift, 2) * size
        new_lo = centre - size / 2 + self.rng.uniform(-self.box_jitter, self.box_jitter, 2) * size
        new_hi = centre + size / 2 + self.rng.uniform(-self.box_jitter, self.box_jitter, 2) * size
        extent = np.array(plane.shape)
        start2 = np.clip(np.round(new_lo), 0, extent - 1).astype(int)
        stop2 = np.clip(np.round(new_hi), start2 + 1, extent).astype(int)
        start, stop = [index] * 3, [index + 1] * 3
        for n, d in enumerate(in_plane(axis)):
            start[d], stop[d] = int(start2[n]), int(stop2[n])
        return Prompt("box", positive, start=(start[0], start[1], start[2]), stop=(stop[0], stop[1], stop[2]))

    def _lasso(self, plane: np.ndarray) -> np.ndarray:
        """The slice region closed, dilated and deformed by a smooth random displacement of its outline (a
        smoothed noise field added to the signed distance), then filled."""
        pad = self.lasso_closing + self.lasso_dilation + int(np.ceil(self.lasso_deform)) + 1
        shape = np.pad(plane, pad)  # room to grow without the image border clipping the closing
        if self.lasso_closing > 0:
            shape = ndimage.binary_closing(shape, iterations=self.lasso_closing)
        dilation = int(self.rng.integers(0, self.lasso_dilation + 1))
        if dilation > 0:
            shape = ndimage.binary_dilation(shape, iterations=dilation)
        signed = _interior_distance(~shape) - _interior_distance(shape)  # > 0 outside, < 0 inside
        noise = ndimage.gaussian_filter(self.rng.standard_normal(shape.shape), self.lasso_smoothness)
        scale = float(np.abs(noise).max())
        if scale > 0:
            signed = signed - noise / scale * self.lasso_deform
        lasso = ndimage.binary_fill_holes(signed < 0)
        lasso = np.asarray(lasso)[pad:-pad, pad:-pad]
        return lasso if lasso.any() else plane.copy()  # a deformation can only shrink tiny regions away

    def _scribble(self, plane: np.ndarray) -> np.ndarray:
        """A thin stroke inside the slice region: a straight line through it, its centre line (the ridge of
        its distance transform), or a piece of its contour."""
        style = int(self.rng.integers(3))
        if style == 0:
            drawn = self._line(plane)
        elif style == 1:
            drawn = _centre_line(plane)
        else:
            drawn = self._contour_piece(plane)
        if not drawn.any():  # degenerate shapes: one pixel of the region is still a stroke
            drawn = np.zeros_like(plane)
            r, c = sample_point(plane, self.rng, self.point_power)
            drawn[r, c] = True
        return drawn

    def _line(self, plane: np.ndarray) -> np.ndarray:
        """A straight stroke through an interior point in a random direction, as far as the region goes."""
        seed = np.array(sample_point(plane, self.rng, self.point_power), dtype=np.float64)
        angle = self.rng.uniform(0, np.pi)
        step = np.array([np.cos(angle), np.sin(angle)]) * 0.5  # half-pixel steps: no gaps in the stroke
        drawn = np.zeros_like(plane)
        for sign in (1.0, -1.0):
            at = seed.copy()
            while True:
                r, c = (int(v) for v in np.round(at))
                if not (0 <= r < plane.shape[0] and 0 <= c < plane.shape[1]) or not plane[r, c]:
                    break
                drawn[r, c] = True
                at += sign * step
        return drawn

    def _contour_piece(self, plane: np.ndarray) -> np.ndarray:
        """The part of the region's inner edge within a random radius of a random edge pixel."""
        edge = plane & ~ndimage.binary_erosion(plane, border_value=0)
        rows, cols = np.nonzero(edge)
        pick = int(self.rng.integers(rows.size))
        radius = self.rng.uniform(0.25, 0.75) * max(int(np.ptp(rows)), int(np.ptp(cols)), 1)
        near = (rows - rows[pick]) ** 2 + (cols - cols[pick]) ** 2 <= radius**2
        piece = np.zeros_like(plane)
        piece[rows[near], cols[near]] = True
        # Keep the stretch of contour that holds the picked pixel, not other edges that happen to be near.
        labels, _ = ndimage.label(piece, structure=np.ones((3, 3), dtype=bool))
        return np.asarray(labels == labels[rows[pick], cols[pick]])


def _centre_line(plane: np.ndarray) -> np.ndarray:
    """The ridge of the distance transform (pixels no nearer the edge than any neighbour), its largest
    8-connected piece: a centre line one or two pixels wide."""
    distance = _interior_distance(plane)
    ridge = plane & (distance >= ndimage.maximum_filter(distance, size=3))
    ridge &= distance > 0
    if not ridge.any():
        return ridge
    labels, count = ndimage.label(ridge, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(labels == int(np.argmax(sizes)))
