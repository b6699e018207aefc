"""One main index per (space, metric): deltas merge into it, it retrains as it grows, and a
merge or rebuild is swapped in whole while searches and writes go on."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

from mammosearch.index import ShardedIndex, factory_choice
from mammosearch.index.factory_choice import choose_factory, nlist_for
from mammosearch.index.writer import Writer

DIM = 16


def clustered(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(5).standard_normal((30, DIM)).astype(np.float32) * 3
    return (centres[rng.integers(0, 30, count)] + rng.standard_normal((count, DIM))).astype(
        np.float32
    )


def exact_ids(ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    _, rows = faiss.knn(queries, vectors, k, metric=faiss.METRIC_L2)
    return ids[rows]


def main_entry(index: ShardedIndex) -> dict:
    [entry] = [e for e in index._reader.view.manifest["segments"] if e["kind"] == "sealed"]
    return entry


def test_merged_main_index_equals_the_union_of_its_parts(tmp_path):
    """Four batches merged into one IVF main index trained once: every vector is in it once,
    stored exactly, and with every list probed it answers as exact search over the union."""
    ids = np.arange(10, 1110, dtype=np.int64)
    vectors = clustered(len(ids))
    index = ShardedIndex(
        tmp_path / "ix", DIM, "l2", segment_size=300, factory="IVF16,Flat", nprobe=16
    )
    for start in range(0, len(ids), 300):
        index.add(ids[start : start + 300], vectors[start : start + 300])
    assert index.stats()["delta_segments"] == 1  # the last 200: below segment_size
    assert index.merge() is True
    stats = index.stats()
    assert (stats["sealed_segments"], stats["delta_segments"]) == (1, 0)
    entry = main_entry(index)
    assert entry["factory"] == "IVF16,Flat" and entry["count"] == 1100
    assert entry["trained_on"] == 300  # extended three times with the quantizer of the first
    np.testing.assert_array_equal(np.sort(index._reader.view.segments[0].ids), ids)
    np.testing.assert_allclose(index.get_vectors(ids), vectors, rtol=1e-6)
    queries = clustered(20, seed=3)
    np.testing.assert_array_equal(
        index.search(queries, 10)[1], exact_ids(ids, vectors, queries, 10)
    )


def test_a_trained_main_index_is_retrained_when_the_archive_has_grown(tmp_path):
    """IVF trained on 300 vectors is retrained (new quantizer) once it would hold 4x that."""
    vectors = clustered(1500)
    index = ShardedIndex(tmp_path / "ix", DIM, "l2", segment_size=300, factory="IVF16,Flat")
    trained = []
    for start in range(0, 1500, 300):
        index.add(np.arange(start, start + 300), vectors[start : start + 300])
        trained.append(main_entry(index)["trained_on"])
    assert trained == [300, 300, 300, 1200, 1200]


def test_auto_factory_grows_from_exact_to_hnsw_to_compressed(tmp_path, monkeypatch):
    """ "auto": exact while small, HNSW above the threshold, IVF-PQ with exact re-ranking
    beyond the memory budget; answers stay complete and close to exact at each step."""
    monkeypatch.setattr(factory_choice, "EXACT_MAX_CELLS", 600 * DIM)
    assert choose_factory(600, DIM) == "Flat"
    assert choose_factory(601, DIM, memory_bytes=1 << 30) == "HNSW32"
    assert choose_factory(10**6, 256, memory_bytes=1 << 20) == f"IVF{nlist_for(10**6)},PQ64,RFlat"

    vectors = clustered(4000, seed=1)
    ids = np.arange(4000, dtype=np.int64)
    queries = clustered(30, seed=2)
    memory = {"value": 1 << 30}
    index = ShardedIndex(
        tmp_path / "ix", DIM, "l2", segment_size=500, factory="auto", memory_bytes=memory["value"]
    )
    seen = []
    for stop, budget in ((500, 1 << 30), (1000, 1 << 30), (4000, 4000 * 40)):
        index.memory_bytes = budget
        start = int(index.ntotal)
        index.add(ids[start:stop], vectors[start:stop])
        seen.append(main_entry(index)["factory"])
        found = index.search(queries, 10)[1]
        truth = exact_ids(ids[:stop], vectors[:stop], queries, 10)
        hits = np.mean([len(set(f) & set(t)) for f, t in zip(found, truth, strict=True)]) / 10
        assert hits >= 0.9, (seen[-1], hits)
        _, filtered = index.search(queries, 10, id_filter=ids[:stop:50])
        assert (filtered >= 0).sum(axis=1).min() == 10
    assert seen == ["Flat", "HNSW32", f"IVF{nlist_for(4000)},PQ4,RFlat"]


def test_writes_during_a_merge_are_kept(tmp_path, monkeypatch):
    """Ids removed or re-added while a merge builds are right after it commits."""
    vectors = clustered(900, seed=4)
    index = ShardedIndex(tmp_path / "ix", DIM, "l2", segment_size=10_000, factory="HNSW16")
    index.add(np.arange(600), vectors[:600])
    index.merge()
    index.add(np.arange(600, 800), vectors[600:800])
    other = ShardedIndex(tmp_path / "ix", DIM, "l2", segment_size=10_000, factory="HNSW16")
    original_build = Writer._build_main

    def build_then_race(self, *args, **kwargs):
        built = original_build(self, *args, **kwargs)
        other.remove([5, 650])  # one in the main index, one in the merged delta
        other.add(np.arange(800, 900), vectors[800:900])  # a new delta, not merged
        other.remove([7])
        other.add([7], vectors[7:8] + 5)  # re-added with another vector
        return built

    monkeypatch.setattr(Writer, "_build_main", build_then_race)
    assert index.merge() is True
    monkeypatch.undo()
    live = np.setdiff1d(np.arange(900), [5, 650])
    np.testing.assert_array_equal(index.ids(), live)
    expected = vectors.copy()
    expected[7] += 5
    np.testing.assert_allclose(index.get_vectors(live), expected[live], rtol=1e-6)
    _, found = index.search(expected[[7, 850]], 1)
    assert found[:, 0].tolist() == [7, 850]
    assert not np.isin([5, 650], index.search(vectors[[5, 650]], 5)[1]).any()
    index.merge()  # the re-added 7 collides with its tombstoned copy: rebuilt whole
    assert index.stats()["tombstones"] == 0 and index.stats()["vectors"] == len(live)


def test_searches_never_see_a_partial_index_while_it_merges_and_rebuilds(tmp_path):
    """A reader reloading in a loop sees only whole versions: every vector written before
    each version is found, with k hits, while a writer merges, retrains and compacts."""
    vectors = clustered(3000, seed=6)
    root = tmp_path / "ix"
    writer = ShardedIndex(root, DIM, "l2", segment_size=250, factory="IVF8,Flat")
    writer.add(np.arange(250), vectors[:250])
    reader = ShardedIndex(root, DIM, "l2", segment_size=250, factory="IVF8,Flat", nprobe=8)
    problems: list[str] = []
    stop = threading.Event()

    def search_forever() -> None:
        while not stop.is_set():
            reader.reload_if_changed()
            live = reader.ids()
            probe = live[:: max(1, len(live) // 20)]
            _, found = reader.search(vectors[probe], 10)
            if (found < 0).any():
                problems.append(f"v{reader.version}: short answer")
            if not (found[:, 0] == probe).all():
                problems.append(f"v{reader.version}: a stored vector is not its own neighbour")

    thread = threading.Thread(target=search_forever)
    thread.start()
    try:
        for start in range(250, 3000, 125):
            writer.add(np.arange(start, start + 125), vectors[start : start + 125])
        writer.compact()
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert main_entry(writer)["trained_on"] >= 1000  # it was retrained on the way
    reader.reload_if_changed()
    assert reader.ntotal == 3000


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF8,Flat", "auto"])
def test_a_second_process_sees_the_merged_main_index(tmp_path, factory):
    """A reader opened after merges answers as the writer does (memory-mapped files)."""
    vectors = clustered(1200, seed=8)
    writer = ShardedIndex(tmp_path / "ix", DIM, "cosine", segment_size=400, factory=factory)
    for start in range(0, 1200, 200):
        writer.add(np.arange(start, start + 200), vectors[start : start + 200])
    reader = ShardedIndex(tmp_path / "ix", DIM, "cosine", segment_size=400, factory=factory)
    queries = clustered(10, seed=9)
    for got, expected in zip(reader.search(queries, 5), writer.search(queries, 5), strict=True):
        np.testing.assert_array_equal(got, expected)
    assert reader.stats()["sealed_segments"] == 1
