"""A classical, non-learned interactive segmenter with the prompt methods of Session, so that the evaluation
harness can give it exactly the prompts it gives a network: a seeded random walker with intensity priors
(L. Grady, "Random walks for image segmentation", 2006; "Multilabel random walker image segmentation using
prior models", 2005).

    session = RandomWalkerSession()
    session.set_image(volume, spacing=(3.0, 0.8, 0.8))   # [k, j, i]; spacing in the same order (mm)
    session.add_point((40, 120, 200))
    session.add_box((40, 80, 150), (41, 160, 260))
    session.mask                                         # the whole mask, uint8

Every call solves the walker again from all prompts so far, on a region of interest (ROI): the bounding box
of the positive prompts, widened by a margin in millimetres plus a fraction of its own size. Seeds:

- point: a small ball (an ellipsoid in voxels when the spacing is anisotropic), object or background;
- scribble: the drawn pixels, object or background;
- lasso: its interior, slightly eroded (lassos are drawn loosely), is object (positive) or background
  (negative); a positive lasso's ring just outside it on its slice is background where the current mask is
  not object (a correction adds to the object, it does not cut into it);
- 2D box: a central part of the box is object (positive) or background (negative); a positive box's ring
  just outside it on its slice is background, like a lasso's;
- the ROI's faces are background.

Later prompts overwrite earlier ones where their seeds overlap. Edge weights are exp(-beta g^2 / mean g^2)
of the z-scored image's gradient g (per mm, so anisotropic voxels are handled); each free voxel also leaks,
with weight ``prior``, to the posterior of "object" given its intensity (histograms of the object and the
background seeds). The object is what has a probability above one half and connects to a positive seed. An
ROI larger than ``max_voxels`` is solved on a coarser grid (block means; the finest axes are coarsened first)
and the probabilities are interpolated back. The mask depends only on the image, the spacing and the
prompts in their order: the method is deterministic. It needs numpy and scipy only.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_array, csr_array, diags_array

from inference.errors import EngineError, PromptError
from inference.prompts import (
    Box,
    Index3,
    box_size,
    check_box,
    check_index,
    check_polygon,
    check_polyline,
    check_positive,
    check_slice_mask,
    intersect,
    local_slices,
    slice_stamp,
    slices,
    whole,
)
from inference.session import Result

__all__ = ["RandomWalkerSession"]

NAME = "baseline"
VERSION = "1.0"
LICENSE = "Apache-2.0"

_FREE, _OBJECT, _BACKGROUND = 0, 1, 2
# Scribbles given as polylines are drawn this wide (pixels per axis), like the v1.0 weights prefer.
_SCRIBBLE_THICKNESS = (2, 2, 2)


@dataclass(frozen=True, eq=False)
class _Mark:
    """Seeds of one label on the voxels ``footprint`` (bool) of ``box`` (inside the image)."""

    box: Box
    footprint: np.ndarray
    label: int


@dataclass(frozen=True)
class _Prompt:
    marks: tuple[_Mark, ...]  # painted in this order
    extent: Box | None  # what the ROI must hold (positive prompts only)


@dataclass(frozen=True)
class _Step:
    """What undo restores: the prompts before a call, and the mask on the ROI it had then."""

    prompts: tuple[_Prompt, ...]
    roi: Box | None
    packed: bytes | None


class RandomWalkerSession:
    """Interactive segmentation of one object with a seeded random walker; Session's prompt interface.

    ``beta``: edge sensitivity, relative to the ROI's mean squared gradient. ``prior``: the weight of the
    intensity prior (0: the plain random walker). ``margin_mm`` and ``margin_fraction``: the ROI is the
    positive prompts' bounding box widened on every side by ``margin_mm + margin_fraction * (its largest
    extent in mm)``. ``max_voxels``: larger ROIs are solved on a coarser grid. ``point_radius``: the seed
    ball's radius in voxels of the finest axis. ``ring``: width in pixels of the background ring outside
    positive boxes and lassos. ``box_centre``: the fraction of a positive box's size (per in-plane axis)
    around its centre that is object. ``lasso_erosion``: pixels a positive lasso's interior is eroded by
    before it seeds the object. ``tol``: the conjugate-gradient tolerance (relative residual).

    The defaults were chosen on STS_001-005 of the shared data (training patients), never on validation ones.
    """

    name = NAME
    version = VERSION
    license = LICENSE

    def __init__(
        self,
        *,
        beta: float = 3.0,
        prior: float = 0.01,
        margin_mm: float = 35.0,
        margin_fraction: float = 0.5,
        max_voxels: int = 200_000,
        point_radius: int = 4,
        ring: int = 3,
        box_centre: float = 0.3,
        lasso_erosion: int = 2,
        tol: float = 1e-2,
        undo_levels: int = 10,
    ) -> None:
        if (
            beta <= 0
            or tol <= 0
            or prior < 0
            or margin_mm < 0
            or margin_fraction < 0
            or not 0 < box_centre <= 1
        ):
            raise ValueError(
                "beta and tol must be positive, prior and margins not negative, box_centre in (0, 1]"
            )
        if max_voxels < 1000 or point_radius < 0 or ring < 1 or lasso_erosion < 0 or undo_levels < 0:
            raise ValueError(
                "max_voxels must be at least 1000, ring at least 1; point_radius, lasso_erosion and "
                "undo_levels must not be negative"
            )
        self.beta, self.prior, self.tol = beta, prior, tol
        self.margin_mm, self.margin_fraction = margin_mm, margin_fraction
        self.max_voxels = max_voxels
        self.point_radius, self.ring = point_radius, ring
        self.box_centre, self.lasso_erosion = box_centre, lasso_erosion
        self.undo_levels = undo_levels
        self.spacing: tuple[float, float, float] | None = None
        self._lock = threading.RLock()
        self._image: np.ndarray | None = None
        self._mean, self._std = 0.0, 1.0
        self._mask: np.ndarray | None = None
        self._clear()

    def __repr__(self) -> str:
        return f"<RandomWalkerSession {self.name} {self.version} ({self.license})>"

    def _clear(self) -> None:
        self._prompts: tuple[_Prompt, ...] = ()
        self._roi: Box | None = None
        self._undo: deque[_Step] = deque(maxlen=self.undo_levels)
        if self._image is not None:
            self._mask = np.zeros(self._image.shape, dtype=bool)

    # --- image --------------------------------------------------------------------------------------------

    def set_image(self, image: np.ndarray, spacing: Sequence[float] | None = None) -> None:
        """Start on a new image [k, j, i]; ``spacing`` is the voxel size along k, j, i (mm; None = 1 mm)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or 0 in image.shape:
            raise PromptError("the image must be a non-empty 3D numpy array [k, j, i]")
        if image.dtype == np.bool_ or not (
            np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
        ):
            raise PromptError(f"the image must hold integers or floats, not {image.dtype}")
        if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
            raise PromptError("the image holds NaN or infinite values")
        values = (1.0, 1.0, 1.0)
        if spacing is not None:
            try:
                parsed = tuple(float(s) for s in spacing)
            except (TypeError, ValueError) as error:
                raise PromptError(f"spacing must be three positive numbers, got {spacing!r}") from error
            if len(parsed) != 3 or not all(np.isfinite(s) and s > 0 for s in parsed):
                raise PromptError(f"spacing must be three positive numbers, got {spacing!r}")
            values = (parsed[0], parsed[1], parsed[2])
        array = np.array(image, dtype=np.float32, order="C", copy=True)
        # Z-score with the statistics of the non-zero bounding box, as the engine normalises.
        occupied = [
            np.flatnonzero(np.any(array != 0, axis=tuple(a for a in range(3) if a != d))) for d in range(3)
        ]
        if any(len(o) == 0 for o in occupied):
            raise PromptError("the image is entirely zero")
        nonzero = array[tuple(slice(int(o[0]), int(o[-1]) + 1) for o in occupied)]
        mean, std = float(nonzero.mean(dtype=np.float64)), float(nonzero.std(dtype=np.float64))
        if not np.isfinite(std) or std == 0:
            raise PromptError("the image's non-zero region is constant: it cannot be normalised")
        with self._lock:
            self._image, self._mean, self._std = array, mean, std
            self.spacing = None if spacing is None else values
            self._clear()

    @property
    def shape(self) -> Index3:
        image = self._ready()
        return (int(image.shape[0]), int(image.shape[1]), int(image.shape[2]))

    def _ready(self) -> np.ndarray:
        if self._image is None:
            raise EngineError("no image: call set_image first")
        return self._image

    def _spacing(self) -> tuple[float, float, float]:
        return self.spacing or (1.0, 1.0, 1.0)

    # --- prompts ------------------------------------------------------------------------------------------

    def add_point(self, index: tuple[int, int, int], positive: bool = True) -> Result:
        """A point on the object (positive) or off it (negative), at voxel index [k, j, i]."""
        with self._lock:
            began = time.perf_counter()
            point = check_index(index, self.shape)
            label = _OBJECT if check_positive(positive) else _BACKGROUND
            mark = self._ball(point, label)
            return self._prompt(_Prompt((mark,), mark.box if label == _OBJECT else None), began)

    def add_box(
        self, start: tuple[int, int, int], stop: tuple[int, int, int], positive: bool = True
    ) -> Result:
        """A 2D box [start, stop) (one axis of size 1) around the object (positive) or off it."""
        with self._lock:
            began = time.perf_counter()
            shape = self.shape
            box = check_box(start, stop, shape)
            size = box_size(box)
            if 1 not in size:
                raise PromptError(
                    f"{self.name} takes 2D boxes only (one axis of size 1); got a box of size {list(size)}"
                )
            positive = check_positive(positive)
            axis = size.index(1)
            centre = []
            for d in range(3):
                lo, hi = box[d]
                half = max((hi - lo) * self.box_centre / 2, 0.5)
                middle = (lo + hi) / 2
                c0 = min(max(math.floor(middle - half), lo), hi - 1)
                centre.append((c0, max(min(math.ceil(middle + half), hi), c0 + 1)))
            inner: Box = (centre[0], centre[1], centre[2])
            if not positive:  # the box is drawn around what is wrong, which need not fill it either
                return self._prompt(
                    _Prompt((_Mark(inner, np.ones(box_size(inner), dtype=bool), _BACKGROUND),), None), began
                )
            ring = self._ring(box, axis, None)
            marks = (ring, _Mark(inner, np.ones(box_size(inner), dtype=bool), _OBJECT))
            return self._prompt(_Prompt(marks, box), began)

    def add_scribble(
        self,
        *,
        mask: np.ndarray | None = None,
        axis: int | None = None,
        index: int | None = None,
        polyline: Sequence[tuple[int, int, int]] | None = None,
        positive: bool = True,
    ) -> Result:
        """A stroke on one slice: a 2D ``mask`` of slice ``index`` of ``axis``, or a ``polyline`` of voxel
        indices on one slice."""
        with self._lock:
            began = time.perf_counter()
            plane, on, drawn = self._slice_input("scribble", mask, axis, index, polyline, positive)
            label = _OBJECT if positive else _BACKGROUND
            mark = _slice_mark(plane, on, drawn, label)
            return self._prompt(_Prompt((mark,), mark.box if positive else None), began)

    def add_lasso(
        self,
        *,
        mask: np.ndarray | None = None,
        axis: int | None = None,
        index: int | None = None,
        polygon: Sequence[tuple[int, int, int]] | None = None,
        positive: bool = True,
    ) -> Result:
        """A filled outline on one slice: a 2D ``mask`` of slice ``index`` of ``axis`` (the filled region), or
        a closed ``polygon`` of voxel indices on one slice."""
        with self._lock:
            began = time.perf_counter()
            plane, on, drawn = self._slice_input("lasso", mask, axis, index, polygon, positive)
            core = drawn
            if self.lasso_erosion:  # lassos are drawn loosely, negative ones too
                eroded = ndimage.binary_erosion(drawn, iterations=self.lasso_erosion)
                core = eroded if eroded.any() else drawn  # a tiny lasso seeds as drawn
            if not positive:
                return self._prompt(_Prompt((_slice_mark(plane, on, core, _BACKGROUND),), None), began)
            whole_lasso = _slice_mark(plane, on, drawn, _OBJECT)
            ring = self._ring(whole_lasso.box, plane, whole_lasso.footprint)
            marks = (ring, _slice_mark(plane, on, core, _OBJECT))
            return self._prompt(_Prompt(marks, whole_lasso.box), began)

    def _slice_input(
        self, kind: str, mask: object, axis: object, index: object, outline: object, positive: object
    ) -> tuple[int, int, np.ndarray]:
        shape = self.shape
        check_positive(positive)
        outline_name = "polyline" if kind == "scribble" else "polygon"
        if (mask is None) == (outline is None):
            raise PromptError(f"give a {kind} either as a mask or as a {outline_name}")
        if mask is not None:
            return check_slice_mask(mask, axis, index, shape)
        if kind == "scribble":
            return check_polyline(outline, axis, index, shape, _SCRIBBLE_THICKNESS)
        return check_polygon(outline, axis, index, shape)

    # --- seeds --------------------------------------------------------------------------------------------

    def _ball(self, point: Index3, label: int) -> _Mark:
        """An ellipsoid of ``point_radius`` voxels of the finest axis (in mm, so fewer on coarse axes)."""
        spacing = self._spacing()
        radius_mm = self.point_radius * min(spacing)
        radii = [int(radius_mm // s) for s in spacing]
        full = [(c - r, c + r + 1) for c, r in zip(point, radii, strict=True)]
        box = intersect((full[0], full[1], full[2]), whole(self.shape))
        assert box is not None  # the point lies inside the image
        grids = np.ogrid[tuple(slice(lo - c, hi - c) for (lo, hi), c in zip(box, point, strict=True))]
        distance = sum((g * s) ** 2 for g, s in zip(grids, spacing, strict=True))
        return _Mark(box, np.asarray(distance <= radius_mm**2 + 1e-9), label)

    def _ring(self, box: Box, axis: int, inside: np.ndarray | None) -> _Mark:
        """Background just outside a region on its slice: ``box`` (one voxel thick along ``axis``), filled by
        ``inside`` (bool over ``box``; None = all of it), grown by ``ring`` pixels in-plane, minus itself and
        minus the current mask."""
        shape = self.shape
        grown_list = [
            box[d] if d == axis else (max(box[d][0] - self.ring, 0), min(box[d][1] + self.ring, shape[d]))
            for d in range(3)
        ]
        grown: Box = (grown_list[0], grown_list[1], grown_list[2])
        region = np.zeros(box_size(grown), dtype=bool)
        region[local_slices(box, grown)] = True if inside is None else inside
        plane = np.take(region, 0, axis=axis)
        outer = ndimage.binary_dilation(plane, structure=np.ones((3, 3), dtype=bool), iterations=self.ring)
        ring = np.expand_dims(outer & ~plane, axis)
        # A correction adds to the object: the ring does not cut into what is segmented already.
        assert self._mask is not None
        return _Mark(grown, ring & ~self._mask[slices(grown)], _BACKGROUND)

    # --- the solve ----------------------------------------------------------------------------------------

    def _region_of_interest(self, prompts: tuple[_Prompt, ...]) -> Box | None:
        extents = [p.extent for p in prompts if p.extent is not None]
        if not extents:
            return None
        lo = [min(e[d][0] for e in extents) for d in range(3)]
        hi = [max(e[d][1] for e in extents) for d in range(3)]
        spacing, shape = self._spacing(), self.shape
        largest = max((hi[d] - lo[d]) * spacing[d] for d in range(3))
        margin_mm = self.margin_mm + self.margin_fraction * largest
        # At least two voxels, so that interior faces are background apart from every positive seed.
        margins = [max(math.ceil(margin_mm / spacing[d]), 2) for d in range(3)]
        bounds = [(max(lo[d] - margins[d], 0), min(hi[d] + margins[d], shape[d])) for d in range(3)]
        return (bounds[0], bounds[1], bounds[2])

    def _labels(self, prompts: tuple[_Prompt, ...], roi: Box) -> np.ndarray:
        labels = np.zeros(box_size(roi), dtype=np.uint8)
        # The ROI's faces are background, those on the image border too: a walker needs somewhere to go
        # that is not the object, and it must not depend on which other prompts there are.
        for d in range(3):
            for end in (0, -1):
                labels[tuple(end if a == d else slice(None) for a in range(3))] = _BACKGROUND
        for prompt in prompts:
            for mark in prompt.marks:
                overlap = intersect(mark.box, roi)
                if overlap is not None:
                    labels[local_slices(overlap, roi)][mark.footprint[local_slices(overlap, mark.box)]] = (
                        mark.label
                    )
        return labels

    def _solve(self, prompts: tuple[_Prompt, ...], roi: Box) -> np.ndarray:
        """The object (bool) on ``roi`` given ``prompts``."""
        labels = self._labels(prompts, roi)
        if not (labels == _OBJECT).any():
            return np.zeros(labels.shape, dtype=bool)
        if not (labels == _FREE).any() or not (labels == _BACKGROUND).any():
            return labels == _OBJECT
        image = self._ready()
        data = (image[slices(roi)] - np.float32(self._mean)) / np.float32(self._std)
        spacing = np.asarray(self._spacing(), dtype=np.float64)
        factors = _coarsening(labels.shape, spacing, self.max_voxels)
        if factors != (1, 1, 1):
            data = _block_mean(data, factors)
            labels_coarse = _block_labels(labels, factors)
        else:
            labels_coarse = labels
        grid = spacing * np.asarray(factors) / spacing.min()
        probability = _walk(data, labels_coarse, grid, self.beta, self.prior, self.tol)
        if factors != (1, 1, 1):
            probability = ndimage.zoom(probability, factors, order=1, mode="nearest", grid_mode=True)
            probability = probability[tuple(slice(0, n) for n in labels.shape)]
        result = probability > 0.5
        # Seeds are what the user said: they hold at full resolution whatever the coarse grid gave.
        result[labels == _OBJECT] = True
        result[labels == _BACKGROUND] = False
        # Only what connects to a positive prompt is the object: the intensity prior may light up look-alike
        # tissue elsewhere in the ROI.
        parts, _ = ndimage.label(result)
        keep = np.unique(parts[labels == _OBJECT])
        result = np.isin(parts, keep[keep > 0])
        return np.asarray(result)

    def _prompt(self, prompt: _Prompt, began: float) -> Result:
        self._ready()
        prompts = (*self._prompts, prompt)
        roi = self._region_of_interest(prompts)
        seeded = time.perf_counter()
        values = None if roi is None else self._solve(prompts, roi)
        timings = {"encode": seeded - began, "predict": time.perf_counter() - seeded}
        return self._commit(prompts, roi, values, timings, began)

    def _commit(
        self,
        prompts: tuple[_Prompt, ...],
        roi: Box | None,
        values: np.ndarray | None,
        timings: dict[str, float],
        began: float,
    ) -> Result:
        assert self._mask is not None
        if self.undo_levels:
            packed = None if self._roi is None else np.packbits(self._mask[slices(self._roi)]).tobytes()
            self._undo.append(_Step(self._prompts, self._roi, packed))
        span = _union(self._roi, roi)
        before = None if span is None else self._mask[slices(span)].copy()
        if self._roi is not None:
            self._mask[slices(self._roi)] = False
        if roi is not None and values is not None:
            self._mask[slices(roi)] = values
        self._prompts, self._roi = prompts, roi
        return self._result(span, before, timings, began)

    def _result(
        self, span: Box | None, before: np.ndarray | None, timings: dict[str, float], began: float
    ) -> Result:
        assert self._mask is not None
        tight: Box = ((0, 0), (0, 0), (0, 0))
        values = np.zeros((0, 0, 0), dtype=bool)
        if span is not None and before is not None:
            changed = before != self._mask[slices(span)]
            if changed.any():
                bounds = []
                for d in range(3):
                    hits = np.flatnonzero(np.any(changed, axis=tuple(a for a in range(3) if a != d)))
                    bounds.append((span[d][0] + int(hits[0]), span[d][0] + int(hits[-1]) + 1))
                tight = (bounds[0], bounds[1], bounds[2])
                values = self._mask[slices(tight)].copy()
        return Result(
            start=(tight[0][0], tight[1][0], tight[2][0]),
            stop=(tight[0][1], tight[1][1], tight[2][1]),
            mask=values,
            timings={**timings, "total": time.perf_counter() - began},
        )

    # --- undo, reset, state -------------------------------------------------------------------------------

    def undo(self) -> Result:
        """Take back the last prompt. Raises EngineError when there is nothing to undo."""
        with self._lock:
            began = time.perf_counter()
            if not self._undo:
                raise EngineError("nothing to undo")
            assert self._mask is not None
            step = self._undo.pop()
            span = _union(self._roi, step.roi)
            before = None if span is None else self._mask[slices(span)].copy()
            if self._roi is not None:
                self._mask[slices(self._roi)] = False
            if step.roi is not None and step.packed is not None:
                size = box_size(step.roi)
                bits = np.unpackbits(np.frombuffer(step.packed, dtype=np.uint8), count=int(np.prod(size)))
                self._mask[slices(step.roi)] = bits.reshape(size).astype(bool)
            self._prompts, self._roi = step.prompts, step.roi
            return self._result(span, before, {"encode": 0.0, "predict": 0.0}, began)

    def reset(self) -> None:
        """Forget every prompt and the mask (the image stays)."""
        with self._lock:
            self._ready()
            self._clear()

    @property
    def mask(self) -> np.ndarray:
        """The whole mask, uint8 (1 = object), indexed [k, j, i] like the image."""
        with self._lock:
            self._ready()
            assert self._mask is not None
            return self._mask.view(np.uint8).copy()


def _slice_mark(axis: int, index: int, drawn: np.ndarray, label: int) -> _Mark:
    """The pixels ``drawn`` (2D bool, a whole slice) of slice ``index`` of ``axis``, cropped to them as the
    engine crops a scribble or lasso stamp."""
    stamp = slice_stamp(axis, index, drawn, channel=0, intensity=1.0)
    assert stamp.footprint is not None
    return _Mark(stamp.box, stamp.footprint, label)


def _union(a: Box | None, b: Box | None) -> Box | None:
    if a is None or b is None:
        return a or b
    bounds = [(min(a[d][0], b[d][0]), max(a[d][1], b[d][1])) for d in range(3)]
    return (bounds[0], bounds[1], bounds[2])


def _coarsening(shape: Sequence[int], spacing: np.ndarray, max_voxels: int) -> tuple[int, int, int]:
    """Integer factors per axis that bring ``shape`` under ``max_voxels``: the finest axis (after coarsening)
    is coarsened next, so the coarse grid becomes more isotropic rather than less."""
    factors = [1, 1, 1]
    while math.prod(math.ceil(n / f) for n, f in zip(shape, factors, strict=True)) > max_voxels:
        candidates = [d for d in range(3) if factors[d] < shape[d]]
        d = min(candidates, key=lambda a: (spacing[a] * factors[a], a))
        factors[d] += 1
    return (factors[0], factors[1], factors[2])


def _padded_blocks(array: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """``array`` padded (edge values) to whole blocks and reshaped to (n0, f0, n1, f1, n2, f2)."""
    pad = [(0, -n % f) for n, f in zip(array.shape, factors, strict=True)]
    padded = np.pad(array, pad, mode="edge")
    n0, n1, n2 = (s // f for s, f in zip(padded.shape, factors, strict=True))
    return padded.reshape(n0, factors[0], n1, factors[1], n2, factors[2])


def _block_mean(data: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    return np.asarray(_padded_blocks(data, factors).mean(axis=(1, 3, 5), dtype=np.float64), dtype=np.float32)


def _block_labels(labels: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """A coarse seed where a block holds seeds of one label only (blocks with both stay free)."""
    blocks = _padded_blocks(labels, factors)
    has_object = (blocks == _OBJECT).any(axis=(1, 3, 5))
    has_background = (blocks == _BACKGROUND).any(axis=(1, 3, 5))
    coarse = np.zeros(has_object.shape, dtype=np.uint8)
    coarse[has_object & ~has_background] = _OBJECT
    coarse[has_background & ~has_object] = _BACKGROUND
    if not (coarse == _OBJECT).any():  # thin object seeds next to background: keep them anyway
        coarse[has_object] = _OBJECT
    return coarse


def _walk(
    data: np.ndarray, labels: np.ndarray, spacing: np.ndarray, beta: float, prior: float, tol: float
) -> np.ndarray:
    """The probability that a random walker from each voxel reaches an object seed before a background one,
    where every free voxel also leaks, with weight ``prior``, to the posterior its intensity suggests."""
    if not (labels == _FREE).any() or not (labels == _BACKGROUND).any() or not (labels == _OBJECT).any():
        return np.asarray(labels == _OBJECT, dtype=np.float64)
    values = data.astype(np.float64).ravel()
    seeds = labels.ravel()
    # Edges between 6-neighbours: (lower, upper) voxel numbers and the squared gradient per mm.
    number = np.arange(values.size).reshape(data.shape)
    lower, upper, squares = [], [], []
    for axis in range(3):
        if data.shape[axis] > 1:
            head = tuple(slice(0, -1) if a == axis else slice(None) for a in range(3))
            tail = tuple(slice(1, None) if a == axis else slice(None) for a in range(3))
            lower.append(number[head].ravel())
            upper.append(number[tail].ravel())
            squares.append(((values[upper[-1]] - values[lower[-1]]) / spacing[axis]) ** 2)
    first, second, square = np.concatenate(lower), np.concatenate(upper), np.concatenate(squares)
    # Relative to the mean squared gradient, beta means the same edge contrast in every modality.
    weight = np.exp(-beta * square / (float(square.mean()) or 1.0)) + 1e-6
    free = seeds == _FREE
    posterior = _posterior(values, seeds)
    # (L_FF + prior I) x = W_FO 1 + prior * posterior, on the free voxels F (O: the object seeds).
    unknown = np.full(values.size, -1, dtype=np.int64)
    count = int(free.sum())
    unknown[free] = np.arange(count)
    degree = np.bincount(first, weight, values.size) + np.bincount(second, weight, values.size)
    rhs = prior * posterior[free]
    for a, b in ((first, second), (second, first)):
        to_object = free[a] & (seeds[b] == _OBJECT)
        rhs += np.bincount(unknown[a[to_object]], weight[to_object], count)
    inner = free[first] & free[second]
    rows, cols = unknown[first[inner]], unknown[second[inner]]
    pairs = coo_array(
        (
            np.concatenate([-weight[inner], -weight[inner]]),
            (np.concatenate([rows, cols]), np.concatenate([cols, rows])),
        ),
        shape=(count, count),
    )
    diagonal = degree[free] + prior
    system = (pairs.tocsr() + diags_array(diagonal)).tocsr()
    # Starting from the posterior and stopping early is enough: only which side of 1/2 a voxel ends on counts.
    solution = _conjugate_gradients(system, rhs, posterior[free], 1 / diagonal, tol)
    out = (seeds == _OBJECT).astype(np.float64)
    out[free] = solution
    return out.reshape(data.shape)


def _posterior(values: np.ndarray, seeds: np.ndarray, bins: int = 64) -> np.ndarray:
    """P(object | intensity) per voxel from smoothed histograms of the object and the background seeds'
    intensities (equal class priors; intensities neither has seen get about 1/2)."""
    edges = np.linspace(values.min(), values.max() + 1e-6, bins + 1)
    densities = []
    for label in (_OBJECT, _BACKGROUND):
        counts = np.histogram(values[seeds == label], edges)[0].astype(np.float64)
        densities.append(ndimage.gaussian_filter1d(counts, 1.5) / counts.sum() + 1e-4)
    which = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, bins - 1)
    return np.asarray((densities[0] / (densities[0] + densities[1]))[which])


def _sum(values: np.ndarray) -> float:
    return float(np.add.reduce(values))


def _conjugate_gradients(
    system: csr_array, rhs: np.ndarray, start: np.ndarray, inverse_diagonal: np.ndarray, tol: float
) -> np.ndarray:
    """Jacobi-preconditioned conjugate gradients for a symmetric positive definite ``system``, until the
    residual is ``tol`` times the right-hand side's norm (at most 1000 iterations).

    Written out with numpy reductions instead of scipy's cg, which calls BLAS: threaded BLAS dot products
    stall on busy cores (ten times slower on two shared cores) and need not sum in the same order every run.
    """
    limit = tol * math.sqrt(_sum(rhs * rhs))
    if limit == 0:
        return np.zeros_like(rhs)
    x = start.copy()
    residual = rhs - system @ x
    preconditioned = residual * inverse_diagonal
    direction = preconditioned.copy()
    product = _sum(residual * preconditioned)
    for _ in range(1000):
        if math.sqrt(_sum(residual * residual)) <= limit:
            break
        image = system @ direction
        step = product / _sum(direction * image)
        x += step * direction
        residual -= step * image
        preconditioned = residual * inverse_diagonal
        previous, product = product, _sum(residual * preconditioned)
        direction = preconditioned + (product / previous) * direction
    return x
