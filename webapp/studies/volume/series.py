"""The volume of a stored series, built from its files and cached."""

from __future__ import annotations

import hashlib

import pydicom
from django.conf import settings
from django.core.files.storage import default_storage
from pydicom.errors import InvalidDicomError

from ..models import Instance, Series
from .cache import VolumeCache
from .geometry import EmptySeriesError, UnsupportedPixelDataError, Volume, volume_from_datasets


def _cache_limit() -> int:
    return int(settings.ANNOVOX_VOLUME_CACHE_BYTES)


volume_cache = VolumeCache(_cache_limit)


def series_fingerprint(series: Series) -> str:
    """A digest of the series' instances and their content: it changes when an instance is added,
    removed or replaced, which is what invalidates a cached volume."""
    digest = hashlib.sha256()
    for sop_instance_uid, sha256 in series.instances.order_by("sop_instance_uid").values_list(
        "sop_instance_uid", "sha256"
    ):
        digest.update(f"{sop_instance_uid}:{sha256}\n".encode())
    return digest.hexdigest()


def read_instance(instance: Instance, *, header_only: bool = False) -> pydicom.Dataset:
    """The stored file of an instance as a data set; ``header_only``: without pixel data."""
    try:
        with default_storage.open(instance.file, "rb") as file:
            return pydicom.dcmread(file, stop_before_pixels=header_only)
    except (OSError, InvalidDicomError) as exc:
        raise UnsupportedPixelDataError(
            f"{instance.sop_instance_uid}: the stored file cannot be read: {exc}"
        ) from exc


def _build(series: Series) -> Volume:
    instances = list(series.instances.order_by("pk"))
    if not instances:
        raise EmptySeriesError(f"series {series.series_instance_uid} has no instances")
    return volume_from_datasets([read_instance(instance) for instance in instances])


def build_volume(series: Series) -> Volume:
    """The voxel grid of a stored series (see :class:`Volume` for the conventions), from the cache when
    its instances have not changed. Raises a ``VolumeError`` subclass for a series that makes no grid."""
    key = (series.series_instance_uid, series_fingerprint(series))
    return volume_cache.get_or_build(key, lambda: _build(series))
