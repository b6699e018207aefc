"""Sharded FAISS store, one per (embedding space, metric): append, search, delete, persist.

`ShardedIndex` (sharded.py) holds the design notes. This module adds where an index lives
(`open_index`) and a per-process cache of readers for the web service (`get_reader`).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from mammosearch.index.manifest import IndexCorruptError
from mammosearch.index.segments import METRICS
from mammosearch.index.sharded import IndexMismatchError, ShardedIndex

if TYPE_CHECKING:
    from mammosearch.config import Settings
    from mammosearch.db.models import EmbeddingSpace

__all__ = [
    "METRICS",
    "IndexCorruptError",
    "IndexMismatchError",
    "ShardedIndex",
    "clear_readers",
    "get_reader",
    "open_index",
]

READER_RELOAD_INTERVAL_S = 1.0

_readers: dict[tuple[str, str, int, str], tuple[ShardedIndex, float]] = {}
_readers_lock = threading.Lock()


def open_index(settings: Settings, space: EmbeddingSpace, metric: str) -> ShardedIndex:
    """The index of `space` under `metric`, at settings.index_dir/space-<id>/<metric>."""
    return ShardedIndex(
        root=settings.index_dir / f"space-{space.id}" / metric,
        dim=space.dim,
        metric=metric,
        segment_size=settings.index_segment_size,
        factory=settings.index_factory,
        identity=space.describe(),
    )


def get_reader(settings: Settings, space: EmbeddingSpace, metric: str) -> ShardedIndex:
    """A process-wide cached index for searching; it reloads a newer manifest at most every ~1 s."""
    root = settings.index_dir / f"space-{space.id}" / metric
    key = (str(root), metric, space.dim, settings.index_factory)
    now = time.monotonic()
    with _readers_lock:
        cached = _readers.get(key)
        if cached is None:
            index = open_index(settings, space, metric)
            _readers[key] = (index, now)
            return index
        index, checked_at = cached
        due = now - checked_at >= READER_RELOAD_INTERVAL_S
        if due:
            _readers[key] = (index, now)
    if due:
        index.reload_if_changed()  # outside the cache lock: loading new segments may take a while
    return index


def clear_readers() -> None:
    """Forget cached readers (tests; after an index directory was replaced)."""
    with _readers_lock:
        _readers.clear()
