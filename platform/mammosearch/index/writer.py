"""Changing an index: append, remove, merge, compact, replace, one new manifest per change.

Every change runs under the writer lock (a thread lock in-process, an flock of
`.writer.lock` across processes), starts from the newest manifest, writes new segment files
first and publishes them with one atomic manifest replace (`commit`).

Appends are O(batch): each `add` writes ONE new delta file instead of rewriting a live
segment. To keep the number of deltas small the new batch absorbs the previous delta
whenever that one holds at most twice as many vectors (a binary-counter merge). When the
deltas together reach `segment_size`, they are merged into the one main index (`merge`):
extended in place with the quantizer it was trained with, or built whole when there is
none yet, when the archive outgrew what it was trained on (factory_choice.RETRAIN_GROWTH),
when "auto" calls for another kind of index at the new size, or when tombstones pile up.
The merge is built from a snapshot without the writer lock (under `.merge.lock`, one merge
at a time), so appends and searches go on, and committed under it; whatever was removed or
re-added meanwhile is tombstoned in the new main index. So a query pays one trained index
plus a few small exact deltas, not one index per 50,000 vectors, and IVF trains one coarse
quantizer per space, not per segment. Deltas are always "Flat" (exact, no training); a main
index too small to train is stored Flat (the manifest records the factory used and how
many vectors it was trained on).

`compact` rebuilds the main index from all live vectors without tombstones; it
reconstructs them from the segments (exact for Flat, HNSW*, IVF*,Flat, *,RFlat; lossy for
PQ/SQ codecs, whose indexes should be rebuilt from the database instead) and holds them in
memory once.
"""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from mammosearch.durable.faults import fault_point
from mammosearch.index.factory_choice import needs_rebuild
from mammosearch.index.main_build import BuiltMain, build_whole, extend
from mammosearch.index.manifest import DELTA, SEALED, fsync_dir, next_manifest, write_manifest
from mammosearch.index.options import IndexOptions
from mammosearch.index.reader import Reader
from mammosearch.index.segment_store import SegmentStore
from mammosearch.index.segments import Segment, build_flat, prepare_vectors
from mammosearch.index.view import View, as_ids

log = logging.getLogger(__name__)

WRITER_LOCK_NAME = ".writer.lock"
MERGE_LOCK_NAME = ".merge.lock"
TOMBSTONE_REBUILD_SHARE = 0.2
"""A main index whose tombstones reach this share of its vectors is rebuilt, not extended."""


