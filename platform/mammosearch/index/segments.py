"""One segment: an immutable FAISS file of vectors keyed by image id (IndexIDMap2).

Segments are built from already-prepared vectors (normalised for cosine), serialised
to bytes, and read back memory-mapped and read-only where FAISS can (the flat codes of
Flat, HNSW*, IVF*: `IO_FLAG_MMAP_IFC`, else `IO_FLAG_MMAP`), so processes reading the same
files share one copy in the page cache; otherwise whole. Trainable factory strings (IVF, PQ) are
trained on the segment's own vectors when it is sealed; a segment too small to train
falls back to "Flat", and the factory actually used is recorded per segment.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np

from mammosearch.index.manifest import IndexCorruptError, sha256_of
from mammosearch.vocabulary import DISTANCE_METRICS

log = logging.getLogger(__name__)

METRICS = DISTANCE_METRICS
"""l2: squared Euclidean distance, ascending. cosine: inner product of unit vectors, descending."""

FLAT = "Flat"

MMAP_FLAGS = (
    faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY,
    faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY,
)
"""Tried in order when loading a sealed segment; a plain whole read is the last resort."""


DENSE_LOOKUP_SPAN = 16
"""Ids per stored vector up to which a segment maps id -> row with a table by id."""


def faiss_metric(metric: str) -> int:
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def prepare_vectors(vectors: np.ndarray, metric: str) -> np.ndarray:
    """A C-contiguous float32 copy, L2-normalised for cosine (zero vectors stay zero)."""
    prepared = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if metric == "cosine" and len(prepared):
        faiss.normalize_L2(prepared)
    return prepared


@dataclass(frozen=True)
class Segment:
    """A loaded segment: the FAISS index and the ids it holds, in storage order."""

    file: str
    index: faiss.IndexIDMap2
    ids: np.ndarray
    factory: str

    @cached_property
    def inner(self) -> faiss.Index:
        """The index inside the id map, as its own type (cached: a search asks for it)."""
        return faiss.downcast_index(self.index.index)

    @cached_property
    def ivf(self) -> faiss.IndexIVF | None:
        """The inverted-file index inside (IVF*, also under a re-ranking index), or None."""
        return faiss.try_extract_index_ivf(self.inner)

    @property
    def exhaustive(self) -> bool:
        """True when a search with a selector scans every allowed vector (exact, complete)."""
        return isinstance(self.inner, faiss.IndexFlatCodes)  # Flat, PQ, SQ, LSH, ...

    def vectors(self) -> np.ndarray:
        """All stored vectors, row i belonging to ids[i] (exact for Flat, HNSW*Flat, IVF*,Flat);
        a read-only view, not a copy, where the index keeps them plainly."""
        if len(self.ids) == 0:
            return np.empty((0, self.index.d), dtype=np.float32)
        flat_rows = self._flat_rows
        if flat_rows is not None:
            return flat_rows
        # faiss's stub types reconstruct_n without a buffer as Any (torch or numpy)
        vectors: np.ndarray = self.inner.reconstruct_n(0, len(self.ids))
        return vectors

    def vectors_at(self, rows: np.ndarray) -> np.ndarray:
        """Stored vectors of the rows at these storage positions (what exact search compares)."""
        flat_rows = self._flat_rows
        if flat_rows is not None:
            selected: np.ndarray = flat_rows[rows]
            return selected
        return self.inner.reconstruct_batch(np.ascontiguousarray(rows, dtype=np.int64))

    @property
    def stores_plainly(self) -> bool:
        """The float vectors are readable in place (Flat, HNSW*Flat, *,RFlat)."""
        return self._flat_rows is not None

    def scores_at(self, queries: np.ndarray, rows: np.ndarray, metric: str) -> np.ndarray | None:
        """(queries, rows) inner products (cosine, ip) or squared L2 distances (l2) against
        the stored vectors at these positions, read in place (no gathered copy, which cost
        more than the arithmetic); None where the vectors are not stored plainly."""
        flat_rows = self._flat_rows
        if flat_rows is None:
            return None
        count, dim = len(queries), flat_rows.shape[1]
        positions = np.ascontiguousarray(np.broadcast_to(rows.astype(np.int64), (count, len(rows))))
        scores = np.empty((count, len(rows)), dtype=np.float32)
        # Both are in faiss's SWIG module but missing from its stub file.
        by_index = (
            faiss.fvec_L2sqr_by_idx  # type: ignore[attr-defined]
            if metric == "l2"
            else faiss.fvec_inner_products_by_idx  # type: ignore[attr-defined]
        )
        by_index(
            faiss.swig_ptr(scores),
            faiss.swig_ptr(np.ascontiguousarray(queries, dtype=np.float32)),
            faiss.swig_ptr(flat_rows),
            faiss.swig_ptr(positions),
            dim,
            count,
            len(rows),
        )
        return scores

    @cached_property
    def id_bits(self) -> np.ndarray:
        """Its ids as a packed bitmap by id (little bit order, numpy.packbits): filtered
        search intersects it with the allowed ids' bitmap without touching the id array."""
        if len(self.ids) == 0:
            return np.zeros(0, dtype=np.uint8)
        words = (int(self.ids.max()) + 64) // 64  # whole uint64 words: counted 8 bytes at once
        member = np.zeros(words * 64, dtype=bool)
        member[self.ids] = True
        return np.packbits(member, bitorder="little")

    @cached_property
    def _row_lookup(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(storage row by id, None) where the segment holds at least 1 id in
        DENSE_LOOKUP_SPAN below its largest: one gather per lookup (a binary search per id
        cost as much as the exact comparison it fed); else (its ids sorted, the row of each),
        so a small delta of recent ids does not cost 4 bytes per id of the whole archive."""
        count = len(self.ids)
        largest = int(self.ids.max()) + 1 if count else 0
        if count * DENSE_LOOKUP_SPAN >= largest:
            rows = np.full(largest, -1, dtype=np.int32)
            rows[self.ids] = np.arange(count, dtype=np.int32)
            return rows, None
        order = np.argsort(self.ids, kind="stable")
        return self.ids[order], order

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Storage rows of these ids (every one held here), ascending."""
        table, order = self._row_lookup
        rows = table[ids] if order is None else order[np.searchsorted(table, ids)]
        return np.sort(rows).astype(np.int64)

    @cached_property
    def _flat_rows(self) -> np.ndarray | None:
        """A (n, d) view of the float vectors when the inner index stores them plainly
        (Flat, HNSW*Flat, the re-ranking vectors of RFlat), so gathering rows is a numpy
        copy; None for other codecs."""
        inner = self.inner
        if isinstance(inner, faiss.IndexHNSW):
            inner = faiss.downcast_index(inner.storage)
        elif isinstance(inner, faiss.IndexRefine):
            inner = faiss.downcast_index(inner.refine_index)
        if not isinstance(inner, faiss.IndexFlat) or inner.ntotal == 0:
            return None
        pointer = faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * inner.d)
        return np.asarray(pointer).reshape(inner.ntotal, inner.d)  # lives as long as self


