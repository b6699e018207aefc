"""A FAISS store for one (embedding space, metric): append, search, delete, persist.

Layout of `root/`:

    manifest.json        the truth: segments, per-segment tombstones, a rising `version`
    sealed-*.faiss       THE main index: one trained index holding most vectors
    delta-*.faiss        small Flat segments holding the newest appends
    .writer.lock         flock'd exclusively for the duration of every write
    .merge.lock          flock'd while a merge into the main index is built

Every segment file is immutable and gets a fresh unique name; it is written and fsynced
before the manifest that names it, and the manifest is replaced atomically. A reader
therefore sees either the old or the new set of complete files, never a half-written one.

Appends are O(batch): each `add` writes ONE new delta file instead of rewriting a live
segment. To keep the number of deltas small the new batch absorbs the previous delta
whenever that one holds at most twice as many vectors (a binary-counter merge). When the
deltas together reach `segment_size`, they are merged into the one main index (`merge`):
extended in place with the quantizer it was trained with, or built whole when there is
none yet, when the archive outgrew what it was trained on (factory_choice.RETRAIN_GROWTH),
when "auto" calls for another kind of index at the new size, or when tombstones pile up.
The merge is built from a snapshot without the writer lock, so appends and searches go on,
and committed under it; whatever was removed or re-added meanwhile is tombstoned in the new
main index. So a query pays one trained index plus a few small exact deltas, not one
index per 50,000 vectors, and IVF trains one coarse quantizer per space, not per segment.
Deltas are always "Flat" (exact, no training); a main index too small to train is stored
Flat (the manifest records the factory used and how many vectors it was trained on).

Deletion is by tombstone: `remove` lists the id under the segment that holds it, so a
later re-add of the same id (into a newer delta) supersedes the old copy. `compact`
rebuilds the main index from all live vectors without tombstones; it reconstructs them
from the segments (exact for Flat, HNSW*, IVF*,Flat, *,RFlat; lossy for PQ/SQ codecs,
whose indexes should be rebuilt from the database instead) and holds them in memory once.

Files no manifest names are garbage collected after the next successful write: crash
leftovers at once, files just retired by this write only on the write after (so a reader
that read the previous manifest a moment ago can still open them).

Results equal one flat index over the same vectors: each segment returns its top-k and
the merge sorts by distance (l2: squared L2 ascending; cosine: similarity descending),
ties by id. For non-Flat factories the result is as approximate as the factory.

A filtered search (`id_filter`) is never short: it returns min(k, allowed live vectors)
hits per query whatever the factory; filtered.py says how (exact over few allowed
vectors, a widened selector search over many).

Sealed segments are memory-mapped read-only where FAISS allows (segments.py), so a
process's readers cost little memory beyond the page cache they share.

Nothing read back from disk is trusted without its checksum: a segment is re-hashed against
the manifest's sha256 before it is loaded (and by `verify`). One that is missing, differs,
or that FAISS cannot read is quarantined (moved to `quarantine/`, never served) and listed
in `damage`; the view holds the sound segments only, and the next write publishes a
manifest without the damaged ones. Their vectors come back from the database, the truth
(pipeline.verify_index); until then the index holds fewer vectors than the database lists,
which search refuses to pass off as an answer (mammosearch.pipeline.index_health).
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from mammosearch.durable.faults import fault_point
from mammosearch.index.factory_choice import AUTO, choose_factory, needs_rebuild
from mammosearch.index.filtered import filtered_search, segment_bits
from mammosearch.index.main_build import BuiltMain, build_whole, extend
from mammosearch.index.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    TEMP_SUFFIX,
    IndexCorruptError,
    fsync_dir,
    read_manifest,
    sha256_of,
    write_manifest,
)
from mammosearch.index.segments import (
    FLAT,
    METRICS,
    Segment,
    build_flat,
    faiss_metric,
    load_segment,
    prepare_vectors,
    search_parameters,
    write_segment_file,
)
from mammosearch.index.threads import search_threads

log = logging.getLogger(__name__)

WRITER_LOCK_NAME = ".writer.lock"
MERGE_LOCK_NAME = ".merge.lock"
DEFAULT_NPROBE, DEFAULT_EF_SEARCH = 16, 64
"""For an ANN segment without tuned values (written before tuning existed)."""
TOMBSTONE_REBUILD_SHARE = 0.2
"""A main index whose tombstones reach this share of its vectors is rebuilt, not extended."""
SEGMENT_SUFFIX = ".faiss"
IDENTITY_KEYS = ("backbone", "weights_sha256", "pretrained", "preprocessing_version", "dim")
"""The parts of an embedding space's describe() that make two vectors comparable."""

SEALED, DELTA = "sealed", "delta"
QUARANTINE_DIR = "quarantine"
_LOAD_ATTEMPTS = 3


class IndexMismatchError(ValueError):
    """An existing index was built for another dim, metric or embedding space."""


class SegmentDamaged(IndexCorruptError):
    """A segment named by the manifest is missing, differs from its sha256 or cannot be read."""


