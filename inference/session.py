"""A segmentation session: one image, its prompts, its mask, undo; what an annotator does, one method each.

    session = Session(model)
    session.set_image(volume)                     # [k, j, i], the series' voxel grid
    result = session.add_point((40, 120, 200))    # the region that changed and the mask inside it
    session.add_box((40, 80, 150), (41, 160, 260), positive=False)
    session.undo()
    session.mask                                  # the whole mask, uint8

What a session holds, so that an idle one costs little more than its image: the image as given (float64
and larger types become float32), normalised only where the network looks; the mask as bits; each prompt as a
small stamp (see prompts.py); undo steps as compressed bits of the region each step changed.
"""

from __future__ import annotations

import base64
import copy
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from inference.autozoom import Plan, Predictor, plan_for_point, plan_for_region
from inference.errors import EngineError, PromptError
from inference.model import Model
from inference.prompts import (
    Box,
    Index3,
    Stamp,
    box_size,
    box_stamp,
    check_box,
    check_index,
    check_polygon,
    check_polyline,
    check_positive,
    check_slice_mask,
    draw_channels,
    intersect,
    local_slices,
    next_intensity,
    point_stamp,
    slice_stamp,
    slices,
    whole,
)

__all__ = ["CPU_MAX_REFINEMENT_PATCHES", "Result", "Session"]

# On CPU one forward pass of the v1.0 network takes minutes: AutoZoom refines at most this many patches per
# prompt there (the largest parts of the change first; the rest of the coarse change is dropped).
CPU_MAX_REFINEMENT_PATCHES = 8

_EMPTY: Box = ((0, 0), (0, 0), (0, 0))


@dataclass(frozen=True)
class Result:
    """What one call changed: the half-open box [start, stop) holding every voxel that changed (empty,
    start == stop, when nothing did), the new mask inside it, and how long the call took (seconds)."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    mask: np.ndarray
    timings: dict[str, float]


class _PackedMask:
    """A binary mask stored as bits along the last axis: an eighth of a byte per voxel."""

    def __init__(self, shape: Index3) -> None:
        self.shape = shape
        self.bits = np.zeros((shape[0], shape[1], (shape[2] + 7) // 8), dtype=np.uint8)

    def _bytes(self, region: Box) -> tuple[tuple[slice, slice, slice], slice]:
        (k0, k1), (j0, j1), (i0, i1) = region
        b0, b1 = i0 // 8, (i1 + 7) // 8
        return (slice(k0, k1), slice(j0, j1), slice(b0, b1)), slice(i0 - 8 * b0, i1 - 8 * b0)

    def read(self, region: Box) -> np.ndarray:
        where, columns = self._bytes(region)
        return np.unpackbits(self.bits[where], axis=2)[:, :, columns].view(bool)

    def write(self, region: Box, values: np.ndarray) -> None:
        where, columns = self._bytes(region)
        bits = np.unpackbits(self.bits[where], axis=2)
        bits[:, :, columns] = values
        self.bits[where] = np.packbits(bits, axis=2)


def zscore_statistics(array: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of the bounding box of the non-zero voxels, computed like the reference
    (float32, torch), so the network sees the same numbers. Training normalises its images with this too."""
    occupied = [
        np.flatnonzero(np.any(array != 0, axis=tuple(a for a in range(3) if a != d))) for d in range(3)
    ]
    if any(len(o) == 0 for o in occupied):
        raise PromptError("the image is entirely zero")
    # Statistics over a view of the whole float32 volume, as the reference takes them (same summation).
    volume = torch.from_numpy(np.asarray(array, dtype=np.float32))[None]
    nonzero = volume[(slice(0, 1), *(slice(int(o[0]), int(o[-1]) + 1) for o in occupied))]
    mean, std = nonzero.mean(), nonzero.std()
    if not torch.isfinite(std) or float(std) == 0:
        raise PromptError("the image's non-zero region is constant: it cannot be normalised")
    return mean, std


