"""Sharded FAISS store, one per (embedding space, metric): append, search, delete, persist.

`ShardedIndex` (sharded.py) is the door, and maps the modules behind it, one per job. This
module adds where an index lives (`open_index`) and a per-process cache of readers for the
web service (`get_reader`).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from mammosearch.index.manifest import IndexCorruptError, IndexMismatchError
from mammosearch.index.segments import METRICS
from mammosearch.index.sharded import ShardedIndex
from mammosearch.index.writer_lock import IndexBusy, space_writer_lock

if TYPE_CHECKING:
    from mammosearch.config import Settings
    from mammosearch.db.models import EmbeddingSpace

__all__ = [
    "METRICS",
    "IndexBusy",
    "IndexCorruptError",
    "IndexMismatchError",
    "ShardedIndex",
    "clear_readers",
    "get_reader",
    "open_index",
    "space_writer_lock",
]

READER_RELOAD_INTERVAL_S = 1.0

_indexes: dict[tuple[str, str, str, int, str, int], ShardedIndex] = {}
_last_reload: dict[tuple[str, str, str, int, str, int], float] = {}
_indexes_lock = threading.Lock()


def _cached(
    settings: Settings, space: EmbeddingSpace, metric: str, role: str
) -> tuple[tuple[str, str, str, int, str, int], ShardedIndex]:
    """One ShardedIndex per role (writer / reader) and index directory per process.

    Opening maps every segment file (read-only mmap; read whole where FAISS cannot map it);
    caching means each process opens a segment once and afterwards only the files a newer
    manifest adds. Writes reload under the writer lock,
    so a cached instance is as safe to write through as a fresh one. Readers get their own
    instance so that searches keep a stable view between their throttled reloads.
    """
    root = settings.layout.index_root(space.id, metric)
    key = (role, str(root), metric, space.dim, settings.index_factory, settings.index_segment_size)
    with _indexes_lock:
        index = _indexes.get(key)
        if index is None:
            index = ShardedIndex(
                root=root,
                dim=space.dim,
                metric=metric,
                segment_size=settings.index_segment_size,
                factory=settings.index_factory,
                identity=space.describe(),
            )
            _indexes[key] = index
            _last_reload[key] = time.monotonic()
    return key, index


def open_index(settings: Settings, space: EmbeddingSpace, metric: str) -> ShardedIndex:
    """The index of `space` under `metric`, at settings.index_dir/space-<id>/<metric>,
    brought up to its newest manifest (for writers, verify and maintenance)."""
    key, index = _cached(settings, space, metric, "writer")
    index.reload_if_changed()
    _last_reload[key] = time.monotonic()
    return index


def get_reader(settings: Settings, space: EmbeddingSpace, metric: str) -> ShardedIndex:
    """The same cached index for searching; it re-checks the manifest at most every ~1 s."""
    key, index = _cached(settings, space, metric, "reader")
    now = time.monotonic()
    if now - _last_reload.get(key, 0.0) >= READER_RELOAD_INTERVAL_S:
        _last_reload[key] = now
        index.reload_if_changed()
    return index


def clear_readers() -> None:
    """Forget cached readers (tests; after an index directory was replaced)."""
    with _indexes_lock:
        _indexes.clear()
        _last_reload.clear()
