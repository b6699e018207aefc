"""Serving one index directory: follow its newest manifest, search and look up its vectors.

Results equal one flat index over the same vectors: each segment returns its top-k and
the merge sorts by distance (l2: squared L2 ascending; cosine: similarity descending),
ties by id. For non-Flat factories the result is as approximate as the factory.

A filtered search (`id_filter`) is never short: it returns min(k, allowed live vectors)
hits per query whatever the factory; filtered.py says how (exact over few allowed
vectors, a widened selector search over many).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from mammosearch.index.filtered import filtered_search, segment_bits
from mammosearch.index.manifest import (
    DELTA,
    MANIFEST_NAME,
    SEALED,
    check_compatible,
    index_uid,
    read_manifest,
)
from mammosearch.index.options import IndexOptions
from mammosearch.index.segment_store import SegmentStore
from mammosearch.index.segments import prepare_vectors
from mammosearch.index.threads import search_threads
from mammosearch.index.view import View, as_ids, load_view

log = logging.getLogger(__name__)

_LOAD_ATTEMPTS = 3


class Reader:
    """The view an index serves, kept current with its manifest, and the searches over it."""

    def __init__(self, options: IndexOptions, store: SegmentStore) -> None:
        self.options = options
        self.store = store
        self.view = View()
        self.lock = threading.RLock()
        """Held while a view is replaced: by a reload, and by a write for its whole length."""
        self._manifest_signature: tuple[int, int, int] | None = None

    # ---- following the manifest --------------------------------------------------------

    def reload_if_changed(self, force: bool = False) -> bool:
        """Pick up a newer manifest written by another process; True when the view changed.

        Cheap when nothing changed: one stat() of the manifest. Segments already loaded are
        reused by file name, so a reload reads only the new files. `force` re-reads the
        manifest and reloads segments not loaded even at the same version (after `verify`
        dropped damaged ones).
        """
        with self.lock:
            for attempt in range(_LOAD_ATTEMPTS):
                last = attempt == _LOAD_ATTEMPTS - 1
                signature = self.stat_manifest()
                if signature == self._manifest_signature and not force:
                    return False
                manifest = read_manifest(self.options.manifest_path)
                if manifest is None and self.view.manifest is not None:
                    # Lost (deleted, the directory removed): what is served must say so, not
                    # go on from memory; the count against the database shows what is missing.
                    log.error(
                        "index %s: %s is gone; nothing served", self.options.root, MANIFEST_NAME
                    )
                    self.install(View(), signature)
                    return True
                if manifest is None or (
                    not force
                    and manifest["version"] == self.view.version
                    and index_uid(manifest) == index_uid(self.view.manifest)
                ):
                    self._manifest_signature = signature
                    return False
                options = self.options
                check_compatible(
                    manifest, options.root, options.dim, options.metric, options.identity
                )
                view = self.load(manifest, missing_is_damage=last)
                if view is None:
                    continue  # a writer replaced the manifest and collected a file meanwhile
                if view.damage and not last and self.stat_manifest() != signature:
                    continue  # the manifest changed while loading: judge the new one
                self.install(view, signature)
                return True
            return False

    def load(self, manifest: dict[str, Any], missing_is_damage: bool = True) -> View | None:
        """The view of `manifest` (view.load_view) over this index's segment store."""
        return load_view(manifest, self.store, self.options, missing_is_damage)

    def install(self, view: View, signature: tuple[int, int, int] | None) -> None:
        """Serve `view` from now on; `signature` is the manifest stat it was read at."""
        self.view = view
        self._manifest_signature = signature
        self.store.keep_loaded(view.segments)

    def stat_manifest(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.options.manifest_path)
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    # ---- what the view holds -----------------------------------------------------------

    def contains(self, image_id: int) -> bool:
        live_ids = self.view.live_ids
        position = np.searchsorted(live_ids, image_id)
        return bool(position < len(live_ids) and live_ids[position] == image_id)

    def stored_vector(self, image_id: int) -> np.ndarray | None:
        """The live stored vector of one id (unit-normalised for cosine), or None: a lookup
        in each segment's id map, newest first, without scanning id arrays."""
        view = self.view
        with search_threads(1):
            for segment, deleted in zip(
                reversed(view.segments), reversed(view.deleted), strict=True
            ):
                position = np.searchsorted(deleted, image_id)
                if position < len(deleted) and deleted[position] == image_id:
                    continue
                try:
                    # faiss's stub types reconstruct without a buffer by its torch overload
                    return segment.index.reconstruct(int(image_id))  # type: ignore[return-value]
                except RuntimeError:  # not in this segment's id map
                    continue
        return None

    def get_vectors(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Stored vectors of live `ids`, in that order (unit-normalised for cosine)."""
        wanted = as_ids(ids)
        view = self.view
        rows = np.empty((len(wanted), self.options.dim), dtype=np.float32)
        found = np.zeros(len(wanted), dtype=bool)
        for segment, deleted in zip(view.segments, view.deleted, strict=True):
            held = np.isin(wanted, segment.ids) & ~np.isin(wanted, deleted) & ~found
            for position in np.flatnonzero(held):
                rows[position] = segment.index.reconstruct(int(wanted[position]))
            found |= held
        if not found.all():
            missing = wanted[~found][:10].tolist()
            raise KeyError(f"{self.options.root}: ids not in the index: {missing}")
        return rows

    def stats(self) -> dict[str, Any]:
        """Segments, vectors, tombstones, bytes and version, for metrics and `index verify`."""
        view, options = self.view, self.options
        entries = view.manifest["segments"] if view.manifest else []
        return {
            "root": str(options.root),
            "version": view.version,
            "metric": options.metric,
            "dim": options.dim,
            "factory": options.factory,
            "identity": view.manifest.get("identity") if view.manifest else options.identity,
            "segments": len(entries),
            "sealed_segments": sum(entry["kind"] == SEALED for entry in entries),
            "delta_segments": sum(entry["kind"] == DELTA for entry in entries),
            "vectors": len(view.live_ids),
            "stored_vectors": sum(entry["count"] for entry in entries),
            "tombstones": sum(len(entry["deleted"]) for entry in entries),
            "bytes": sum(entry["bytes"] for entry in entries),
            # per sealed ANN segment: the tuned efSearch / nprobe and its measured recall@10
            "tuned_search": [entry["search"] for entry in entries if entry.get("search")],
            "main": next(
                (
                    {key: entry.get(key) for key in ("factory", "count", "trained_on")}
                    for entry in entries
                    if entry["kind"] == SEALED
                ),
                None,
            ),
        }

    # ---- search ------------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int,
        id_filter: set[int] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest live vectors per query (ShardedIndex.search says how)."""
        if k <= 0:
            raise ValueError(f"k={k}: must be positive")
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.options.dim:
            raise ValueError(f"queries: shape {queries.shape}, expected (n, {self.options.dim})")
        with search_threads(len(queries)):
            return self._search(queries, k, id_filter)

    def _search(
        self, queries: np.ndarray, k: int, id_filter: set[int] | np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        options = self.options
        queries = prepare_vectors(queries, options.metric)
        view = self.view
        found_distances: list[np.ndarray] = []
        found_ids: list[np.ndarray] = []
        if id_filter is not None:
            allowed = np.packbits(_allowed_mask(id_filter, view), bitorder="little")
            for segment, live_bits, tuned in zip(
                view.segments, view.live_bits, view.tuned, strict=True
            ):
                bits = segment_bits(allowed, live_bits)
                if not bits.any():
                    continue
                distances, ids = filtered_search(
                    segment,
                    bits,
                    queries,
                    k,
                    options.metric,
                    **options.knobs(tuned),
                    exact_max_rows=options.exact_filter_rows,
                    bands=tuned.get("filtered", ()),
                )
                found_distances.append(distances)
                found_ids.append(ids)
        else:
            for segment, params in zip(view.segments, view.params, strict=True):
                if len(segment.ids) == 0:
                    continue
                distances, ids = segment.index.search(
                    queries, min(k, len(segment.ids)), params=params
                )
                found_distances.append(distances)
                found_ids.append(ids)
        return merge_top_k(found_distances, found_ids, len(queries), k, options.metric)


def _allowed_mask(id_filter: set[int] | np.ndarray, view: View) -> np.ndarray:
    """id_filter as a boolean array indexed by id, covering every live id."""
    size = int(view.live_ids[-1]) + 1 if len(view.live_ids) else 0
    if isinstance(id_filter, np.ndarray) and id_filter.dtype == bool:
        if id_filter.ndim != 1:
            raise ValueError(f"id_filter: expected a 1-D mask, got shape {id_filter.shape}")
        if len(id_filter) >= size:
            return id_filter
        return np.concatenate([id_filter, np.zeros(size - len(id_filter), dtype=bool)])
    allowed_ids = as_ids(id_filter, "id_filter")
    mask = np.zeros(size, dtype=bool)
    mask[allowed_ids[allowed_ids < size]] = True
    return mask


def merge_top_k(
    distances: list[np.ndarray], ids: list[np.ndarray], n_queries: int, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment top-k lists -> one top-k, as a single flat index would order it."""
    pad_distance = np.float32(np.inf if metric == "l2" else -np.inf)
    if len(ids) == 1 and ids[0].shape[1] == k:  # one segment answered: already in order
        if ids[0][:, -1].min() < 0:  # FAISS pads with -1 at the end
            return np.where(ids[0] < 0, pad_distance, distances[0]), ids[0]
        return distances[0], ids[0]
    out_distances = np.full((n_queries, k), pad_distance, dtype=np.float32)
    out_ids = np.full((n_queries, k), -1, dtype=np.int64)
    if not ids:
        return out_distances, out_ids
    all_distances = np.concatenate(distances, axis=1)
    all_ids = np.concatenate(ids, axis=1)
    valid = all_ids >= 0
    rank_key = np.where(valid, all_distances if metric == "l2" else -all_distances, np.inf)
    tie_key = np.where(valid, all_ids, np.iinfo(np.int64).max)
    order = np.lexsort((tie_key, rank_key), axis=1)[:, :k]
    width = order.shape[1]
    chosen_ids = np.take_along_axis(all_ids, order, axis=1)
    chosen_distances = np.take_along_axis(all_distances, order, axis=1)
    chosen_valid = chosen_ids >= 0
    out_ids[:, :width] = np.where(chosen_valid, chosen_ids, -1)
    out_distances[:, :width] = np.where(chosen_valid, chosen_distances, pad_distance)
    return out_distances, out_ids
