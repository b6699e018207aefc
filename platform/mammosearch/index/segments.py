"""One segment: an immutable FAISS file of vectors keyed by image id (IndexIDMap2).

Segments are built from already-prepared vectors (normalised for cosine), serialised
to bytes, and read back whole into memory. Trainable factory strings (IVF, PQ) are
trained on the segment's own vectors when it is sealed; a segment too small to train
falls back to "Flat", and the factory actually used is recorded per segment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from mammosearch.distances import DISTANCE_METRICS

log = logging.getLogger(__name__)

METRICS = DISTANCE_METRICS
"""l2: squared Euclidean distance, ascending. cosine: inner product of unit vectors, descending."""

FLAT = "Flat"


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

    @property
    def inner(self) -> faiss.Index:
        return faiss.downcast_index(self.index.index)

    def vectors(self) -> np.ndarray:
        """All stored vectors, row i belonging to ids[i] (exact for Flat, HNSW*Flat, IVF*,Flat)."""
        if len(self.ids) == 0:
            return np.empty((0, self.index.d), dtype=np.float32)
        return self.inner.reconstruct_n(0, len(self.ids))


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


def serialize(index: faiss.Index) -> memoryview:
    return faiss.serialize_index(index).data


def load_segment(path: Path, factory: str) -> Segment:
    """Read a segment whole; a missing file raises FileNotFoundError (not FAISS's RuntimeError)."""
    with open(path, "rb") as handle:
        index = faiss.read_index(faiss.PyCallbackIOReader(handle.read))
    if not isinstance(index, faiss.IndexIDMap2):
        index = faiss.downcast_index(index)
    ids = faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    return Segment(file=path.name, index=index, ids=ids, factory=factory)


def search_parameters(
    inner: faiss.Index, selector: faiss.IDSelector | None, nprobe: int, ef_search: int
) -> faiss.SearchParameters | None:
    """Per-call parameters of the inner index's own type (IndexIDMap2 passes them through)."""
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is not None:
        return faiss.SearchParametersIVF(sel=selector, nprobe=min(nprobe, ivf.nlist))
    if isinstance(inner, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=ef_search)
    if selector is None:
        return None
    return faiss.SearchParameters(sel=selector)