class _Image:
    """The image as given, normalised on read (see zscore_statistics)."""

    def __init__(self, image: np.ndarray) -> None:
        self.shape: Index3 = (int(image.shape[0]), int(image.shape[1]), int(image.shape[2]))
        keep = image.dtype == np.float32 or (
            np.issubdtype(image.dtype, np.integer) and image.dtype.itemsize <= 4
        )
        self.array = np.array(image, dtype=image.dtype if keep else np.float32, order="C", copy=True)
        self.mean, self.std = zscore_statistics(self.array)

    def region(self, region: Box) -> torch.Tensor:
        out = torch.zeros((1, *box_size(region)), dtype=torch.float32)
        inside = intersect(region, whole(self.shape))
        if inside is not None:
            values = torch.from_numpy(np.asarray(self.array[slices(inside)], dtype=np.float32))
            out[(0, *local_slices(inside, region))] = (values - self.mean) / self.std
        return out


class _Scene:
    """What one prediction reads: the image and mask, with the prompts including the new one."""

    def __init__(
        self, image: _Image, mask: _PackedMask, stamps: tuple[Stamp, ...], count: int, prev_seg: int
    ):
        self.shape = image.shape
        self._image, self._mask, self._stamps = image, mask, stamps
        self._count, self._prev_seg = count, prev_seg

    def image(self, region: Box) -> torch.Tensor:
        return self._image.region(region)

    def channels(self, region: Box) -> torch.Tensor:
        out = draw_channels(self._stamps, self._count, region)
        inside = intersect(region, whole(self.shape))
        if inside is not None:
            out[(self._prev_seg, *local_slices(inside, region))] = torch.from_numpy(self.mask(inside))
        return out

    def mask(self, region: Box) -> np.ndarray:
        return self._mask.read(region)


@dataclass(frozen=True)
class _Step:
    """What undoing one call restores: the prompts and record before it, and the mask it overwrote."""

    stamps: tuple[Stamp, ...]
    intensity: float
    record: tuple[dict[str, Any], ...]
    region: Box
    previous: bytes  # the mask on `region` before the call: packed bits, compressed


def _tight(changed: np.ndarray, offset: Box) -> Box:
    """The bounding box of the true voxels of `changed` (which has some), offset into image coordinates."""
    bounds = []
    for d in range(3):
        hits = np.flatnonzero(np.any(changed, axis=tuple(a for a in range(3) if a != d)))
        bounds.append((offset[d][0] + int(hits[0]), offset[d][0] + int(hits[-1]) + 1))
    return (bounds[0], bounds[1], bounds[2])


def _pack(values: np.ndarray) -> bytes:
    return zlib.compress(np.packbits(values).tobytes(), 1)


def _unpack(data: bytes, shape: Sequence[int]) -> np.ndarray:
    count = int(np.prod(shape))
    return (
        np.unpackbits(np.frombuffer(zlib.decompress(data), dtype=np.uint8), count=count)
        .reshape(shape)
        .view(bool)
    )


def _encode_mask(values: np.ndarray, start: Sequence[int]) -> dict[str, Any]:
    """A bool array placed at `start`, for the JSON record."""
    return {
        "start": [int(s) for s in start],
        "shape": [int(s) for s in values.shape],
        "bits": base64.b64encode(_pack(values)).decode("ascii"),
    }


def _decode_mask(entry: dict[str, Any]) -> tuple[tuple[int, ...], np.ndarray]:
    return tuple(entry["start"]), _unpack(base64.b64decode(entry["bits"]), entry["shape"])


def _coordinates(points: np.ndarray) -> list[list[float | int]]:
    return [[int(v) if float(v).is_integer() else float(v) for v in point] for point in points.tolist()]


