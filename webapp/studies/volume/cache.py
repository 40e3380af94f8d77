"""A thread-safe LRU of built volumes, bounded in bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .geometry import Volume

# (Series Instance UID, fingerprint of the series' instances)
CacheKey = tuple[str, str]


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    entries: int
    bytes: int


class VolumeCache:
    """Least recently used volumes, at most ``max_bytes()`` of voxel data in all.

    ``max_bytes`` is a callable so that a changed setting takes effect at the next insertion. A volume
    larger than the whole budget is returned but not kept. Concurrent requests for one key build it once.
    """

    def __init__(self, max_bytes: Callable[[], int]) -> None:
        self._max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, Volume] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._building: dict[CacheKey, threading.Lock] = {}
        self._hits = 0
        self._misses = 0

    def get(self, key: CacheKey) -> Volume | None:
        with self._lock:
            volume = self._entries.get(key)
            if volume is not None:
                self._entries.move_to_end(key)
                self._hits += 1
            return volume

    def get_or_build(self, key: CacheKey, build: Callable[[], Volume]) -> Volume:
        volume = self.get(key)
        if volume is not None:
            return volume
        with self._lock:
            key_lock = self._building.setdefault(key, threading.Lock())
        try:
            with key_lock:
                # Another thread may have built it while this one waited.
                volume = self.get(key)
                if volume is not None:
                    return volume
                with self._lock:
                    self._misses += 1
                volume = build()
                self.put(key, volume)
                return volume
        finally:
            # Waiters still hold this lock object; once the volume is cached they find it there.
            with self._lock:
                if self._building.get(key) is key_lock:
                    del self._building[key]

    def put(self, key: CacheKey, volume: Volume) -> None:
        limit = int(self._max_bytes())
        with self._lock:
            self._pop(key)
            # An older fingerprint of the same series is stale: its instances have changed.
            for stale in [other for other in self._entries if other[0] == key[0]]:
                self._pop(stale)
            if volume.nbytes > limit:
                return
            self._entries[key] = volume
            self._bytes += volume.nbytes
            while self._bytes > limit:
                oldest = next(iter(self._entries))
                self._pop(oldest)

    def _pop(self, key: CacheKey) -> None:
        volume = self._entries.pop(key, None)
        if volume is not None:
            self._bytes -= volume.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._hits = self._misses = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._entries), self._bytes)
