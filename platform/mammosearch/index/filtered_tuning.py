"""Filtered-search parameters tuned when an ANN segment is sealed, per share of it allowed.

A filtered HNSW walk or IVF scan needs a wider beam (efSearch) or more lists (nprobe) than an
unfiltered one, and how much wider depends on the data: scaling the unfiltered value by
1 / fraction kept recall but cost x7 the unfiltered latency at 10% allowed, and a fixed
gentler rule (1 / sqrt(fraction)) fell to recall 0.92 on other data. So, for each share in
FRACTIONS, a random set of that share of the segment's rows is allowed and:

- the smallest efSearch / nprobe whose recall@10 against exact filtered search, on the
  held-out tuning queries, reaches the tuning target is found (climbing TUNING_STEPS);
- that search and the exact comparison of the allowed vectors are both timed, one query at a
  time on one thread, as the product searches: each timed query with its own allowed set of
  that share, as each request brings its own filter (one set for every query kept the
  allowed vectors in cache and timed exact comparison at 3% allowed at half its cost in
  the bench, where it lost to the walk);
- the climb stops once the selector search costs more than the exact comparison: exact
  search is then the answer for that share (knob None).

At search time (index/filtered.py) a share between two tuned ones uses the lower one's
value (a smaller share needs the wider search) and whichever side its timings favour.
Random allowed sets are what the tuning can know; filters that follow the data (one side,
one view) are covered by the top-up that widens a short search and by the exact side.
"""

from __future__ import annotations

import math
import time
from typing import Any

import faiss
import numpy as np

from mammosearch.index.filtered import EXACT_MAX_ROWS, bitmap_selector, exact_search
from mammosearch.index.segments import Segment, faiss_metric, search_parameters
from mammosearch.index.threads import search_threads

FRACTIONS = (0.01, 0.03, 0.1, 0.3, 0.9)
"""Shares of a segment allowed at which filtered search is tuned (0.9: leaving out one
patient or a few, the commonest filter)."""
CHUNK_ROWS = 32_768
TIMED_QUERIES = 32
"""Queries timed per side and share (the recall is measured on every tuning query)."""


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    hits = 0.0
    for found_row, exact_row in zip(found, exact, strict=True):
        truth = exact_row[exact_row >= 0]
        hits += len(np.intersect1d(found_row[found_row >= 0], truth)) / max(1, len(truth))
    return hits / max(1, len(found))


def _ms_per_query(search: Any, queries: np.ndarray, allowed: list[Any]) -> float:
    """Mean wall milliseconds of `search(one_query, its_allowed)` over the queries (query i
    with allowed[i]), on one thread."""
    with search_threads(1):
        search(queries[:1], allowed[-1])  # the code paths' first-call costs, not timed
        started = time.perf_counter()
        for row in range(len(queries)):
            search(queries[row : row + 1], allowed[row])
        return (time.perf_counter() - started) * 1000 / max(1, len(queries))


def _selector(segment: Segment, rows: np.ndarray) -> faiss.IDSelectorBitmap:
    bits = np.zeros(int(segment.ids.max()) + 1, dtype=bool)
    bits[segment.ids[rows]] = True
    return bitmap_selector(bits)


def _nearest_rows(
    queries: np.ndarray, vectors: np.ndarray, rows: np.ndarray, k: int, metric: str
) -> np.ndarray:
    """Exact top-k among `vectors[rows]` per query, as rows of `vectors`; brute force over
    slices of CHUNK_ROWS, so 90% of a million 1280-d vectors is never copied at once."""
    found_scores, found_rows = [], []
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[start : start + CHUNK_ROWS]
        scores, positions = faiss.knn(
            queries, vectors[chunk], min(k, len(chunk)), metric=faiss_metric(metric)
        )
        found_scores.append(scores)
        found_rows.append(chunk[positions])
    scores, candidates = np.hstack(found_scores), np.hstack(found_rows)
    order = np.argsort(scores if metric == "l2" else -scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(candidates, order, axis=1)


def tune_filtered(
    segment: Segment,
    vectors: np.ndarray,
    queries: np.ndarray,
    metric: str,
    knob: str,
    steps: list[int],
    target: float,
    k: int,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """[{"fraction", knob (None: exact), "recall@10", "selector_ms", "exact_ms"}] per share
    in FRACTIONS with at least k allowed rows (exact_ms None: more rows than exact search
    would ever compare); `vectors` are the segment's, in `segment.ids`
    order; `steps` the values to climb, from the unfiltered tuned one up."""
    rng = np.random.default_rng(seed)
    count = len(segment.ids)
    timed = queries[:TIMED_QUERIES]
    inner = segment.inner
    bands: list[dict[str, Any]] = []
    for fraction in FRACTIONS:
        allowed_count = round(fraction * count)
        if allowed_count < k:
            continue
        rows = np.sort(rng.choice(count, allowed_count, replace=False))
        exact = segment.ids[_nearest_rows(queries, vectors, rows, k, metric)]
        timed_rows = [
            np.sort(rng.choice(count, allowed_count, replace=False)) for _ in range(len(timed))
        ]
        # Search never compares more than EXACT_MAX_ROWS vectors exactly: no need to time it
        exact_ms = math.inf
        if allowed_count <= EXACT_MAX_ROWS:
            exact_ms = _ms_per_query(
                lambda one, its_rows: exact_search(segment, its_rows, one, k, metric),
                timed,
                timed_rows,
            )
        selector = _selector(segment, rows)
        timed_selectors = [_selector(segment, its_rows) for its_rows in timed_rows]
        band: dict[str, Any] = {
            "fraction": fraction,
            knob: None,
            "exact_ms": round(exact_ms, 4) if math.isfinite(exact_ms) else None,
        }
        for step in steps:

            def walk(one: np.ndarray, its_selector: Any, step: int = step) -> Any:
                params = search_parameters(
                    inner, its_selector, nprobe=step, ef_search=step, outer=segment.index
                )
                return segment.index.search(one, k, params=params)

            selector_ms = _ms_per_query(walk, timed, timed_selectors)
            params = search_parameters(
                inner, selector, nprobe=step, ef_search=step, outer=segment.index
            )
            if selector_ms > exact_ms:
                break  # exact comparison is cheaper from here on, and exact
            _, found = segment.index.search(queries, k, params=params)
            recall = _recall(found, exact)
            if recall >= target:
                band.update(
                    {
                        knob: step,
                        "recall@10": round(recall, 4),
                        "selector_ms": round(selector_ms, 4),
                    }
                )
                break
        bands.append(band)
    return bands