def build_index(
    ids: np.ndarray, vectors: np.ndarray, metric: str, factory: str
) -> tuple[faiss.IndexIDMap2, str]:
    """An IndexIDMap2 over prepared vectors; returns it with the factory actually used."""
    dim = vectors.shape[1]
    inner = faiss.index_factory(dim, factory, faiss_metric(metric))
    if not inner.is_trained:
        try:
            inner.train(vectors)
        except RuntimeError as error:
            log.warning(
                "index factory %r cannot train on %d vectors (%s); segment uses Flat",
                factory,
                len(vectors),
                error,
            )
            return build_index(ids, vectors, metric, FLAT)
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(vectors, ids)
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is not None:
        ivf.make_direct_map()  # so get_vectors() can reconstruct by id
    return index, factory


def build_flat(ids: np.ndarray, vectors: np.ndarray, metric: str) -> faiss.IndexIDMap2:
    """An exact IndexIDMap2 over prepared vectors (what a delta holds)."""
    return build_index(ids, vectors, metric, FLAT)[0]


def write_segment_file(path: Path, index: faiss.Index) -> tuple[int, str]:
    """Write an index to a file that must not exist yet and fsync it; (bytes, sha256).

    Written by FAISS straight to the file, not serialised in memory first: a main index of
    a million 1280-d vectors is 5 GB, and a second copy of it would double the writer's
    memory.
    """
    if path.exists():
        raise FileExistsError(f"{path}: a segment file is never overwritten")
    faiss.write_index(index, str(path))
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
    return path.stat().st_size, sha256_of(path)


