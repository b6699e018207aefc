"""OpenMP threads for a search: one for a handful of queries, all of them for a batch.

FAISS parallelises over queries, so a single query runs on one thread whatever the
setting; but every search opens an OpenMP parallel region, and the idle threads then
spin-wait for the next one (libgomp's default), which cost a searching web process about
2.3 ms of CPU per search on 2 cores, more than the search itself. `omp_set_num_threads` sets the
calling thread's own value, so a request thread narrowing itself leaves a batch job (an
evaluation, a build) in another thread its full width.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import faiss

PARALLEL_MIN_QUERIES = 16
"""Queries from which a search uses every OpenMP thread (below it, one)."""


@contextmanager
def search_threads(query_count: int) -> Iterator[None]:
    """Run the enclosed FAISS calls on one thread when there are few queries."""
    if query_count >= PARALLEL_MIN_QUERIES:
        yield
        return
    width = faiss.omp_get_max_threads()
    if width == 1:
        yield
        return
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(width)