@dataclass(frozen=True)
class _View:
    """An immutable snapshot of one manifest version and its loaded segments."""

    version: int = 0
    manifest: dict[str, Any] | None = None
    segments: tuple[Segment, ...] = ()
    deleted: tuple[np.ndarray, ...] = ()  # tombstoned ids per segment, sorted
    # per segment: a selector rejecting its tombstones (None when it has none), with the
    # selectors it points to, kept alive because SWIG selectors hold raw pointers
    exclusions: tuple[tuple[Any, ...] | None, ...] = ()
    # per segment: a boolean per row, False where tombstoned (None when it has no tombstones)
    live_rows: tuple[np.ndarray | None, ...] = ()
    # per segment: its live ids as a packed bitmap by id (what filtered search intersects)
    live_bits: tuple[np.ndarray, ...] = ()
    live_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    # per segment: the search parameters tuned when it was sealed (index/tuning.py)
    tuned: tuple[dict[str, Any], ...] = ()
    # per segment: the parameters of an unfiltered search, built once per view
    params: tuple[Any, ...] = ()
    # segments the manifest names that are not served (missing, damaged: quarantined)
    damage: tuple[str, ...] = ()


def _as_ids(ids: Iterable[int] | np.ndarray, name: str = "ids") -> np.ndarray:
    if isinstance(ids, set | frozenset):
        ids = list(ids)
    array = np.asarray(ids)
    if array.size == 0:
        return np.empty(0, dtype=np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name}: expected 1-D integers, got {array.dtype} {array.shape}")
    if (array < 0).any():
        raise ValueError(f"{name}: negative ids are not allowed (-1 pads search results)")
    return array.astype(np.int64, copy=False)


