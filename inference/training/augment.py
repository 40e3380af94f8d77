"""Seeded augmentation of a training patch, without resampling to a fixed spacing.

The network sees images on their native grids (DESIGN.md), so spacing varies; per-axis scaling and axis
transposition widen the range of voxel shapes and orientations it learns on, instead of hiding them.
Geometric operations act identically on image and mask; intensity operations never touch the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class AugmentConfig:
    scale_probability: float = 0.3
    scale_range: tuple[float, float] = (0.7, 1.4)  # zoom factor per axis
    transpose_probability: float = 0.5
    invert_probability: float = 0.1
    noise_probability: float = 0.2
    noise_std: tuple[float, float] = (0.0, 0.1)  # in units of the patch's standard deviation
    contrast_probability: float = 0.3
    contrast_range: tuple[float, float] = (0.75, 1.25)
    brightness_range: tuple[float, float] = (-0.1, 0.1)  # in units of the patch's standard deviation


def fit_to_shape(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Centre-crop or zero-pad ``array`` to ``shape``."""
    out = np.zeros(shape, dtype=array.dtype)
    source, target = [], []
    for n, size in zip(array.shape, shape, strict=True):
        if n >= size:
            start = (n - size) // 2
            source.append(slice(start, start + size))
            target.append(slice(0, size))
        else:
            start = (size - n) // 2
            source.append(slice(0, n))
            target.append(slice(start, start + n))
    out[tuple(target)] = array[tuple(source)]
    return out


def scale(image: np.ndarray, mask: np.ndarray, factors: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Zoom by ``factors`` per axis (image linear, mask nearest), then back to the original shape."""
    shape = image.shape
    # grid_mode makes both zooms map voxel areas the same way, so image and mask stay aligned.
    zoomed_image = ndimage.zoom(image, factors, order=1, mode="grid-constant", grid_mode=True)
    zoomed_mask = ndimage.zoom(mask, factors, order=0, mode="grid-constant", grid_mode=True)
    return fit_to_shape(zoomed_image, shape), fit_to_shape(zoomed_mask, shape)


def transpose(
    image: np.ndarray, mask: np.ndarray, axes: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The same permutation of the axes for image and mask (patches of unequal sides change shape)."""
    return np.ascontiguousarray(image.transpose(axes)), np.ascontiguousarray(mask.transpose(axes))


def augment(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Augmented copies of a patch (float32) and its mask (uint8). The same generator state gives the same
    result; every draw comes from ``rng`` in a fixed order."""
    config = config or AugmentConfig()
    if image.shape != mask.shape or image.ndim != 3:
        raise ValueError(f"image and mask must be 3D of one shape, got {image.shape} and {mask.shape}")
    image = image.astype(np.float32, copy=True)
    mask = mask.astype(np.uint8, copy=True)

    if rng.random() < config.scale_probability:
        factors = tuple(float(f) for f in rng.uniform(*config.scale_range, size=3))
        image, mask = scale(image, mask, factors)
    if rng.random() < config.transpose_probability:
        permutation = rng.permutation(3)
        image, mask = transpose(image, mask, (int(permutation[0]), int(permutation[1]), int(permutation[2])))

    # Intensity: relative to the patch's own statistics, so raw and z-scored patches behave alike.
    mean, std = float(image.mean()), float(image.std()) or 1.0
    if rng.random() < config.invert_probability:
        image = 2 * mean - image
    if rng.random() < config.contrast_probability:
        contrast = float(rng.uniform(*config.contrast_range))
        brightness = float(rng.uniform(*config.brightness_range))
        image = (image - mean) * contrast + mean + brightness * std
    if rng.random() < config.noise_probability:
        sigma = float(rng.uniform(*config.noise_std)) * std
        image = image + rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    return image.astype(np.float32, copy=False), mask
