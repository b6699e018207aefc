"""A single-query search narrows only its own thread's OpenMP width, and restores it."""

from __future__ import annotations

import threading

import faiss
import numpy as np

from mammosearch.index import ShardedIndex
from mammosearch.index import filtered as filtered_module
from mammosearch.index.threads import PARALLEL_MIN_QUERIES, search_threads


def test_few_queries_run_on_one_thread_and_the_width_comes_back() -> None:
    faiss.omp_set_num_threads(2)
    seen: dict[str, int] = {}

    def other_thread() -> None:
        faiss.omp_set_num_threads(2)
        with search_threads(1):
            seen["inside"] = faiss.omp_get_max_threads()
            barrier.wait(timeout=30)  # the main thread reads its width meanwhile
            barrier.wait(timeout=30)
        seen["after"] = faiss.omp_get_max_threads()

    barrier = threading.Barrier(2)
    worker = threading.Thread(target=other_thread)
    worker.start()
    barrier.wait(timeout=30)
    seen["main meanwhile"] = faiss.omp_get_max_threads()
    barrier.wait(timeout=30)
    worker.join(timeout=30)
    assert seen == {"inside": 1, "main meanwhile": 2, "after": 2}
    with search_threads(PARALLEL_MIN_QUERIES):
        assert faiss.omp_get_max_threads() == 2, "a batch keeps every thread"


def test_leaving_out_a_few_ids_walks_the_graph_instead_of_gathering_every_vector(
    tmp_path, monkeypatch
) -> None:
    """99.9% allowed (the query's patient left out) must not take the exact path, which
    gathered every allowed vector: 28 ms against 0.3 for the walk on 20,000 images."""
    rng = np.random.default_rng(0)
    # 512-d: 3,000 rows are past EXACT_MAX_FLOATS, as an archive's 20,000 x 1280 are.
    # Clustered, as embeddings are: on unstructured noise a walk that keeps the recall floor
    # visits nearly every node, and the sealing-time tuning rightly picks exact comparison.
    centres = rng.standard_normal((40, 512)).astype(np.float32) * 3
    drawn = centres[rng.integers(0, 40, 3010)] + rng.standard_normal((3010, 512)).astype(np.float32)
    vectors, queries = drawn[:3000], drawn[3000:]
    ids = np.arange(1, 3001, dtype=np.int64)
    index = ShardedIndex(tmp_path / "idx", 512, "cosine", segment_size=1000, factory="HNSW32")
    index.replace_all(ids, vectors)
    gathered: list[int] = []
    exact = filtered_module.exact_search

    def counted(segment, rows, queries, k, metric):  # type: ignore[no-untyped-def]
        gathered.append(len(rows))
        return exact(segment, rows, queries, k, metric)

    monkeypatch.setattr(filtered_module, "exact_search", counted)
    mask = np.ones(3001, dtype=bool)
    mask[[0, 17, 18, 19]] = False
    _, found = index.search(queries, 10, id_filter=mask)
    assert (found >= 0).sum(axis=1).tolist() == [10] * len(queries)
    assert not np.isin(found, [17, 18, 19]).any()
    assert gathered == []
    nearest = faiss.knn(
        queries / np.linalg.norm(queries, axis=1, keepdims=True),
        np.delete(vectors, [16, 17, 18], axis=0)
        / np.linalg.norm(np.delete(vectors, [16, 17, 18], axis=0), axis=1, keepdims=True),
        10,
        metric=faiss.METRIC_INNER_PRODUCT,
    )[1]
    truth = np.delete(ids, [16, 17, 18])[nearest]
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95
    few = np.zeros(3001, dtype=bool)
    few[ids[::100]] = True  # 1%: the exact path, and only over the allowed rows
    index.search(queries[:1], 10, id_filter=few)
    assert gathered and sum(gathered) == few.sum()
