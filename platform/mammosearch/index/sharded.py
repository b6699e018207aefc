"""A FAISS store for one (embedding space, metric): append, search, delete, persist.

Layout of `root/`:

    manifest.json        the truth: segments, per-segment tombstones, a rising `version`
    sealed-*.faiss       THE main index: one trained index holding most vectors
    delta-*.faiss        small Flat segments holding the newest appends
    .writer.lock         flock'd exclusively for the duration of every write
    .merge.lock          flock'd while a merge into the main index is built
    quarantine/          damaged segment files, moved aside, never served

Every segment file is immutable and gets a fresh unique name; it is written and fsynced
before the manifest that names it, and the manifest is replaced atomically. A reader
therefore sees either the old or the new set of complete files, never a half-written one.

`ShardedIndex` is the one door; each job has its own module behind it:

    options.py        what the index is opened with (shared, so a caller's tuning reaches all)
    manifest.py       the manifest's format, atomic replace, sha256, compatibility
    segment_store.py  segment files: write, load checked, quarantine, garbage collection
    view.py           one manifest version with its loaded segments, tombstones applied
    reader.py         follow the manifest; search, filters, lookups by id, stats
    writer.py         add, remove, merge, compact, replace_all under the writer lock
    housekeeping.py   verify, drop damage, collect garbage and strays
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from mammosearch.index.housekeeping import Housekeeping
from mammosearch.index.manifest import IndexCorruptError, IndexMismatchError
from mammosearch.index.options import IndexOptions
from mammosearch.index.reader import Reader
from mammosearch.index.segment_store import SegmentStore
from mammosearch.index.segments import FLAT
from mammosearch.index.writer import Writer

# The command line catches these two by this module's name (cli._raise_index_problem).
__all__ = ["IndexCorruptError", "IndexMismatchError", "ShardedIndex"]

T = TypeVar("T")


class _Option(Generic[T]):
    """An attribute of the index kept in its IndexOptions, so every part sees a change."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, index: ShardedIndex | None, owner: type | None = None) -> T:
        if index is None:
            return self  # type: ignore[return-value]
        value: T = getattr(index.options, self.name)
        return value

    def __set__(self, index: ShardedIndex, value: T) -> None:
        setattr(index.options, self.name, value)


class ShardedIndex:
    """Segments + manifest under `root`; one writer at a time, any number of readers."""

    root: _Option[Path] = _Option()
    dim: _Option[int] = _Option()
    metric: _Option[str] = _Option()
    segment_size: _Option[int] = _Option()
    factory: _Option[str] = _Option()
    identity: _Option[dict[str, Any] | None] = _Option()
    nprobe: _Option[int | None] = _Option()
    ef_search: _Option[int | None] = _Option()
    exact_filter_rows: _Option[int | None] = _Option()
    memory_bytes: _Option[int | None] = _Option()

    def __init__(
        self,
        root: Path,
        dim: int,
        metric: str,
        segment_size: int = 50_000,
        factory: str = FLAT,
        identity: dict[str, Any] | None = None,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        exact_filter_rows: int | None = None,
        memory_bytes: int | None = None,
    ) -> None:
        self.options = IndexOptions(
            root,
            dim,
            metric,
            segment_size,
            factory,
            identity,
            nprobe=nprobe,
            ef_search=ef_search,
            exact_filter_rows=exact_filter_rows,
            memory_bytes=memory_bytes,
        )
        store = SegmentStore(self.options.root, dim, metric)
        self._reader = Reader(self.options, store)
        self._writer = Writer(self.options, store, self._reader)
        self._housekeeping = Housekeeping(store, self._reader, self._writer)
        self._reader.reload_if_changed()

    def __repr__(self) -> str:
        return f"ShardedIndex({str(self.root)!r}, {self.dim}, {self.metric!r}, v{self.version})"

    @property
    def manifest_path(self) -> Path:
        return self.options.manifest_path

    # ---- reading -----------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._reader.view.version

    @property
    def ntotal(self) -> int:
        """Live vectors (tombstoned ones excluded)."""
        return len(self._reader.view.live_ids)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def damage(self) -> tuple[str, ...]:
        """Why segments the manifest names are not served (empty when the index is whole)."""
        return self._reader.view.damage

    def ids(self) -> np.ndarray:
        """Live ids, sorted."""
        return self._reader.view.live_ids.copy()

    def __contains__(self, image_id: int) -> bool:
        return self._reader.contains(image_id)

    def reload_if_changed(self, force: bool = False) -> bool:
        """Pick up a newer manifest written by another process; True when the view changed.

        Cheap when nothing changed: one stat() of the manifest. Segments already loaded are
        reused by file name, so a reload reads only the new files. `force` re-reads the
        manifest and reloads segments not loaded even at the same version.
        """
        return self._reader.reload_if_changed(force)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        id_filter: set[int] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest live vectors per query: (distances (n, k), ids (n, k)), -1 pads ids.

        l2 distances are squared L2 (ascending, +inf pads); cosine returns similarities
        (descending, -inf pads). `id_filter` restricts the candidates to those ids: a
        collection of ids, or a boolean array indexed by id (True = allowed); each query
        then gets min(k, allowed live vectors) hits, for every factory.
        """
        return self._reader.search(queries, k, id_filter)

    def stored_vector(self, image_id: int) -> np.ndarray | None:
        """The live stored vector of one id (unit-normalised for cosine), or None."""
        return self._reader.stored_vector(image_id)

    def get_vectors(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Stored vectors of live `ids`, in that order (unit-normalised for cosine)."""
        return self._reader.get_vectors(ids)

    def stats(self) -> dict[str, Any]:
        """Segments, vectors, tombstones, bytes and version, for metrics and `index verify`."""
        return self._reader.stats()

    # ---- writing -----------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Append vectors keyed by id; ids already live are skipped. Returns how many were added."""
        return self._writer.add(ids, vectors)

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Tombstone live ids; search never returns them again. Returns how many were live."""
        return self._writer.remove(ids)

    def merge(self, *, wait: bool = True, rebuild: bool = False) -> bool:
        """Merge every delta into the main index; True when a new main index was committed."""
        return self._writer.merge(wait=wait, rebuild=rebuild)

    def compact(self) -> int:
        """Rebuild the main index without tombstones; returns the tombstones dropped."""
        return self._writer.compact()

    def replace_all(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Make the index hold exactly these vectors, swapped in by one manifest replace."""
        return self._writer.replace_all(ids, vectors)

    # ---- housekeeping ------------------------------------------------------------------

    def verify(self) -> list[str]:
        """Re-check every segment file against the manifest; damage is quarantined and
        dropped. [] when sound."""
        return self._housekeeping.verify()

    def drop_damaged(self) -> bool:
        """Publish a manifest without the segments this view could not serve."""
        return self._housekeeping.drop_damaged()

    def collect_garbage(self, include_retired: bool = False) -> list[str]:
        """Delete files no manifest names; `include_retired` also those the last write retired."""
        return self._housekeeping.collect_garbage(include_retired)

    def stray_files(self) -> list[str]:
        """Files no manifest accounts for (an interrupted write's segments, temp manifests)."""
        return self._housekeeping.stray_files()

    def discard_strays(self) -> list[str]:
        """Delete stray_files(); safe at any time, since it holds the writer lock."""
        return self._housekeeping.discard_strays()