def _without(bits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """A packed bitmap by id (little bit order) with these ids cleared (a copy if any)."""
    ids = ids[ids < len(bits) * 8]
    if len(ids) == 0:
        return bits
    cleared = bits.copy()
    np.bitwise_and.at(cleared, ids >> 3, ~(np.uint8(1) << (ids & 7).astype(np.uint8)))
    return cleared


def _file_problem(
    path: Path, entry: dict[str, Any], hashed: dict[str, tuple[int, int, int]]
) -> str | None:
    """What is wrong with a segment file against its manifest entry: "missing", a size or
    sha256 mismatch, or None when it is what the manifest says.

    `hashed` remembers each file's (inode, size, mtime) when its sha256 last matched: a file
    not touched since is not hashed again (the sweep verifies every 30 s; a 5 GB main index
    would be read whole each time). A new process hashes every file once.
    """
    try:
        stat = path.stat()
        if stat.st_size != entry["bytes"]:
            return f"{stat.st_size} bytes, manifest says {entry['bytes']}"
        identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if entry.get("sha256") and hashed.get(entry["file"]) != identity:
            if sha256_of(path) != entry["sha256"]:
                return "sha256 differs from the manifest"
            hashed[entry["file"]] = identity
    except FileNotFoundError:
        return "missing"
    except OSError as error:  # unreadable: as good as damaged
        return f"cannot be read ({error.strerror or error})"
    return None


def _index_uid(manifest: dict[str, Any] | None) -> str | None:
    """Names one index's history, so a directory swapped for a rebuilt index is noticed
    even when the new manifest happens to carry the same version number."""
    return manifest.get("index_uid") if manifest else None


class ShardedIndex:
    """Segments + manifest under `root`; one writer at a time, any number of readers."""

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
        if metric not in METRICS:
            raise ValueError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
        if dim <= 0 or segment_size <= 0:
            raise ValueError(f"dim={dim}, segment_size={segment_size}: both must be positive")
        if identity is not None and identity.get("dim") not in (None, dim):
            raise ValueError(f"identity dim {identity['dim']} differs from dim={dim}")
        if factory != AUTO:
            try:
                faiss.index_factory(dim, factory, faiss_metric(metric))
            except RuntimeError as error:
                raise ValueError(
                    f"index factory {factory!r}: FAISS cannot build it: {error}"
                ) from None
        self.root = Path(root)
        self.dim = dim
        self.metric = metric
        self.segment_size = segment_size
        self.factory = factory
        self.identity = dict(identity) if identity is not None else None
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.exact_filter_rows = exact_filter_rows
        self.memory_bytes = memory_bytes
        self.manifest_path = self.root / MANIFEST_NAME
        self._view = _View()
        self._manifest_signature: tuple[int, int, int] | None = None
        self._segment_cache: dict[str, Segment] = {}
        self._hashed: dict[str, tuple[int, int, int]] = {}  # see _file_problem
        self._lock = threading.RLock()
        self._merge_lock = threading.Lock()
        self.reload_if_changed()

    def __repr__(self) -> str:
        return f"ShardedIndex({str(self.root)!r}, {self.dim}, {self.metric!r}, v{self.version})"

    # ---- reading -----------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._view.version

    @property
    def ntotal(self) -> int:
        """Live vectors (tombstoned ones excluded)."""
        return len(self._view.live_ids)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def damage(self) -> tuple[str, ...]:
        """Why segments the manifest names are not served (empty when the index is whole)."""
        return self._view.damage

    def ids(self) -> np.ndarray:
        """Live ids, sorted."""
        return self._view.live_ids.copy()

    def __contains__(self, image_id: int) -> bool:
        live_ids = self._view.live_ids
        position = np.searchsorted(live_ids, image_id)
        return bool(position < len(live_ids) and live_ids[position] == image_id)

    def reload_if_changed(self, force: bool = False) -> bool:
        """Pick up a newer manifest written by another process; True when the view changed.

        Cheap when nothing changed: one stat() of the manifest. Segments already loaded are
        reused by file name, so a reload reads only the new files. `force` re-reads the
        manifest and reloads segments not in the cache even at the same version (after
        `verify` dropped damaged ones from it).
        """
        with self._lock:
            for attempt in range(_LOAD_ATTEMPTS):
                last = attempt == _LOAD_ATTEMPTS - 1
                signature = self._stat_manifest()
                if signature == self._manifest_signature and not force:
                    return False
                manifest = read_manifest(self.manifest_path)
                if manifest is None and self._view.manifest is not None:
                    # Lost (deleted, the directory removed): what is served must say so, not
                    # go on from memory; the count against the database shows what is missing.
                    log.error("index %s: %s is gone; nothing served", self.root, MANIFEST_NAME)
                    self._install(_View(), signature)
                    return True
                if manifest is None or (
                    not force
                    and manifest["version"] == self._view.version
                    and _index_uid(manifest) == _index_uid(self._view.manifest)
                ):
                    self._manifest_signature = signature
                    return False
                self._check_compatible(manifest)
                view = self._load_view(manifest, missing_is_damage=last)
                if view is None:
                    continue  # a writer replaced the manifest and collected a file meanwhile
                if view.damage and not last and self._stat_manifest() != signature:
                    continue  # the manifest changed while loading: judge the new one
                self._install(view, signature)
                return True
            return False

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
        if k <= 0:
            raise ValueError(f"k={k}: must be positive")
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries: shape {queries.shape}, expected (n, {self.dim})")
        with search_threads(len(queries)):
            return self._search(queries, k, id_filter)

    def _search(
        self, queries: np.ndarray, k: int, id_filter: set[int] | np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = prepare_vectors(queries, self.metric)
        view = self._view
        found_distances: list[np.ndarray] = []
        found_ids: list[np.ndarray] = []
        if id_filter is not None:
            allowed = np.packbits(self._allowed_mask(id_filter, view), bitorder="little")
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
                    self.metric,
                    **self._knobs(tuned),
                    exact_max_rows=self.exact_filter_rows,
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
        return self._merge(found_distances, found_ids, len(queries), k)

    def _knobs(self, tuned: dict[str, Any]) -> dict[str, int]:
        """nprobe and efSearch for a segment: the values tuned for it at its merge, with the
        configured ones (where given) as a floor; untuned segments get the configured values,
        else DEFAULT_NPROBE / DEFAULT_EF_SEARCH."""
        knobs = {}
        for knob, configured, default in (
            ("nprobe", self.nprobe, DEFAULT_NPROBE),
            ("ef_search", self.ef_search, DEFAULT_EF_SEARCH),
        ):
            value = tuned.get(knob)
            if value is None:
                knobs[knob] = default if configured is None else configured
            else:
                knobs[knob] = max(value, configured or 0)
        return knobs

    @staticmethod
    def _allowed_mask(id_filter: set[int] | np.ndarray, view: _View) -> np.ndarray:
        """id_filter as a boolean array indexed by id, covering every live id."""
        size = int(view.live_ids[-1]) + 1 if len(view.live_ids) else 0
        if isinstance(id_filter, np.ndarray) and id_filter.dtype == bool:
            if id_filter.ndim != 1:
                raise ValueError(f"id_filter: expected a 1-D mask, got shape {id_filter.shape}")
            if len(id_filter) >= size:
                return id_filter
            return np.concatenate([id_filter, np.zeros(size - len(id_filter), dtype=bool)])
        allowed_ids = _as_ids(id_filter, "id_filter")
        mask = np.zeros(size, dtype=bool)
        mask[allowed_ids[allowed_ids < size]] = True
        return mask

    def stored_vector(self, image_id: int) -> np.ndarray | None:
        """The live stored vector of one id (unit-normalised for cosine), or None: a lookup
        in each segment's id map, newest first, without scanning id arrays."""
        view = self._view
        with search_threads(1):
            for segment, deleted in zip(
                reversed(view.segments), reversed(view.deleted), strict=True
            ):
                position = np.searchsorted(deleted, image_id)
                if position < len(deleted) and deleted[position] == image_id:
                    continue
                try:
                    return segment.index.reconstruct(int(image_id))
                except RuntimeError:  # not in this segment's id map
                    continue
        return None

    def get_vectors(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Stored vectors of live `ids`, in that order (unit-normalised for cosine)."""
        wanted = _as_ids(ids)
        view = self._view
        rows = np.empty((len(wanted), self.dim), dtype=np.float32)
        found = np.zeros(len(wanted), dtype=bool)
        for segment, deleted in zip(view.segments, view.deleted, strict=True):
            held = np.isin(wanted, segment.ids) & ~np.isin(wanted, deleted) & ~found
            for position in np.flatnonzero(held):
                rows[position] = segment.index.reconstruct(int(wanted[position]))
            found |= held
        if not found.all():
            missing = wanted[~found][:10].tolist()
            raise KeyError(f"{self.root}: ids not in the index: {missing}")
        return rows

    def stats(self) -> dict[str, Any]:
        """Segments, vectors, tombstones, bytes and version, for metrics and `index verify`."""
        view = self._view
        entries = view.manifest["segments"] if view.manifest else []
        return {
            "root": str(self.root),
            "version": view.version,
            "metric": self.metric,
            "dim": self.dim,
            "factory": self.factory,
            "identity": view.manifest.get("identity") if view.manifest else self.identity,
            "segments": len(entries),
            "sealed_segments": sum(entry["kind"] == SEALED for entry in entries),
            "delta_segments": sum(entry["kind"] == DELTA for entry in entries),
            "vectors": self.ntotal,
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

    def verify(self) -> list[str]:
        """Check every segment file the manifest names against its size and sha256; [] when
        sound.

        A loaded segment can be damaged on disk afterwards (a memory-mapped file changed in
        place changes what is served): each file touched since its last matching hash is
        hashed again (_file_problem), and one that is missing or differs is quarantined and
        dropped from the view, and from the manifest (under the writer lock), so no reader
        keeps serving it. Its vectors come back from the database (pipeline.verify_index
        with repair, or the next index run).
        """
        with self._lock:
            try:
                manifest = read_manifest(self.manifest_path)
            except IndexCorruptError as error:
                return [str(error)]
            if manifest is None:
                return []
            problems = []
            for entry in manifest["segments"]:
                path = self.root / entry["file"]
                problem = _file_problem(path, entry, self._hashed)
                if problem is None:
                    continue
                if problem != "missing":
                    problem = f"{problem}; {self._quarantine(path)}"
                self._segment_cache.pop(entry["file"], None)
                self._hashed.pop(entry["file"], None)
                problems.append(f"{path}: {problem}")
            if problems:
                self.reload_if_changed(force=True)
                self.drop_damaged()
            return problems

    def drop_damaged(self) -> bool:
        """Publish a manifest without the segments this view could not serve (their files
        are missing or quarantined); True when one was written."""
        with self._writing():
            view = self._view
            if not view.damage:
                return False
            self._commit(view, self._entries(view), new_segments=[], retired=[])
            return True

    def _quarantine(self, path: Path) -> str:
        """Move a damaged segment aside (one rename: atomic), so it is never served again;
        returns where it went, for the report."""
        aside_dir = self.root / QUARANTINE_DIR
        aside = aside_dir / f"{path.name}.{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
        try:
            aside_dir.mkdir(exist_ok=True)
            os.rename(path, aside)
            fsync_dir(self.root)
        except FileNotFoundError:
            return "already moved aside"
        except OSError as error:  # e.g. a read-only mount: still never served from here
            log.error("index %s: cannot quarantine %s (%s)", self.root, path.name, error)
            return f"not served (could not be moved aside: {error.strerror or error})"
        log.error("index %s: damaged segment %s quarantined as %s", self.root, path.name, aside)
        return f"quarantined as {aside}"

    def _load_checked(self, entry: dict[str, Any]) -> Segment:
        """Load a segment after checking its size and sha256 against the manifest; one that
        differs or that FAISS cannot read is quarantined (SegmentDamaged)."""
        path = self.root / entry["file"]
        problem = _file_problem(path, entry, self._hashed)
        if problem == "missing":
            raise FileNotFoundError(f"{path}: no such segment file")
        segment = None
        if problem is None:
            try:
                segment = load_segment(path, entry["factory"])
            except (RuntimeError, AttributeError, ValueError) as error:
                problem = f"FAISS cannot read it ({str(error).strip().splitlines()[0][:200]})"
            else:
                problem = self._segment_problem(segment, entry)
        if problem is None and segment is not None:
            return segment
        raise SegmentDamaged(f"{path}: {problem}; {self._quarantine(path)}")

    def _segment_problem(self, segment: Segment, entry: dict[str, Any]) -> str | None:
        if len(segment.ids) != entry["count"]:
            return f"holds {len(segment.ids)} vectors, manifest says {entry['count']}"
        if segment.index.d != self.dim:
            return f"holds {segment.index.d}-d vectors, the index is {self.dim}-d"
        if segment.index.metric_type != faiss_metric(self.metric):
            return f"built for another metric than {self.metric!r}"
        return None

    # ---- writing -----------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Append vectors keyed by id; ids already live are skipped. Returns how many were added.

        The vectors land in a Flat delta at once (searchable on the next reload); when the
        deltas hold `segment_size` vectors they are merged into the main index, after the
        writer lock is released (`merge`), so other writers wait only for the delta.
        """
        new_ids = _as_ids(ids)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(new_ids), self.dim):
            raise ValueError(
                f"vectors: shape {vectors.shape}, expected ({len(new_ids)}, {self.dim})"
                f" for {len(new_ids)} ids"
            )
        if not np.isfinite(vectors).all():
            bad = new_ids[~np.isfinite(vectors).all(axis=1)][:10].tolist()
            raise ValueError(f"vectors for ids {bad}: contain NaN or infinity")
        if len(new_ids) == 0:
            return 0
        _, first_positions = np.unique(new_ids, return_index=True)
        first_positions.sort()
        new_ids, vectors = new_ids[first_positions], vectors[first_positions]
        with self._writing():
            view = self._view
            fresh = ~np.isin(new_ids, view.live_ids)
            if not fresh.any():
                return 0
            new_ids, prepared = new_ids[fresh], prepare_vectors(vectors[fresh], self.metric)
            self._append(view, new_ids, prepared)
        if self._delta_live(self._view) >= self.segment_size:
            self.merge(wait=False)
        return len(new_ids)

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Tombstone live ids; search never returns them again. Returns how many were live."""
        doomed = np.unique(_as_ids(ids))
        if len(doomed) == 0:
            return 0
        with self._writing():
            view = self._view
            entries = self._entries(view)
            removed = 0
            for entry, segment, deleted in zip(entries, view.segments, view.deleted, strict=True):
                hit = segment.ids[np.isin(segment.ids, doomed) & ~np.isin(segment.ids, deleted)]
                if len(hit):
                    entry["deleted"] = sorted(entry["deleted"] + hit.tolist())
                    removed += len(hit)
            if removed:
                self._commit(view, entries, new_segments=[], retired=[])
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
            self.reload_if_changed()
            snapshot = self._view
            main_position = self._main_position(snapshot)
            deltas = [i for i, s in enumerate(snapshot.segments) if i != main_position]
            if not deltas and (not rebuild or main_position is None):
                return False
            built = self._build_main(snapshot, main_position, deltas, rebuild)
            with self._writing():
                return self._commit_main(snapshot, main_position, deltas, built)

    def compact(self) -> int:
        """Rebuild the main index from the live vectors of every segment, without tombstones;
        returns the tombstones dropped."""
        self.reload_if_changed()
        dropped = sum(len(deleted) for deleted in self._view.deleted)
        self.merge(wait=True, rebuild=True)
        return dropped

    def collect_garbage(self, include_retired: bool = False) -> list[str]:
        """Delete files no manifest names; `include_retired` also those the last write retired."""
        with self._writing():
            if self._view.manifest is None:
                return []
            return self._collect_garbage(self._view.manifest, include_retired)

    def replace_all(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Make the index hold exactly these vectors, swapped in by one manifest replace.

        The rebuild path: new segments are written beside the live ones, then one atomic
        manifest replace publishes them and retires every old segment (collected by the
        next write, as usual). Killed at any moment, the index is the old one or the new
        one, whole; leftovers of an interrupted replace are removed when the next starts.
        Returns how many vectors the index now holds.
        """
        new_ids = _as_ids(ids)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(new_ids), self.dim)
        if not np.isfinite(vectors).all():
            bad = new_ids[~np.isfinite(vectors).all(axis=1)][:10].tolist()
            raise ValueError(f"vectors for ids {bad}: contain NaN or infinity")
        _, first_positions = np.unique(new_ids, return_index=True)
        first_positions.sort()
        new_ids, vectors = new_ids[first_positions], vectors[first_positions]
        prepared = prepare_vectors(vectors, self.metric)
        built = self._build_whole(new_ids, prepared) if len(new_ids) else None
        with self._writing():
            self._discard_strays()
            view = self._view
            entries, new_segments = [], []
            if built is not None:
                entry, segment = self._write_main(view.version + 1, built)
                entries, new_segments = [entry], [segment]
            fault_point("index-replace:segments-written")
            retired = [segment.file for segment in view.segments]
            self._commit(view, entries, new_segments, retired)
            return len(new_ids)

    def stray_files(self) -> list[str]:
        """Files no manifest accounts for (an interrupted write's segments, temp manifests)."""
        with self._writing():
            return self._strays()

    def discard_strays(self) -> list[str]:
        """Delete stray_files(); safe at any time, since it holds the writer lock."""
        with self._writing():
            return self._discard_strays()

    # ---- internals ---------------------------------------------------------------------

    def _strays(self) -> list[str]:
        manifest = self._view.manifest or {"segments": [], "retired": []}
        keep = {entry["file"] for entry in manifest["segments"]}
        keep |= set(manifest.get("retired", []))
        if not self.root.is_dir():
            return []
        return sorted(
            path.name
            for path in self.root.iterdir()
            if path.name not in keep
            and (
                path.suffix == SEGMENT_SUFFIX
                or (path.name.startswith(f".{MANIFEST_NAME}.") and path.name.endswith(TEMP_SUFFIX))
            )
        )

    def _discard_strays(self) -> list[str]:
        """Under the writer lock no write is in flight: every stray is an abandoned one."""
        strays = self._strays()
        for name in strays:
            (self.root / name).unlink(missing_ok=True)
            self._segment_cache.pop(name, None)
        if strays:
            log.warning(
                "index %s: removed %d files of an interrupted write", self.root, len(strays)
            )
        return strays

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Exclusive writer: a thread lock in-process, an flock across processes."""
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / WRITER_LOCK_NAME, "a+b") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                try:
                    self.reload_if_changed()
                    yield
                finally:
                    fcntl.flock(lock_file, fcntl.LOCK_UN)

    @contextmanager
    def _merging(self, wait: bool) -> Iterator[bool]:
        """One merge per index across threads and processes; yields whether it was acquired."""
        if not self._merge_lock.acquire(blocking=wait):
            yield False
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / MERGE_LOCK_NAME, "a+b") as lock_file:
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

    def _append(self, view: _View, new_ids: np.ndarray, prepared: np.ndarray) -> None:
        """A new delta holding the batch, absorbing the newest deltas while each is at most
        twice the tail (a binary-counter merge, so deltas stay few and appends O(batch))."""
        entries = self._entries(view)
        delta_positions = [i for i, entry in enumerate(entries) if entry["kind"] == DELTA]
        absorbed: list[int] = []
        tail_count = len(new_ids)
        for position in reversed(delta_positions):
            live = entries[position]["count"] - len(entries[position]["deleted"])
            if live > 2 * tail_count:
                break
            absorbed.insert(0, position)
            tail_count += live
        old_ids, old_vectors = self._live_rows(view, absorbed)
        ids = np.concatenate([old_ids, new_ids])
        vectors = np.concatenate([old_vectors, prepared])
        absorbed_set = set(absorbed)
        kept = [entry for i, entry in enumerate(entries) if i not in absorbed_set]
        entry, segment = self._write_segment(
            view.version + 1, DELTA, ids, build_flat(ids, vectors, self.metric)
        )
        retired = [view.segments[i].file for i in absorbed]
        self._commit(view, kept + [entry], [segment], retired)

    @staticmethod
    def _main_position(view: _View) -> int | None:
        if view.manifest is None:
            return None
        for position, entry in enumerate(view.manifest["segments"]):
            if entry["kind"] == SEALED:
                return position
        return None

    @staticmethod
    def _delta_live(view: _View) -> int:
        if view.manifest is None:
            return 0
        return sum(
            entry["count"] - len(entry["deleted"])
            for entry in view.manifest["segments"]
            if entry["kind"] == DELTA
        )

    def _wanted_factory(self, count: int) -> str:
        if self.factory == AUTO:
            return choose_factory(count, self.dim, self.memory_bytes)
        return self.factory

    def _build_whole(self, ids: np.ndarray, prepared: np.ndarray) -> BuiltMain:
        return build_whole(ids, prepared, self.metric, self._wanted_factory(len(ids)))

    def _build_main(
        self, snapshot: _View, main_position: int | None, deltas: list[int], rebuild: bool
    ) -> BuiltMain:
        """The merged main index of a snapshot, extended or built whole (see `merge`)."""
        new_ids, new_vectors = self._live_rows(snapshot, deltas)
        if main_position is not None and not rebuild:
            main = snapshot.segments[main_position]
            entry = snapshot.manifest["segments"][main_position]  # type: ignore[index]
            trained_on = entry.get("trained_on", entry["count"])
            count = len(main.ids) - len(snapshot.deleted[main_position]) + len(new_ids)
            rebuild = (
                needs_rebuild(self._wanted_factory(count), main.factory, count, trained_on)
                or len(snapshot.deleted[main_position]) > TOMBSTONE_REBUILD_SHARE * len(main.ids)
                # a re-added id would sit twice in one index under one id
                or bool(np.isin(new_ids, main.ids).any())
            )
            if not rebuild:
                return extend(
                    self.root / main.file,
                    main.factory,
                    trained_on,
                    new_ids,
                    new_vectors,
                    self.metric,
                )
        positions = ([] if main_position is None else [main_position]) + deltas
        ids, vectors = self._live_rows(snapshot, positions)
        return self._build_whole(ids, vectors)

    def _commit_main(
        self, snapshot: _View, main_position: int | None, deltas: list[int], built: BuiltMain
    ) -> bool:
        """Publish a main index built from `snapshot` (under the writer lock).

        The segments it merged are retired where they are still current; any id of it that
        is not live in one of those now (removed, or re-added elsewhere, meanwhile) is
        tombstoned in it. A main index replaced meanwhile (replace_all) voids the merge.
        """
        view = self._view
        current = {segment.file: position for position, segment in enumerate(view.segments)}
        merged = [snapshot.segments[i].file for i in deltas]
        if main_position is not None:
            main_file = snapshot.segments[main_position].file
            if main_file not in current:
                log.warning("index %s: main index replaced during a merge; merge dropped", self)
                return False
            merged.append(main_file)
        retired_positions = [current[file] for file in merged if file in current]
        covered_ids = self._live_ids(view, retired_positions)
        entry, segment = self._write_main(view.version + 1, built)
        entry["deleted"] = np.sort(built.ids[~np.isin(built.ids, covered_ids)]).tolist()
        entries = self._entries(view)
        kept = [entry for i, entry in enumerate(entries) if i not in set(retired_positions)]
        retired = [view.segments[i].file for i in retired_positions]
        self._commit(view, [entry, *kept], [segment], retired)
        return True

    def _write_main(self, version: int, built: BuiltMain) -> tuple[dict[str, Any], Segment]:
        entry, segment = self._write_segment(version, SEALED, built.ids, built.index, built.factory)
        entry["trained_on"] = built.trained_on
        if built.tuned is not None:
            entry["search"] = built.tuned  # the efSearch / nprobe that keeps the recall floor
        return entry, segment

    def _write_segment(
        self,
        version: int,
        kind: str,
        ids: np.ndarray,
        index: faiss.IndexIDMap2,
        factory: str = FLAT,
    ) -> tuple[dict[str, Any], Segment]:
        file_name = f"{kind}-{version:08d}-{uuid.uuid4().hex[:12]}{SEGMENT_SUFFIX}"
        size_bytes, sha256 = write_segment_file(self.root / file_name, index)
        written = (self.root / file_name).stat()
        self._hashed[file_name] = (written.st_ino, written.st_size, written.st_mtime_ns)
        fault_point("index:segment-written")
        entry = {
            "file": file_name,
            "kind": kind,
            "factory": factory,
            "count": len(ids),
            "bytes": size_bytes,
            "sha256": sha256,
            "deleted": [],
        }
        return entry, Segment(file=file_name, index=index, ids=ids.copy(), factory=factory)

    def _commit(
        self,
        view: _View,
        entries: list[dict[str, Any]],
        new_segments: list[Segment],
        retired: list[str],
    ) -> None:
        """Make new segment files durable, then publish them with the next manifest."""
        if new_segments:
            fsync_dir(self.root)
        old_identity = view.manifest.get("identity") if view.manifest else None
        manifest = {
            "format": MANIFEST_FORMAT,
            "index_uid": _index_uid(view.manifest) or uuid.uuid4().hex,
            "version": view.version + 1,
            "dim": self.dim,
            "metric": self.metric,
            "factory": self.factory,
            "segment_size": self.segment_size,
            "identity": self.identity if self.identity is not None else old_identity,
            "segments": entries,
            "retired": retired,
            "updated_at": datetime.now(UTC).isoformat(),
        }
        write_manifest(self.manifest_path, manifest)
        for segment in new_segments:
            self._segment_cache[segment.file] = segment
        view = self._load_view(manifest)
        assert view is not None  # missing files are damage here
        self._install(view, self._stat_manifest())
        self._collect_garbage(manifest, include_retired=False)

    def _collect_garbage(self, manifest: dict[str, Any], include_retired: bool) -> list[str]:
        keep = {entry["file"] for entry in manifest["segments"]}
        if not include_retired:
            keep |= set(manifest.get("retired", []))
        manifest_mtime_ns = self.manifest_path.stat().st_mtime_ns
        removed = []
        for path in self.root.iterdir():
            is_segment = path.suffix == SEGMENT_SUFFIX
            is_temp_manifest = path.name.startswith(f".{MANIFEST_NAME}.") and path.name.endswith(
                TEMP_SUFFIX
            )
            if not (is_segment or is_temp_manifest) or path.name in keep:
                continue
            try:
                if path.stat().st_mtime_ns > manifest_mtime_ns:
                    continue  # written after the manifest: not ours to judge
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path.name)
            self._segment_cache.pop(path.name, None)
        if removed:
            log.info("index %s: collected %d unreferenced files", self.root, len(removed))
        return removed

    def _entries(self, view: _View) -> list[dict[str, Any]]:
        """A mutable copy of the current manifest's segment entries."""
        if view.manifest is None:
            return []
        return [dict(entry, deleted=list(entry["deleted"])) for entry in view.manifest["segments"]]

    def _live_rows(self, view: _View, positions: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """Ids and stored vectors of the segments at `positions`, tombstones left out."""
        positions = list(positions)
        vector_parts = [np.empty((0, self.dim), dtype=np.float32)]
        for position in positions:
            vectors, live = view.segments[position].vectors(), view.live_rows[position]
            vector_parts.append(vectors if live is None else vectors[live])
        return self._live_ids(view, positions), np.concatenate(vector_parts)

    @staticmethod
    def _live_ids(view: _View, positions: Iterable[int]) -> np.ndarray:
        """Live ids of the segments at `positions` (the view's per-row liveness)."""
        parts = [np.empty(0, dtype=np.int64)]
        for position in positions:
            ids, live = view.segments[position].ids, view.live_rows[position]
            parts.append(ids if live is None else ids[live])
        return np.concatenate(parts)

    def _load_view(self, manifest: dict[str, Any], missing_is_damage: bool = True) -> _View | None:
        """The view of `manifest`: its sound segments, the others in `damage`. None when a
        file is missing and not `missing_is_damage` (a writer may have just collected it)."""
        segments, deleted_parts, live_parts = [], [], [np.empty(0, dtype=np.int64)]
        live_row_parts: list[np.ndarray | None] = []
        sound_entries, damage = [], []
        for entry in manifest["segments"]:
            segment = self._segment_cache.get(entry["file"])
            if segment is None:
                try:
                    segment = self._load_checked(entry)
                except FileNotFoundError as error:
                    if not missing_is_damage:
                        return None
                    damage.append(f"{error.args[0]}; its vectors are not served")
                    continue
                except SegmentDamaged as error:
                    damage.append(str(error))
                    continue
            deleted = np.array(sorted(entry["deleted"]), dtype=np.int64)
            live_rows = ~np.isin(segment.ids, deleted)
            segments.append(segment)
            sound_entries.append(entry)
            deleted_parts.append(deleted)
            live_row_parts.append(live_rows if len(deleted) else None)
            live_parts.append(segment.ids[live_rows])
        if damage:
            # Positions in view.manifest["segments"] match view.segments: the next write
            # publishes the sound segments only.
            manifest = {**manifest, "segments": sound_entries}
        view = _View(
            version=manifest["version"],
            manifest=manifest,
            segments=tuple(segments),
            deleted=tuple(deleted_parts),
            exclusions=tuple(self._exclusion(deleted) for deleted in deleted_parts),
            live_rows=tuple(live_row_parts),
            live_bits=tuple(
                _without(segment.id_bits, deleted)
                for segment, deleted in zip(segments, deleted_parts, strict=True)
            ),
            live_ids=np.sort(np.concatenate(live_parts)),
            tuned=tuple(dict(entry.get("search") or {}) for entry in manifest["segments"]),
            damage=tuple(damage),
        )
        params = tuple(
            search_parameters(
                segment.inner,
                exclusion[0] if exclusion is not None else None,
                outer=segment.index,
                **self._knobs(tuned),
            )
            for segment, exclusion, tuned in zip(
                view.segments, view.exclusions, view.tuned, strict=True
            )
        )
        return dataclasses.replace(view, params=params)

    def _install(self, view: _View, signature: tuple[int, int, int] | None) -> None:
        self._view = view
        self._manifest_signature = signature
        in_use = {segment.file for segment in view.segments}
        for file_name in list(self._segment_cache):
            if file_name not in in_use:
                del self._segment_cache[file_name]
        for file_name in list(self._hashed):
            if file_name not in in_use:
                del self._hashed[file_name]
        for segment in view.segments:
            self._segment_cache[segment.file] = segment

    def _stat_manifest(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.manifest_path)
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _check_compatible(self, manifest: dict[str, Any]) -> None:
        problems = []
        if manifest["dim"] != self.dim:
            problems.append(f"dim {manifest['dim']} (opened with {self.dim})")
        if manifest["metric"] != self.metric:
            problems.append(f"metric {manifest['metric']!r} (opened with {self.metric!r})")
        recorded = manifest.get("identity") or {}
        if self.identity is not None:
            for key in IDENTITY_KEYS:
                if key in recorded and key in self.identity and recorded[key] != self.identity[key]:
                    problems.append(f"{key} {recorded[key]!r} (opened with {self.identity[key]!r})")
        if problems:
            raise IndexMismatchError(
                f"{self.root}: this index was built for {', '.join(problems)}; its vectors are"
                " not comparable. Rebuild it from the database or use another directory."
            )

    @staticmethod
    def _exclusion(deleted: np.ndarray) -> tuple[Any, ...] | None:
        """(selector of ids not tombstoned, the selector it wraps), built once per view."""
        if len(deleted) == 0:
            return None
        tombstones = faiss.IDSelectorBatch(deleted)
        return (faiss.IDSelectorNot(tombstones), tombstones)

    def _merge(
        self, distances: list[np.ndarray], ids: list[np.ndarray], n_queries: int, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-segment top-k lists -> one top-k, as a single flat index would order it."""
        pad_distance = np.float32(np.inf if self.metric == "l2" else -np.inf)
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
        rank_key = np.where(valid, all_distances if self.metric == "l2" else -all_distances, np.inf)
        tie_key = np.where(valid, all_ids, np.iinfo(np.int64).max)
        order = np.lexsort((tie_key, rank_key), axis=1)[:, :k]
        width = order.shape[1]
        chosen_ids = np.take_along_axis(all_ids, order, axis=1)
        chosen_distances = np.take_along_axis(all_distances, order, axis=1)
        chosen_valid = chosen_ids >= 0
        out_ids[:, :width] = np.where(chosen_valid, chosen_ids, -1)
        out_distances[:, :width] = np.where(chosen_valid, chosen_distances, pad_distance)
        return out_distances, out_ids
