"""Filtered search over one segment that never comes back short.

An approximate index searched with an ID selector loses results when few ids are allowed:
HNSW's beam (efSearch) and IVF's probed lists (nprobe) hold too few allowed vectors, so a
k=10 search at 0.1% allowed returned two hits on average, most of them wrong. So a segment
searches its allowed, live ids (a packed bitmap by id) one of two ways:

- exact comparison of the allowed vectors, read in place where the index stores them
  plainly, else gathered;
- the segment's own search with an `IDSelectorBitmap`, widened 4x while any query is
  short, then exact.

Which, and with what efSearch / nprobe: where the segment was tuned at sealing
(filtered_tuning.py: per share allowed, the value that keeps the recall floor and both
sides' timings), `tuned_plan` reads it from the tuned share at or below the search's.
Otherwise (below the smallest tuned share, or a segment sealed before that tuning) fixed
rules: exact up to `exact_max_rows` (default EXACT_MAX_ROWS) allowed vectors and at most
EXACT_MAX_FRACTION of the segment (EXACT_MAX_FRACTION_IN_PLACE in place) or EXACT_MAX_FLOATS
in all; else the selector with efSearch / nprobe scaled by 1 / fraction (x7 the unfiltered
latency at 10% allowed, where the tuned value costs x1.6-1.8).

Flat-coded segments (Flat, PQ, SQ) scan every allowed vector with a selector: complete as is.
The result per query has min(k, allowed vectors in the segment) hits.

When a filter leaves out only a few of a segment's vectors (POSTFILTER_MAX_EXCLUDED;
the commonest filter, leaving out the query's own patient, leaves out 2-8 images), the
segment is searched unfiltered for k + that many and the left-out ones are dropped: no
selector at all, and the same answer as the selector walk over those candidates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

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
POSTFILTER_MAX_EXCLUDED = 256
"""Vectors of a segment left out (not allowed, or tombstoned) up to which it is searched
unfiltered for k + that many and the left-out ones dropped: a filtered walk or scan checks
every candidate against the filter (IVF at 99.9% allowed: x1.4-2 the unfiltered search,
most of it translating each scanned row to its image id). For HNSW, only while k + that
many fits in the segment's unfiltered efSearch: a wider beam cost more than the selector
(100 left out of 100,000, efSearch 96 -> 110: x2.05 the unfiltered latency, against x1.7)."""
IN_PLACE_MAX_QUERIES = 8
"""Up to this many queries, exact comparison reads the allowed vectors in place; more share
one gathered copy (a matrix product then pays for the copy)."""


def segment_bits(allowed_bits: np.ndarray, live_bits: np.ndarray) -> np.ndarray:
    """The packed bitmap of ids allowed and live in one segment: the allowed ids' bitmap
    (np.packbits of the mask by id, little bit order) and the segment's live ids' bitmap
    (Segment.id_bits: a whole number of 8-byte words, so it counts as uint64)."""
    both: np.ndarray
    if len(allowed_bits) >= len(live_bits):
        both = allowed_bits[: len(live_bits)] & live_bits
        return both
    padded = np.zeros(len(live_bits), dtype=np.uint8)
    padded[: len(allowed_bits)] = allowed_bits
    both = padded & live_bits
    return both


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
    if len(scores) == 1:  # one query (a web search): plain 1-D calls, a quarter of the time
        first = np.argpartition(keyed[0], k - 1)[:k]
        first = first[np.argsort(keyed[0][first], kind="stable")]
        return scores[:, first], row_ids[first][None, :]
    best = np.argpartition(keyed, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(keyed, best, axis=1).argsort(axis=1, kind="stable")
    best = np.take_along_axis(best, order, axis=1)
    return np.take_along_axis(scores, best, axis=1), row_ids[best]


def bitmap_selector(bits: np.ndarray) -> faiss.IDSelectorBitmap:
    """A FAISS selector of the ids whose entry in `bits` (a boolean mask by id) is set."""
    packed = np.packbits(bits, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(packed), faiss.swig_ptr(packed))
    # SWIG keeps the raw pointer only (keepalive: our own attribute on the SWIG object)
    selector.keepalive = packed  # type: ignore[attr-defined]
    return selector


def tuned_plan(bands: Sequence[dict[str, Any]], fraction: float) -> tuple[bool, int | None] | None:
    """(exact?, tuned efSearch / nprobe) for a search allowing `fraction` of a segment, from
    the tuned share at or below it (a smaller share needs the wider search); None below the
    smallest tuned share (the fixed rules decide). Exact where the tuning found no value that
    kept recall more cheaply, or where its timing, scaled to this share, is the lower."""
    below = [band for band in bands if band["fraction"] <= fraction]
    if not below:
        return None
    band = max(below, key=lambda tuned: tuned["fraction"])
    value = band.get("ef_search", band.get("nprobe"))
    if value is None:
        return True, None
    if band["exact_ms"] is None:  # too many rows to compare exactly: never timed
        return False, int(value)
    exact_ms = band["exact_ms"] * fraction / band["fraction"]
    return exact_ms <= band["selector_ms"], int(value)


def _rows(segment: Segment, bits: np.ndarray) -> np.ndarray:
    """Storage rows of the ids set in `bits`, ascending."""
    return segment.rows_of(set_ids(bits))


def set_ids(bits: np.ndarray) -> np.ndarray:
    """The ids set in a packed bitmap, ascending."""
    # numpy's nonzero is ~10x faster over bool than over the uint8 unpackbits returns
    return np.flatnonzero(np.unpackbits(bits, bitorder="little").view(bool))


def _complete(ids: np.ndarray, want: int) -> bool:
    """Every query found `want` hits (FAISS puts its -1 pads last)."""
    return bool((ids[:, want - 1] >= 0).all())


def _is_set(bits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Whether each id is set in the packed bitmap (little bit order); -1 pads are not."""
    inside = (ids >= 0) & (ids < len(bits) * 8)
    safe = np.where(inside, ids, 0)
    is_set: np.ndarray = inside & ((bits[safe >> 3] >> (safe & 7)) & 1).astype(bool)
    return is_set