def load_segment(path: Path, factory: str, mmap: bool = True) -> Segment:
    """Open a segment file, memory-mapped read-only when `mmap` and FAISS supports it for
    this index type, else read whole; a missing file raises FileNotFoundError."""
    index = None
    if mmap:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such segment file")
        for flags in MMAP_FLAGS:
            try:
                index = faiss.read_index(str(path), flags)
                break
            except RuntimeError as error:
                log.debug("%s: cannot be memory-mapped with flags %#x (%s)", path, flags, error)
    if index is None:
        with open(path, "rb") as handle:
            # PyCallbackIOReader: in faiss's Python module but missing from its stub file
            index = faiss.read_index(faiss.PyCallbackIOReader(handle.read))  # type: ignore[attr-defined]
    id_map = as_id_map(index, path)
    return Segment(file=path.name, index=id_map, ids=stored_ids(id_map), factory=factory)


def as_id_map(index: faiss.Index, path: Path) -> faiss.IndexIDMap2:
    """The index read from a segment file as the IndexIDMap2 every segment is."""
    if not isinstance(index, faiss.IndexIDMap2):
        index = faiss.downcast_index(index)
    if not isinstance(index, faiss.IndexIDMap2):
        raise IndexCorruptError(f"{path}: not an IndexIDMap2 but {type(index).__name__}")
    return index


def stored_ids(index: faiss.IndexIDMap2) -> np.ndarray:
    """The ids of an IndexIDMap2, in storage order."""
    return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)


REFINE_K_FACTOR = 10
"""An IVF-PQ index with exact re-ranking (`...,RFlat`) re-ranks this many times k candidates."""


def search_parameters(
    inner: faiss.Index,
    selector: faiss.IDSelector | None,
    nprobe: int,
    ef_search: int,
    outer: faiss.IndexIDMap2 | None = None,
) -> faiss.SearchParameters | None:
    """Per-call parameters of the inner index's own type (IndexIDMap2 passes them through).

    A re-ranking index (IndexRefine) hands only its base index's parameters down, which
    IndexIDMap2 does not translate: its selector is translated here through `outer`'s ids.
    """
    if isinstance(inner, faiss.IndexRefine):
        base_selector = None
        if selector is not None:
            if outer is None:
                raise ValueError("a selector on a re-ranking index needs its IndexIDMap2")
            # id_map is a SWIG Int64Vector, which faiss's stub does not accept here
            base_selector = faiss.IDSelectorTranslated(outer.id_map, selector)  # type: ignore[arg-type]
        base = search_parameters(
            faiss.downcast_index(inner.base_index), base_selector, nprobe, ef_search
        )
        # faiss's Python constructor takes attributes as keywords; its stub has no __init__
        refine = faiss.IndexRefineSearchParameters(k_factor=REFINE_K_FACTOR)  # type: ignore[call-arg]
        if base is not None:
            refine.base_index_params = base
        # SWIG keeps raw pointers only (keepalive: our own attribute on the SWIG object)
        refine.keepalive = (base, base_selector, selector)  # type: ignore[attr-defined]
        return refine
    # Built attribute by attribute, plain types tested first: a filtered search builds one
    # per call, and FAISS's keyword constructor and try_extract_index_ivf cost a fifth of a
    # 0.1 ms search.
    params: faiss.SearchParameters
    if isinstance(inner, faiss.IndexHNSW):
        # SearchParametersHNSW: in faiss's SWIG module but missing from its stub file
        hnsw_params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        hnsw_params.efSearch = ef_search
        params = hnsw_params
    else:
        ivf = inner if isinstance(inner, faiss.IndexIVF) else faiss.try_extract_index_ivf(inner)
        if ivf is not None:
            ivf_params = faiss.SearchParametersIVF()
            ivf_params.nprobe = min(nprobe, ivf.nlist)
            params = ivf_params
        elif selector is None:
            return None
        else:
            params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
    return params