class Writer:
    """The one writer of an index directory at a time; publishes through the reader's view."""

    def __init__(self, options: IndexOptions, store: SegmentStore, reader: Reader) -> None:
        self.options = options
        self.store = store
        self.reader = reader
        self._merge_lock = threading.Lock()

    # ---- changes -----------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Append vectors keyed by id; ids already live are skipped. Returns how many were added.

        The vectors land in a Flat delta at once (searchable on the next reload); when the
        deltas hold `segment_size` vectors they are merged into the main index, after the
        writer lock is released (`merge`), so other writers wait only for the delta.
        """
        dim = self.options.dim
        new_ids = as_ids(ids)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(new_ids), dim):
            raise ValueError(
                f"vectors: shape {vectors.shape}, expected ({len(new_ids)}, {dim})"
                f" for {len(new_ids)} ids"
            )
        new_ids, vectors = _finite_and_unique(new_ids, vectors)
        if len(new_ids) == 0:
            return 0
        with self.writing():
            view = self.reader.view
            fresh = ~np.isin(new_ids, view.live_ids)
            if not fresh.any():
                return 0
            new_ids = new_ids[fresh]
            prepared = prepare_vectors(vectors[fresh], self.options.metric)
            self._append(view, new_ids, prepared)
        if self.reader.view.delta_live() >= self.options.segment_size:
            self.merge(wait=False)
        return len(new_ids)

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Tombstone live ids; search never returns them again. Returns how many were live."""
        doomed = np.unique(as_ids(ids))
        if len(doomed) == 0:
            return 0
        with self.writing():
            view = self.reader.view
            entries = view.entries()
            removed = 0
            for entry, segment, deleted in zip(entries, view.segments, view.deleted, strict=True):
                hit = segment.ids[np.isin(segment.ids, doomed) & ~np.isin(segment.ids, deleted)]
                if len(hit):
                    entry["deleted"] = sorted(entry["deleted"] + hit.tolist())
                    removed += len(hit)
            if removed:
                self.commit(view, entries, new_segments=[], retired=[])
            return removed

    def merge(self, *, wait: bool = True, rebuild: bool = False) -> bool:
        """Merge every delta into the main index; True when a new main index was committed.

        The main index is extended in place (its trained quantizer kept) or, when it is
        missing, of another family than the size now calls for, outgrown its training, or
        holds many tombstones (or `rebuild`), built whole from the live vectors. The work
        runs on a snapshot without the writer lock, so appends and searches go on; the
        result is committed under the lock, with tombstones for whatever changed meanwhile.
        One merge at a time per index: with `wait=False` a merge already running elsewhere
        makes this return False at once.
        """
        with self._merging(wait) as acquired:
            if not acquired:
                return False
            self.reader.reload_if_changed()
            snapshot = self.reader.view
            main_position = snapshot.main_position()
            deltas = [i for i in range(len(snapshot.segments)) if i != main_position]
            if not deltas and (not rebuild or main_position is None):
                return False
            built = self._build_main(snapshot, main_position, deltas, rebuild)
            with self.writing():
                return self._commit_main(snapshot, main_position, deltas, built)

    def compact(self) -> int:
        """Rebuild the main index from the live vectors of every segment, without tombstones;
        returns the tombstones dropped."""
        self.reader.reload_if_changed()
        dropped = sum(len(deleted) for deleted in self.reader.view.deleted)
        self.merge(wait=True, rebuild=True)
        return dropped

    def replace_all(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Make the index hold exactly these vectors, swapped in by one manifest replace.

        The rebuild path: new segments are written beside the live ones, then one atomic
        manifest replace publishes them and retires every old segment (collected by the
        next write, as usual). Killed at any moment, the index is the old one or the new
        one, whole; leftovers of an interrupted replace are removed when the next starts.
        Returns how many vectors the index now holds.
        """
        new_ids = as_ids(ids)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(new_ids), self.options.dim)
        new_ids, vectors = _finite_and_unique(new_ids, vectors)
        prepared = prepare_vectors(vectors, self.options.metric)
        built = self._build_whole(new_ids, prepared) if len(new_ids) else None
        with self.writing():
            view = self.reader.view
            self.store.discard_strays(view.manifest)
            entries, new_segments = [], []
            if built is not None:
                entry, segment = self._write_main(view.version + 1, built)
                entries, new_segments = [entry], [segment]
            fault_point("index-replace:segments-written")
            retired = [segment.file for segment in view.segments]
            self.commit(view, entries, new_segments, retired)
            return len(new_ids)

    # ---- locks and publishing ----------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Exclusive writer: a thread lock in-process, an flock across processes; the view
        is brought up to the newest manifest once the lock is held."""
        root = self.options.root
        with self.reader.lock:
            root.mkdir(parents=True, exist_ok=True)
            with open(root / WRITER_LOCK_NAME, "a+b") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                try:
                    self.reader.reload_if_changed()
                    yield
                finally:
                    fcntl.flock(lock_file, fcntl.LOCK_UN)

    def commit(
        self,
        view: View,
        entries: list[dict[str, Any]],
        new_segments: list[Segment],
        retired: list[str],
    ) -> None:
        """Make new segment files durable, then publish them with the next manifest (under
        the writer lock); the reader serves it at once, and unreferenced files go."""
        options = self.options
        if new_segments:
            fsync_dir(options.root)
        manifest = next_manifest(
            view.manifest,
            dim=options.dim,
            metric=options.metric,
            factory=options.factory,
            segment_size=options.segment_size,
            identity=options.identity,
            segments=entries,
            retired=retired,
        )
        write_manifest(options.manifest_path, manifest)
        self.store.remember(new_segments)
        published = self.reader.load(manifest)
        assert published is not None  # missing files are damage here
        self.reader.install(published, self.reader.stat_manifest())
        self.store.collect_garbage(manifest, include_retired=False)

    @contextmanager
    def _merging(self, wait: bool) -> Iterator[bool]:
        """One merge per index across threads and processes; yields whether it was acquired."""
        if not self._merge_lock.acquire(blocking=wait):
            yield False
            return
        try:
            root = self.options.root
            root.mkdir(parents=True, exist_ok=True)
            with open(root / MERGE_LOCK_NAME, "a+b") as lock_file:
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
                try:
                    yield True
                finally:
                    fcntl.flock(lock_file, fcntl.LOCK_UN)
        finally:
            self._merge_lock.release()

    # ---- building segments -------------------------------------------------------------

    def _append(self, view: View, new_ids: np.ndarray, prepared: np.ndarray) -> None:
        """A new delta holding the batch, absorbing the newest deltas while each is at most
        twice the tail (a binary-counter merge, so deltas stay few and appends O(batch))."""
        entries = view.entries()
        delta_positions = [i for i, entry in enumerate(entries) if entry["kind"] == DELTA]
        absorbed: list[int] = []
        tail_count = len(new_ids)
        for position in reversed(delta_positions):
            live = entries[position]["count"] - len(entries[position]["deleted"])
            if live > 2 * tail_count:
                break
            absorbed.insert(0, position)
            tail_count += live
        old_ids, old_vectors = view.live_vectors_in(absorbed, self.options.dim)
        ids = np.concatenate([old_ids, new_ids])
        vectors = np.concatenate([old_vectors, prepared])
        absorbed_set = set(absorbed)
        kept = [entry for i, entry in enumerate(entries) if i not in absorbed_set]
        entry, segment = self.store.write(
            view.version + 1, DELTA, ids, build_flat(ids, vectors, self.options.metric)
        )
        retired = [view.segments[i].file for i in absorbed]
        self.commit(view, kept + [entry], [segment], retired)

    def _build_whole(self, ids: np.ndarray, prepared: np.ndarray) -> BuiltMain:
        return build_whole(
            ids, prepared, self.options.metric, self.options.wanted_factory(len(ids))
        )

    def _build_main(
        self, snapshot: View, main_position: int | None, deltas: list[int], rebuild: bool
    ) -> BuiltMain:
        """The merged main index of a snapshot, extended or built whole (see `merge`)."""
        dim = self.options.dim
        new_ids, new_vectors = snapshot.live_vectors_in(deltas, dim)
        if main_position is not None and not rebuild:
            main = snapshot.segments[main_position]
            entry = snapshot.manifest["segments"][main_position]  # type: ignore[index]
            trained_on = entry.get("trained_on", entry["count"])
            count = len(main.ids) - len(snapshot.deleted[main_position]) + len(new_ids)
            rebuild = (
                needs_rebuild(self.options.wanted_factory(count), main.factory, count, trained_on)
                or len(snapshot.deleted[main_position]) > TOMBSTONE_REBUILD_SHARE * len(main.ids)
                # a re-added id would sit twice in one index under one id
                or bool(np.isin(new_ids, main.ids).any())
            )
            if not rebuild:
                return extend(
                    self.options.root / main.file,
                    main.factory,
                    trained_on,
                    new_ids,
                    new_vectors,
                    self.options.metric,
                )
        positions = ([] if main_position is None else [main_position]) + deltas
        ids, vectors = snapshot.live_vectors_in(positions, dim)
        return self._build_whole(ids, vectors)

    def _commit_main(
        self, snapshot: View, main_position: int | None, deltas: list[int], built: BuiltMain
    ) -> bool:
        """Publish a main index built from `snapshot` (under the writer lock).

        The segments it merged are retired where they are still current; any id of it that
        is not live in one of those now (removed, or re-added elsewhere, meanwhile) is
        tombstoned in it. A main index replaced meanwhile (replace_all) voids the merge.
        """
        view = self.reader.view
        current = {segment.file: position for position, segment in enumerate(view.segments)}
        merged = [snapshot.segments[i].file for i in deltas]
        if main_position is not None:
            main_file = snapshot.segments[main_position].file
            if main_file not in current:
                log.warning(
                    "index %s: main index replaced during a merge; merge dropped",
                    self.options.root,
                )
                return False
            merged.append(main_file)
        retired_positions = [current[file] for file in merged if file in current]
        covered_ids = view.live_ids_in(retired_positions)
        entry, segment = self._write_main(view.version + 1, built)
        entry["deleted"] = np.sort(built.ids[~np.isin(built.ids, covered_ids)]).tolist()
        entries = view.entries()
        kept = [entry for i, entry in enumerate(entries) if i not in set(retired_positions)]
        retired = [view.segments[i].file for i in retired_positions]
        self.commit(view, [entry, *kept], [segment], retired)
        return True

    def _write_main(self, version: int, built: BuiltMain) -> tuple[dict[str, Any], Segment]:
        entry, segment = self.store.write(version, SEALED, built.ids, built.index, built.factory)
        entry["trained_on"] = built.trained_on
        if built.tuned is not None:
            entry["search"] = built.tuned  # the efSearch / nprobe that keeps the recall floor
        return entry, segment


def _finite_and_unique(ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reject NaN or infinite vectors; keep each id's first vector, in the caller's order."""
    if not np.isfinite(vectors).all():
        bad = ids[~np.isfinite(vectors).all(axis=1)][:10].tolist()
        raise ValueError(f"vectors for ids {bad}: contain NaN or infinity")
    _, first_positions = np.unique(ids, return_index=True)
    first_positions.sort()
    return ids[first_positions], vectors[first_positions]