def _post_filtered(
    segment: Segment,
    bits: np.ndarray,
    queries: np.ndarray,
    want: int,
    excluded: int,
    nprobe: int,
    ef_search: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The segment searched unfiltered for want + excluded, the ids not in `bits` dropped;
    None where a query kept fewer than `want` (an ANN search can return fewer than asked)."""
    wider = min(want + excluded, len(segment.ids))
    params = search_parameters(segment.inner, None, nprobe, max(ef_search, wider))
    distances, ids = segment.index.search(queries, wider, params=params)
    kept = _is_set(bits, ids)
    if kept[:, :want].all():  # nothing left out ranked in the top `want` (the usual case)
        return distances[:, :want], ids[:, :want]
    if (kept.sum(axis=1) < want).any():
        return None
    first = np.argsort(~kept, axis=1, kind="stable")[:, :want]  # kept ones, in rank order
    return np.take_along_axis(distances, first, axis=1), np.take_along_axis(ids, first, axis=1)


def filtered_search(
    segment: Segment,
    bits: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str,
    *,
    nprobe: int,
    ef_search: int,
    exact_max_rows: int | None = None,
    bands: Sequence[dict[str, Any]] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of one segment among the ids set in `bits` (segment_bits: allowed, live in it;
    at least one).

    `bands` are the segment's filtered-search tunings (index/filtered_tuning.py), where it
    has them; without, the fixed rules above choose.
    """
    matching = int(np.bitwise_count(bits.view(np.uint64)).sum())
    want = min(k, matching)
    excluded = len(segment.ids) - matching  # stored but not allowed (tombstoned included)
    room = POSTFILTER_MAX_EXCLUDED
    if isinstance(segment.inner, faiss.IndexHNSW):
        room = min(room, ef_search - want)  # within the unfiltered beam: no wider walk
    if excluded <= room:
        found = _post_filtered(segment, bits, queries, want, excluded, nprobe, ef_search)
        if found is not None:
            return found
    fraction = matching / len(segment.ids)
    within_rows = matching <= (EXACT_MAX_ROWS if exact_max_rows is None else exact_max_rows)
    plan = tuned_plan(bands, fraction) if bands else None
    if plan is None:
        share = (
            EXACT_MAX_FRACTION_IN_PLACE if reads_in_place(segment, queries) else EXACT_MAX_FRACTION
        )
        cheap = fraction <= share or matching * queries.shape[1] <= EXACT_MAX_FLOATS
        tuned_value = None
    else:
        cheap, tuned_value = plan
    if cheap and within_rows:
        return exact_search(segment, _rows(segment, bits), queries, want, metric)
    selector = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
    inner = segment.inner
    ivf = segment.ivf
    is_hnsw = isinstance(inner, faiss.IndexHNSW)
    if tuned_value is not None:
        ef, probes = max(tuned_value, want), tuned_value
    else:
        ef = math.ceil(max(ef_search, MIN_FILTERED_EF_SEARCH, want) / fraction)
        probes = math.ceil(nprobe / fraction)
    ef = min(MAX_EF_SEARCH, ef)
    probes = nprobe if ivf is None else min(ivf.nlist, probes)
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
            return exact_search(segment, _rows(segment, bits), queries, want, metric)
