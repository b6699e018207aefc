"""Filtered search over one segment that never comes back short.

An approximate index searched with an ID selector loses results when few ids are allowed:
HNSW's beam (efSearch) and IVF's probed lists (nprobe) hold too few allowed vectors, so a
k=10 search at 0.1% allowed returned two hits on average, most of them wrong. So:

- few allowed vectors (at most `exact_max_rows` in the segment, default EXACT_MAX_ROWS,
  and at most EXACT_MAX_FRACTION of it, EXACT_MAX_FRACTION_IN_PLACE where the vectors are
  read in place, or EXACT_MAX_FLOATS in all): compare them exactly, read in place where the
  index stores them plainly, else gathered; cheaper than the walk or scan it replaces;
- many, or most of the segment (excluding the query's patient allows 99.9%: gathering
  20,000 vectors to drop four took 28 ms where the walk takes 0.3): the segment's own
  search with an `IDSelectorBitmap`, efSearch / nprobe scaled by
  1 / (allowed fraction) so the beam or the probed lists hold as many allowed vectors as an
  unfiltered search would, widened 4x while any query is short, then exact. (A gentler
  efSearch, 1 / sqrt(fraction), measured recall 0.915-0.945 at 10-50% allowed on the
  tests' data: not kept.)

Flat-coded segments (Flat, PQ, SQ) scan every allowed vector with a selector: complete as is.
The result per query has min(k, allowed vectors in the segment) hits.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from mammosearch.index.segments import Segment, faiss_metric, search_parameters

EXACT_MAX_ROWS = 20_000
"""Allowed vectors in a segment up to which exact comparison is used: measured faster than
filtered HNSW / IVF below it (bench/bench_filtered.py, docs/performance.md)."""
EXACT_MAX_FRACTION = 0.05
"""The share of a segment allowed up to which exact comparison is used: the gather's cost
grows with the rows allowed, the selector search's with 1 / fraction; they cross at about
5% (bench/bench_filtered_paths.py: 3%: gather 0.20 ms, walk 2+ ms; 10%: 1.45 against 0.75)."""
EXACT_MAX_FRACTION_IN_PLACE = 0.15
"""The same where the vectors are read in place (Flat, HNSW*Flat: no gathered copy): at 10%
of 100,000 x 256 exact took 2.3 ms against the walk's 4.2; at 50%, 6.6 against 0.65."""
EXACT_MAX_FLOATS = 1 << 20
"""Allowed rows x dimension up to which exact comparison is used at any share: 4 MB of
vectors gather in well under a millisecond, and exact beats any walk's recall."""
MAX_EF_SEARCH = 8192
MIN_FILTERED_EF_SEARCH = 64
"""The beam a filtered HNSW search starts from before scaling by 1 / fraction: a graph walk
that skips rejected nodes loses more than its share, so the unfiltered tuned value (often
16-32) is too narrow here (recall 0.90 at 10% allowed with efSearch 16 x 10)."""
WIDEN_FACTOR = 4
IN_PLACE_MAX_QUERIES = 8
"""Up to this many queries, exact comparison reads the allowed vectors in place; more share
one gathered copy (a matrix product then pays for the copy)."""


def allowed_rows(allowed: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
    """allowed (a boolean mask indexed by image id) -> a boolean per row of the segment."""
    if len(segment_ids) and segment_ids.max() < len(allowed):
        return allowed[segment_ids]
    rows = np.zeros(len(segment_ids), dtype=bool)
    inside = segment_ids < len(allowed)
    rows[inside] = allowed[segment_ids[inside]]
    return rows


def reads_in_place(segment: Segment, queries: np.ndarray) -> bool:
    """Whether exact comparison reads this segment's vectors in place for these queries."""
    return segment.stores_plainly and len(queries) <= IN_PLACE_MAX_QUERIES


def exact_search(
    segment: Segment, rows: np.ndarray, queries: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among the rows at these positions: (distances, image ids), -1 pads."""
    if reads_in_place(segment, queries) and 0 < k <= len(rows):
        scores = segment.scores_at(queries, rows, metric)
        if scores is not None:
            return _top_k(scores, segment.ids[rows], k, metric)
    vectors = np.ascontiguousarray(segment.vectors_at(rows), dtype=np.float32)
    distances, positions = faiss.knn(queries, vectors, k, metric=faiss_metric(metric))
    row_ids = segment.ids[rows]
    ids = np.where(positions >= 0, row_ids[np.maximum(positions, 0)], -1)
    return distances, ids


def _top_k(
    scores: np.ndarray, row_ids: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each row of `scores` (largest similarity, or smallest l2), in order."""
    keyed = scores if metric == "l2" else -scores
    best = np.argpartition(keyed, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(keyed, best, axis=1).argsort(axis=1, kind="stable")
    best = np.take_along_axis(best, order, axis=1)
    return np.take_along_axis(scores, best, axis=1), row_ids[best]


def _complete(ids: np.ndarray, want: int) -> bool:
    return bool((np.count_nonzero(ids >= 0, axis=1) >= want).all())


def filtered_search(
    segment: Segment,
    allowed: np.ndarray,
    rows: np.ndarray,
    deleted: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str,
    *,
    nprobe: int,
    ef_search: int,
    exact_max_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of one segment among allowed, live rows (`rows`: a boolean per row).

    `allowed` is the boolean mask by image id; `deleted` the segment's tombstoned ids (they
    may be live in a newer segment, so they are cleared from this segment's bitmap only).
    """
    matching = int(np.count_nonzero(rows))
    want = min(k, matching)
    fraction = matching / len(segment.ids)
    share = EXACT_MAX_FRACTION_IN_PLACE if reads_in_place(segment, queries) else EXACT_MAX_FRACTION
    cheap = fraction <= share or matching * queries.shape[1] <= EXACT_MAX_FLOATS
    if cheap and matching <= (EXACT_MAX_ROWS if exact_max_rows is None else exact_max_rows):
        return exact_search(segment, np.flatnonzero(rows), queries, want, metric)
    bits = allowed
    if len(deleted):
        bits = allowed.copy()
        bits[deleted[deleted < len(bits)]] = False
    packed = np.packbits(bits, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(packed), faiss.swig_ptr(packed))
    inner = segment.inner
    ivf = faiss.try_extract_index_ivf(inner)
    is_hnsw = isinstance(inner, faiss.IndexHNSW)
    ef = min(MAX_EF_SEARCH, math.ceil(max(ef_search, MIN_FILTERED_EF_SEARCH, want) / fraction))
    probes = nprobe if ivf is None else min(ivf.nlist, math.ceil(nprobe / fraction))
    while True:
        params = search_parameters(inner, selector, probes, ef, outer=segment.index)
        distances, ids = segment.index.search(queries, want, params=params)
        if _complete(ids, want):
            return distances, ids
        if is_hnsw and ef < MAX_EF_SEARCH:
            ef = min(MAX_EF_SEARCH, ef * WIDEN_FACTOR)
        elif ivf is not None and probes < ivf.nlist:
            probes = min(ivf.nlist, probes * WIDEN_FACTOR)
        else:
            return exact_search(segment, np.flatnonzero(rows), queries, want, metric)
