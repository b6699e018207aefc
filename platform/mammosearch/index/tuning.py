"""Search parameters tuned when a segment is sealed, so an ANN segment keeps a recall floor.

For an HNSW segment the smallest efSearch, for an IVF segment the smallest nprobe, whose
recall@10 against exact search on a sample of the segment's own vectors is at least
RECALL_FLOOR. The result is kept in the segment's manifest entry (`search`), used by every
search of that segment and shown by `mammosearch index stats`. A fixed default cannot do
this: the recall of one efSearch varies with the dimension and the data (on 256-d
synthetic clusters efSearch 64 gave 0.28, on 32-d clusters above 0.95).
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from mammosearch.index.filtered_tuning import tune_filtered
from mammosearch.index.segments import Segment, faiss_metric, search_parameters

RECALL_FLOOR = 0.95
# Tuned a little above the floor: the sample is finite, and a search merges several
# segments' answers, so a segment exactly at 0.95 leaves new queries just below it.
TUNING_TARGET = RECALL_FLOOR + 0.03
FILTERED_TUNING_TARGET = RECALL_FLOOR + 0.01
"""The filtered walks' target: a walk that skips rejected nodes levels off below 0.98 at a
few percent allowed (HNSW32 at 3% of 100,000: 0.964 at efSearch 128, 0.968 at 256), so
0.98 always chose exact comparison there, at x1.5-2 the walk's cost. The recall of 256
tuning queries has a standard error of about 0.005, so 0.01 is two of them."""
RECALL_K = 10
SAMPLE_QUERIES = 256
STEPS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096)
"""Tried in order; steps of 1.5x, since a doubling can overshoot: at 1M vectors efSearch 64
gave recall 0.977 and 128 0.995 at 1.7x the latency, where 96 gives 0.989."""


def tuned_parameter(inner: faiss.Index) -> str | None:
    """The knob an index type has: nprobe (IVF), ef_search (HNSW), None (exhaustive)."""
    if faiss.try_extract_index_ivf(inner) is not None:
        return "nprobe"
    if isinstance(inner, faiss.IndexHNSW):
        return "ef_search"
    return None


def _recall(found: np.ndarray, exact: np.ndarray, own: np.ndarray, k: int) -> float:
    """Mean share of each query's k exact neighbours (itself left out) that were found."""
    hits = 0.0
    for found_row, exact_row, query_id in zip(found, exact, own, strict=True):
        truth = [i for i in exact_row if i != query_id and i >= 0][:k]
        answer = {i for i in found_row if i != query_id and i >= 0}
        hits += len(answer.intersection(truth)) / max(1, len(truth))
    return hits / max(1, len(own))


def held_out_order(count: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """A permutation of `count` rows whose last `held` rows are the tuning queries; (order,
    held). The segment is built without them, tuned on them, then they are added."""
    held = min(SAMPLE_QUERIES, count // 10)
    order = np.random.default_rng(seed).permutation(count)
    return order, held


def tune_segment(
    index: faiss.IndexIDMap2,
    ids: np.ndarray,
    vectors: np.ndarray,
    queries: np.ndarray,
    metric: str,
    target: float = TUNING_TARGET,
    filtered: bool = True,
    filtered_target: float = FILTERED_TUNING_TARGET,
) -> dict[str, Any] | None:
    """{knob: value, "recall@10": measured, "sample": queries} for an ANN segment holding
    `vectors` (prepared, in `ids` order), measured with held-out `queries` (not in the
    index: a stored vector as its own query finds its neighbours through its own node and
    overstates recall); None for exhaustive segments (Flat, PQ, SQ). With `filtered`, also
    "filtered": the values filtered search uses per share allowed (filtered_tuning.py)."""
    inner = faiss.downcast_index(index.index)
    knob = tuned_parameter(inner)
    if knob is None or len(ids) <= RECALL_K or len(queries) == 0:
        return None
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    _, exact_rows = faiss.knn(queries, vectors, RECALL_K, metric=faiss_metric(metric))
    exact = ids[exact_rows]
    ivf = faiss.try_extract_index_ivf(inner)
    steps = [step for step in STEPS if ivf is None or step < ivf.nlist]
    if ivf is not None:
        steps.append(ivf.nlist)  # every list: the exhaustive end of IVF
    no_query_id = np.full(len(queries), -1, dtype=np.int64)
    measured: dict[str, Any] = {}
    for step in steps:
        params = search_parameters(inner, None, nprobe=step, ef_search=step)
        _, found = index.search(queries, RECALL_K, params=params)
        recall = _recall(found, exact, no_query_id, RECALL_K)
        measured = {knob: step, "recall@10": round(recall, 4), "sample": len(queries)}
        if recall >= target:
            break
    if filtered:
        climb = [step for step in steps if step >= measured[knob]]
        segment = Segment(file="", index=index, ids=ids, factory="")
        measured["filtered"] = tune_filtered(
            segment, vectors, queries, metric, knob, climb, filtered_target, RECALL_K
        )
    return measured
