"""Series → volume: one voxel grid per series for the viewer, the engine and the SEG writer and reader.

Conventions, rules and tolerances: docs/volumes.md. ``geometry`` and ``cache`` do not use Django;
``build_volume`` reads a stored series and caches the result.
"""

from .cache import CacheStats, VolumeCache
from .geometry import (
    DuplicatePositionError,
    EmptySeriesError,
    GantryTiltError,
    MissingGeometryError,
    MissingSliceError,
    MixedFrameOfReferenceError,
    MixedOrientationError,
    MixedPixelSpacingError,
    MixedSizeError,
    NotAnImageError,
    SliceSource,
    UnevenSpacingError,
    UnsupportedPixelDataError,
    Volume,
    VolumeError,
    volume_from_datasets,
)
from .series import build_volume, read_instance, series_fingerprint, volume_cache

__all__ = [
    "CacheStats",
    "DuplicatePositionError",
    "EmptySeriesError",
    "GantryTiltError",
    "MissingGeometryError",
    "MissingSliceError",
    "MixedFrameOfReferenceError",
    "MixedOrientationError",
    "MixedPixelSpacingError",
    "MixedSizeError",
    "NotAnImageError",
    "SliceSource",
    "UnevenSpacingError",
    "UnsupportedPixelDataError",
    "Volume",
    "VolumeCache",
    "VolumeError",
    "build_volume",
    "read_instance",
    "series_fingerprint",
    "volume_cache",
    "volume_from_datasets",
]
