"""Search time against k: single-query exact searches on the evaluator's own flat index."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from mammosearch.evaluate.evaluator import _searchable

TIMED_QUERIES = 200
WARMUP_SEARCHES = 3


def search_ms_by_k(
    vectors: np.ndarray, metric: str, ks: Sequence[int], max_queries: int = TIMED_QUERIES
) -> dict[int, float]:
    """Median milliseconds of one `index.search(q, k)` per k, over up to `max_queries` queries.

    The same index and timing as the evaluator's `search_ms_median` (which is taken at the
    largest k only), so the curve ends where the summary table's number is.
    """
    matrix, index = _searchable(vectors, metric)
    n_images = matrix.shape[0]
    if n_images == 0:
        return {}
    step = max(1, n_images // max_queries)
    queries = list(range(0, n_images, step))[:max_queries]
    for query in queries[:WARMUP_SEARCHES]:
        index.search(matrix[query : query + 1], min(max(ks), n_images))
    medians: dict[int, float] = {}
    for k in ks:
        depth = min(int(k), n_images)
        elapsed_ms = np.empty(len(queries))
        for position, query in enumerate(queries):
            started = time.perf_counter()
            index.search(matrix[query : query + 1], depth)
            elapsed_ms[position] = (time.perf_counter() - started) * 1000.0
        medians[int(k)] = float(np.median(elapsed_ms))
    return medians