class Session:
    """Interactive segmentation of one object in one image with one model.

    ``autozoom``: zoom out when the object leaves the patch, then refine at full resolution (see autozoom.py).
    ``undo_levels``: how many calls `undo` can take back. ``max_refinement_patches``: the most full-resolution
    patches AutoZoom refines per prompt; None = unlimited on a GPU, and on CPU the model's declared budget
    (InteractionConfig.cpu_refinement_patches) or CPU_MAX_REFINEMENT_PATCHES.

    Methods are thread-safe (one call at a time per session); sessions share their model. Errors in a call
    (PromptError for bad input) leave the session as it was.
    """

    def __init__(
        self,
        model: Model,
        *,
        autozoom: bool = True,
        undo_levels: int = 10,
        max_refinement_patches: int | None = None,
    ) -> None:
        if model.num_image_channels != 1:
            raise EngineError(
                f"sessions take one image channel; {model.name} wants {model.num_image_channels}"
            )
        if undo_levels < 0:
            raise ValueError(f"undo_levels must be at least 0, not {undo_levels}")
        if max_refinement_patches is not None and max_refinement_patches < 1:
            raise ValueError(f"max_refinement_patches must be at least 1, not {max_refinement_patches}")
        if max_refinement_patches is None and model.device.type == "cpu":
            declared = model.interaction.cpu_refinement_patches
            max_refinement_patches = CPU_MAX_REFINEMENT_PATCHES if declared is None else declared
        self.model = model
        self.autozoom = autozoom
        self.undo_levels = undo_levels
        self.max_refinement_patches = max_refinement_patches
        self.spacing: tuple[float, float, float] | None = None
        self._thin = model.interaction.thin_channels
        self._lock = threading.RLock()
        self._image: _Image | None = None
        self._mask: _PackedMask | None = None
        self._clear()

    def _clear(self) -> None:
        self._stamps: tuple[Stamp, ...] = ()
        self._intensity = 1.0
        self._record: tuple[dict[str, Any], ...] = ()
        self._undo: deque[_Step] = deque(maxlen=self.undo_levels)
        if self._image is not None:
            self._mask = _PackedMask(self._image.shape)

    # --- image --------------------------------------------------------------------------------------------

    def set_image(self, image: np.ndarray, spacing: Sequence[float] | None = None) -> None:
        """Start on a new image: a 3D array indexed [k, j, i]. Prompts, mask and undo history are cleared.

        ``spacing`` (mm, any order the caller likes) is kept for the caller; nnInteractive works in voxels.
        """
        if not isinstance(image, np.ndarray) or image.ndim != 3 or 0 in image.shape:
            raise PromptError(
                f"the image must be a non-empty 3D numpy array [k, j, i], got {_describe(image)}"
            )
        if image.dtype == np.bool_ or not (
            np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
        ):
            raise PromptError(f"the image must hold integers or floats, not {image.dtype}")
        if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
            raise PromptError("the image holds NaN or infinite values")
        if spacing is not None:
            try:
                values = tuple(float(s) for s in spacing)
            except (TypeError, ValueError) as error:
                raise PromptError(f"spacing must be three positive numbers, got {spacing!r}") from error
            if len(values) != 3 or not all(np.isfinite(s) and s > 0 for s in values):
                raise PromptError(f"spacing must be three positive numbers, got {spacing!r}")
        normalised = _Image(image)
        with self._lock:
            self._image = normalised
            self.spacing = None if spacing is None else (values[0], values[1], values[2])
            self._clear()

    @property
    def shape(self) -> Index3:
        return self._ready().shape

    def _ready(self) -> _Image:
        if self._image is None:
            raise EngineError("no image: call set_image first")
        return self._image

    # --- prompts ------------------------------------------------------------------------------------------

    def add_point(self, index: tuple[int, int, int], positive: bool = True) -> Result:
        """A point on the object (positive) or off it (negative), at voxel index [k, j, i]."""
        with self._lock:
            began = time.perf_counter()
            config = self.model.interaction
            if not config.supports_points:
                raise PromptError(f"{self.model.name} does not take points")
            point = check_index(index, self._ready().shape)
            channel = config.point_channels[0 if check_positive(positive) else 1]
            entry = {"type": "point", "index": list(point), "positive": bool(positive)}
            return self._prompt(
                entry,
                lambda intensity: point_stamp(point, channel, config.point_radius, intensity, self.shape),
                plan_for_point(point),
                began,
            )

    def add_box(
        self, start: tuple[int, int, int], stop: tuple[int, int, int], positive: bool = True
    ) -> Result:
        """A box [start, stop) around the object; 2D (one axis of size 1) unless the model takes 3D boxes."""
        with self._lock:
            began = time.perf_counter()
            config = self.model.interaction
            box = check_box(start, stop, self._ready().shape)
            flat = 1 in box_size(box)
            if flat and not config.supports_2d_box and not config.supports_3d_box:
                raise PromptError(f"{self.model.name} does not take boxes")
            if not flat and not config.supports_3d_box:
                raise PromptError(
                    f"{self.model.name} takes 2D boxes only (one axis of size 1); "
                    f"got a box of size {list(box_size(box))}"
                )
            pair = config.box_channels if flat and config.supports_2d_box else config.box3d_channels
            channel = pair[0 if check_positive(positive) else 1]
            entry = {
                "type": "box",
                "start": [b[0] for b in box],
                "stop": [b[1] for b in box],
                "positive": bool(positive),
            }
            return self._prompt(
                entry,
                lambda intensity: box_stamp(box, channel, intensity),
                plan_for_region(box, self.model.patch_size),
                began,
            )

    def add_scribble(
        self,
        *,
        mask: np.ndarray | None = None,
        axis: int | None = None,
        index: int | None = None,
        polyline: Sequence[tuple[int, int, int]] | None = None,
        positive: bool = True,
    ) -> Result:
        """A stroke on one slice: a 2D ``mask`` of slice ``index`` of ``axis`` (drawn as given), or a
        ``polyline`` of voxel indices on one slice, drawn as wide as the model prefers."""
        return self._slice_prompt("scribble", mask, axis, index, polyline, positive)

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
        a closed ``polygon`` of voxel indices on one slice, which the session fills."""
        return self._slice_prompt("lasso", mask, axis, index, polygon, positive)

    def _slice_prompt(
        self, kind: str, mask: object, axis: object, index: object, outline: object, positive: object
    ) -> Result:
        with self._lock:
            began = time.perf_counter()
            config = self.model.interaction
            scribble = kind == "scribble"
            supported = config.supports_scribble if scribble else config.supports_lasso
            pair = config.scribble_channels if scribble else config.lasso_channels
            outline_name = "polyline" if scribble else "polygon"
            if not supported:
                raise PromptError(f"{self.model.name} does not take {kind}s")
            shape = self._ready().shape
            if (mask is None) == (outline is None):
                raise PromptError(f"give a {kind} either as a mask or as a {outline_name}")
            channel = pair[0 if check_positive(positive) else 1]
            if mask is not None:
                plane, on, drawn = check_slice_mask(mask, axis, index, shape)
            elif scribble:
                plane, on, drawn = check_polyline(
                    outline, axis, index, shape, config.preferred_scribble_thickness
                )
            else:
                plane, on, drawn = check_polygon(outline, axis, index, shape)
            entry: dict[str, Any] = {"type": kind, "axis": plane, "index": on, "positive": bool(positive)}
            stamp = slice_stamp(plane, on, drawn, channel, 1.0)
            if mask is None:
                entry[outline_name] = _coordinates(np.asarray(outline, dtype=np.float64))
            else:
                assert stamp.footprint is not None
                start = [lo for d, (lo, _) in enumerate(stamp.box) if d != plane]
                entry["mask"] = _encode_mask(stamp.footprint.squeeze(plane), start)
            return self._prompt(
                entry,
                lambda intensity: slice_stamp(plane, on, drawn, channel, intensity),
                plan_for_region(stamp.box, self.model.patch_size),
                began,
            )

    def set_initial_mask(self, mask: np.ndarray) -> Result:
        """Start from an existing segmentation (non-zero = object), as the reference does: prompts are cleared
        and nothing is predicted until the next prompt, which sees this mask as the previous segmentation."""
        with self._lock:
            began = time.perf_counter()
            if not self.model.interaction.supports_initial_seg:
                raise PromptError(f"{self.model.name} does not take an initial mask")
            shape = self._ready().shape
            if not isinstance(mask, np.ndarray) or mask.shape != shape:
                raise PromptError(
                    f"the initial mask must be a numpy array of the image's shape {list(shape)}, "
                    f"got {_describe(mask)}"
                )
            if mask.dtype != np.bool_ and not np.issubdtype(mask.dtype, np.integer):
                raise PromptError(
                    f"the initial mask must be bool or integer (non-zero = object), not {mask.dtype}"
                )
            values = mask != 0
            entry = {"type": "initial_mask", "mask": _encode_mask(values, (0, 0, 0))}
            encoded = time.perf_counter()
            return self._commit(
                whole(shape), values, (), 1.0, (entry,), {"encode": encoded - began, "predict": 0.0}, began
            )

    # --- the prediction and its bookkeeping ---------------------------------------------------------------

    def _prompt(
        self, entry: dict[str, Any], make_stamp: Callable[[float], Stamp], plan: Plan, began: float
    ) -> Result:
        image = self._ready()
        assert self._mask is not None
        config = self.model.interaction
        intensity, stamps = next_intensity(self._intensity, config.interaction_decay, self._stamps)
        stamps = (*stamps, make_stamp(intensity))
        encoded = time.perf_counter()
        predictor = Predictor(
            scene=_Scene(image, self._mask, stamps, config.num_channels, config.prev_seg_channel),
            patch=self.model.patch_size,
            prev_seg=config.prev_seg_channel,
            thin_channels=self._thin,
            intensity=intensity,
            predict=self.model.predict_logits,
            device=self.model.device,
            autozoom=self.autozoom,
            max_patches=self.max_refinement_patches,
        )
        region, values = predictor.segment(plan)
        timings = {"encode": encoded - began, "predict": time.perf_counter() - encoded}
        return self._commit(region, values, stamps, intensity, (*self._record, entry), timings, began)

    def _commit(
        self,
        region: Box,
        values: np.ndarray,
        stamps: tuple[Stamp, ...],
        intensity: float,
        record: tuple[dict[str, Any], ...],
        timings: dict[str, float],
        began: float,
    ) -> Result:
        """Make the new state current: the mask takes `values` on `region`; the undo step keeps what it
        replaced."""
        assert self._mask is not None
        previous = self._mask.read(region)
        changed = previous != values
        tight = _tight(changed, region) if changed.any() else _EMPTY
        part = local_slices(tight, region)
        if self.undo_levels:
            self._undo.append(
                _Step(self._stamps, self._intensity, self._record, tight, _pack(previous[part]))
            )
        if tight != _EMPTY:
            self._mask.write(tight, values[part])
        self._stamps, self._intensity, self._record = stamps, intensity, record
        return _result(tight, values[part].copy(), timings, began)

    def undo(self) -> Result:
        """Take back the last call (prompt or initial mask); several levels. Raises EngineError when there is
        nothing to undo."""
        with self._lock:
            began = time.perf_counter()
            if not self._undo:
                raise EngineError("nothing to undo")
            assert self._mask is not None
            step = self._undo.pop()
            restored = _unpack(step.previous, box_size(step.region))
            if step.region != _EMPTY:
                self._mask.write(step.region, restored)
            self._stamps, self._intensity, self._record = step.stamps, step.intensity, step.record
            return _result(step.region, restored, {"encode": 0.0, "predict": 0.0}, began)

    def reset(self) -> None:
        """Forget every prompt and the mask (the image stays)."""
        with self._lock:
            self._ready()
            self._clear()

    # --- state --------------------------------------------------------------------------------------------

    @property
    def mask(self) -> np.ndarray:
        """The whole mask, uint8 (1 = object), indexed [k, j, i] like the image."""
        with self._lock:
            image = self._ready()
            assert self._mask is not None
            return self._mask.read(whole(image.shape)).view(np.uint8).copy()

    def mask_in(self, start: tuple[int, int, int], stop: tuple[int, int, int]) -> np.ndarray:
        """The mask inside the box [start, stop), bool: cheaper than `mask` when the box is small."""
        with self._lock:
            box = check_box(start, stop, self._ready().shape)
            assert self._mask is not None
            return self._mask.read(box).copy()

    @property
    def record(self) -> list[dict[str, Any]]:
        """The prompts that make the current state, oldest first, JSON-serialisable; `replay` rebuilds it."""
        with self._lock:
            return copy.deepcopy(list(self._record))

    @classmethod
    def replay(
        cls,
        model: Model,
        image: np.ndarray,
        record: Sequence[dict[str, Any]],
        *,
        spacing: Sequence[float] | None = None,
        autozoom: bool = True,
        undo_levels: int = 10,
        max_refinement_patches: int | None = None,
    ) -> Session:
        """A session rebuilt from `record` (after eviction or a worker restart): same prompts, same mask,
        given the same model and settings."""
        session = cls(
            model, autozoom=autozoom, undo_levels=undo_levels, max_refinement_patches=max_refinement_patches
        )
        session.set_image(image, spacing)
        for entry in record:
            try:
                session._apply(entry)
            except (KeyError, TypeError, ValueError, zlib.error) as error:
                if isinstance(error, PromptError):
                    raise
                raise PromptError(f"malformed record entry {str(entry)[:200]}: {error!r}") from error
        return session

    def _apply(self, entry: dict[str, Any]) -> None:
        kind = entry.get("type")
        positive = entry.get("positive", True)
        if kind == "point":
            k, j, i = entry["index"]
            self.add_point((k, j, i), positive)
        elif kind == "box":
            k0, j0, i0 = entry["start"]
            k1, j1, i1 = entry["stop"]
            self.add_box((k0, j0, i0), (k1, j1, i1), positive)
        elif kind in ("scribble", "lasso"):
            outline = entry.get("polyline" if kind == "scribble" else "polygon")
            drawn = None
            if outline is None:
                start, values = _decode_mask(entry["mask"])
                drawn = np.zeros([s for d, s in enumerate(self.shape) if d != entry["axis"]], dtype=bool)
                drawn[start[0] : start[0] + values.shape[0], start[1] : start[1] + values.shape[1]] = values
            self._slice_prompt(kind, drawn, entry["axis"], entry["index"], outline, positive)
        elif kind == "initial_mask":
            _, values = _decode_mask(entry["mask"])
            self.set_initial_mask(values)
        else:
            raise PromptError(f"unknown prompt type in the record: {kind!r}")

    def memory_bytes(self) -> int:
        """Bytes this session holds beyond its model: image, mask, prompts, record, undo steps."""
        with self._lock:
            total = 0
            if self._image is not None and self._mask is not None:
                total += self._image.array.nbytes + self._mask.bits.nbytes
            stamps = {id(s): s for step in self._undo for s in step.stamps} | {id(s): s for s in self._stamps}
            total += sum(s.nbytes for s in stamps.values())
            entries = {id(e): e for step in self._undo for e in step.record} | {
                id(e): e for e in self._record
            }
            total += sum(len(e["mask"]["bits"]) for e in entries.values() if "mask" in e)
            total += sum(len(step.previous) for step in self._undo)
            return total


def _result(region: Box, values: np.ndarray, timings: dict[str, float], began: float) -> Result:
    return Result(
        start=(region[0][0], region[1][0], region[2][0]),
        stop=(region[0][1], region[1][1], region[2][1]),
        mask=values,
        timings={**timings, "total": time.perf_counter() - began},
    )


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {list(value.shape)} and dtype {value.dtype}"
    return type(value).__name__
