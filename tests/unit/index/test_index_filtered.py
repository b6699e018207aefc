"""Filtered search never comes back short, for every factory, at every selectivity.

Each factory is checked at 0.1%, 1%, 10% and 50% allowed and with fewer matches than k:
every query gets min(k, matches) hits, and the hits agree with exact filtered search
(recall >= 0.95). The threshold for exact comparison is lowered so that the selector path
(scaled efSearch / nprobe, widening) is exercised at 10% and 50% with small data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss
import numpy as np
import pytest

from mammosearch.index import ShardedIndex
from mammosearch.index.segments import load_segment

DIM = 32
COUNT = 4000
SEGMENT_SIZE = 2000
K = 10
FACTORIES = ("Flat", "HNSW32", "HNSW16,SQ8", "IVF32,Flat", "IVF16,SQ8", "SQ8", "IVF16,PQ8,RFlat")
FRACTIONS = (0.001, 0.01, 0.1, 0.5)


def clustered_vectors(count: int, seed: int = 0) -> np.ndarray:
    """Vectors around 40 centres: neighbourhoods as real embeddings have (ANN can work)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM)).astype(np.float32) * 3
    labels = rng.integers(0, len(centres), count)
    return centres[labels] + rng.standard_normal((count, DIM)).astype(np.float32)


def exact_filtered(ids, vectors, allowed, queries, k, metric):
    """Brute force over the allowed vectors: the answer to compare with."""
    keep = np.isin(ids, allowed)
    subset_ids, subset = ids[keep], np.array(vectors[keep], dtype=np.float32)
    queries = np.array(queries, dtype=np.float32)
    if metric == "cosine":
        faiss.normalize_L2(subset)
        faiss.normalize_L2(queries)
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    _, positions = faiss.knn(queries, subset, min(k, len(subset)), metric=faiss_metric)
    return subset_ids[positions]


def recall(found: np.ndarray, expected: np.ndarray) -> float:
    hits = sum(
        len(set(row[row >= 0]) & set(truth)) for row, truth in zip(found, expected, strict=True)
    )
    return hits / expected.size


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.arange(1, COUNT + 1, dtype=np.int64) * 3  # sparse ids, as after deletions
    # The queries come from the archive's own clusters, held out of it: a query mammogram
    # is like the archive's, and the recall floor (unfiltered and filtered) is tuned for
    # such queries. From other clusters, even unfiltered HNSW recall is 0.5-0.7 here.
    drawn = clustered_vectors(COUNT + 20)
    return ids, drawn[:COUNT], drawn[COUNT:]


@pytest.fixture(scope="module", params=FACTORIES)
def built(request, tmp_path_factory, data) -> tuple[str, ShardedIndex]:
    """A main index of the factory plus small Flat deltas, 20 ids tombstoned."""
    ids, vectors, _ = data
    index = ShardedIndex(
        tmp_path_factory.mktemp("filtered") / "idx",
        DIM,
        "l2",
        segment_size=SEGMENT_SIZE,
        factory=request.param,
        exact_filter_rows=100,
    )
    index.add(ids[:3900], vectors[:3900])  # merged into the main index at once
    index.add(ids[3900:], vectors[3900:])
    index.remove(ids[::200])
    index.add(ids[::400], vectors[::400])  # half of them come back, in a new delta
    return request.param, index


def live_ids(data) -> np.ndarray:
    ids = data[0]
    return np.setdiff1d(ids, np.setdiff1d(ids[::200], ids[::400]))


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_filtered_search_returns_k_hits_that_agree_with_exact_search(built, data, fraction):
    """At 0.1%, 1%, 10% and 50% allowed: k hits per query, recall >= 0.95 against exact."""
    factory, index = built
    ids, vectors, queries = data
    rng = np.random.default_rng(int(fraction * 1000))
    candidates = live_ids(data)
    allowed = rng.choice(candidates, max(1, int(len(candidates) * fraction)), replace=False)
    _, found = index.search(queries, K, id_filter=allowed)
    want = min(K, len(allowed))
    assert (np.count_nonzero(found >= 0, axis=1) == want).all(), factory
    assert np.isin(found[found >= 0], allowed).all()
    expected = exact_filtered(ids, vectors, allowed, queries, K, "l2")
    assert recall(found, expected) >= 0.95, (factory, fraction)


def _leave_out_each_querys_nearest(index, data, monkeypatch, count=4) -> list[tuple]:
    """Search each query alone, leaving out its `count` nearest live neighbours (the worst
    case of leaving out the query's own patient): k hits, none left out nor tombstoned, as
    exact filtered search finds them. Returns the IDSelectorBitmaps built meanwhile."""
    ids, vectors, queries = data
    candidates = live_ids(data)
    selectors: list[tuple] = []
    real_selector = faiss.IDSelectorBitmap
    monkeypatch.setattr(
        faiss, "IDSelectorBitmap", lambda *args: selectors.append(args) or real_selector(*args)
    )
    nearest = exact_filtered(ids, vectors, candidates, queries, count, "l2")
    found_rows, expected_rows = [], []
    for query, left_out in zip(queries, nearest, strict=True):
        allowed = np.setdiff1d(candidates, left_out)
        _, found = index.search(query[None, :], K, id_filter=allowed)
        assert (found >= 0).sum() == K
        assert np.isin(found, allowed).all()
        found_rows.append(found[0])
        expected_rows.append(exact_filtered(ids, vectors, allowed, query[None, :], K, "l2")[0])
    assert recall(np.array(found_rows), np.array(expected_rows)) >= 0.95
    return selectors


def test_leaving_out_a_few_ids_searches_unfiltered_and_drops_them(built, data, monkeypatch):
    """Every factory, with tombstones: no selector is built, except for HNSW, whose beam
    here (tuned efSearch) has no room for k + the left-out and tombstoned ids."""
    factory, index = built
    selectors = _leave_out_each_querys_nearest(index, data, monkeypatch)
    if not factory.startswith("HNSW"):
        assert selectors == [], factory


def test_hnsw_leaves_out_a_few_ids_without_a_selector_within_its_beam(
    tmp_path, data, monkeypatch
) -> None:
    ids, vectors, _ = data
    index = ShardedIndex(
        tmp_path / "idx", DIM, "l2", segment_size=SEGMENT_SIZE, factory="HNSW32", ef_search=64
    )
    index.add(ids, vectors)
    index.remove(ids[::200])  # 20 tombstones (as `built`): 10 + 4 + 20 fit in efSearch 64
    index.add(ids[::400], vectors[::400])
    assert _leave_out_each_querys_nearest(index, data, monkeypatch) == []


def test_a_filter_matching_fewer_than_k_images_returns_all_of_them(built, data):
    """Three allowed ids (one of them tombstoned, one unknown): exactly the two live ones."""
    _, index = built
    ids, _, queries = data
    tombstoned = ids[200]  # removed, never re-added
    allowed = np.array([ids[5], ids[2500], tombstoned, 10**7])
    _, found = index.search(queries, K, id_filter=allowed)
    assert (np.sort(found[:, :2], axis=1) == sorted([ids[5], ids[2500]])).all()
    assert (found[:, 2:] == -1).all()


def test_a_boolean_mask_filters_like_the_ids_it_marks(built, data):
    """id_filter may be a boolean array indexed by id (what the search service passes)."""
    _, index = built
    _, _, queries = data
    allowed = live_ids(data)[::7]
    mask = np.zeros(int(allowed.max()) + 1, dtype=bool)  # shorter than the largest id
    mask[allowed] = True
    by_ids = index.search(queries, K, id_filter=allowed)
    by_mask = index.search(queries, K, id_filter=mask)
    np.testing.assert_array_equal(by_ids[1], by_mask[1])
    np.testing.assert_allclose(by_ids[0], by_mask[0], rtol=1e-5)


def test_cosine_filtered_search_is_complete_on_hnsw(tmp_path, data):
    """Cosine (normalised vectors, inner product) takes the same paths as l2."""
    ids, vectors, queries = data
    index = ShardedIndex(
        tmp_path / "idx",
        DIM,
        "cosine",
        segment_size=SEGMENT_SIZE,
        factory="HNSW32",
        exact_filter_rows=100,
    )
    index.add(ids, vectors)
    for fraction in FRACTIONS:
        allowed = ids[:: int(1 / fraction)]
        _, found = index.search(queries, K, id_filter=allowed)
        assert (np.count_nonzero(found >= 0, axis=1) == min(K, len(allowed))).all()
        expected = exact_filtered(ids, vectors, allowed, queries, K, "cosine")
        assert recall(found, expected) >= 0.95, fraction


def test_sealed_segments_are_memory_mapped(tmp_path, data):
    """A reader maps a sealed file (it shows in the process's mappings) and reads it right."""
    ids, vectors, _ = data
    writer = ShardedIndex(tmp_path / "idx", DIM, "l2", segment_size=SEGMENT_SIZE)
    writer.add(ids[:SEGMENT_SIZE], vectors[:SEGMENT_SIZE])
    path = writer.root / writer._reader.view.manifest["segments"][0]["file"]
    segment = load_segment(path, "Flat")
    if Path("/proc/self/maps").exists():
        assert str(path) in Path("/proc/self/maps").read_text()
    np.testing.assert_allclose(segment.vectors_at(np.arange(3)), vectors[:3], rtol=1e-6)
    in_memory = load_segment(path, "Flat", mmap=False)
    np.testing.assert_array_equal(in_memory.ids, segment.ids)


def test_a_reader_in_another_process_sees_a_writers_commit(tmp_path, data):
    """A reader process with mapped segments picks up a writer's new manifest on reload."""
    ids, vectors, _ = data
    root = tmp_path / "idx"
    writer = ShardedIndex(root, DIM, "l2", segment_size=500, factory="HNSW32")
    writer.add(ids[:1000], vectors[:1000])
    np.save(tmp_path / "vectors.npy", vectors)
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        from mammosearch.index import ShardedIndex
        vectors = np.load({str(tmp_path / "vectors.npy")!r})
        reader = ShardedIndex({str(root)!r}, {DIM}, "l2", segment_size=500, factory="HNSW32")
        print(reader.ntotal, flush=True)
        sys.stdin.readline()  # the writer commits meanwhile
        print(reader.reload_if_changed(), reader.ntotal, flush=True)
        allowed = np.array([{int(ids[1500])}, {int(ids[10])}])
        print(sorted(reader.search(vectors[1500:1501], 5, id_filter=allowed)[1][0][:2].tolist()))
        """
    )
    reader = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert reader.stdout.readline().split() == ["1000"]
    writer.add(ids[1000:2000], vectors[1000:2000])
    output, _ = reader.communicate("go\n", timeout=60)
    lines = output.splitlines()
    assert lines[0].split() == ["True", "2000"]
    assert lines[1] == str(sorted([int(ids[10]), int(ids[1500])]))


@pytest.mark.parametrize("factory", ["HNSW32", "IVF32,Flat"])
def test_the_selector_path_widens_until_complete_when_exact_is_disabled(tmp_path, data, factory):
    """With no exact shortcut, scaled-then-widened efSearch / nprobe still fill k at 0.1%."""
    ids, vectors, queries = data
    index = ShardedIndex(
        tmp_path / "idx",
        DIM,
        "l2",
        segment_size=SEGMENT_SIZE,
        factory=factory,
        exact_filter_rows=0,
    )
    index.add(ids, vectors)
    for fraction in (0.001, 0.01):
        allowed = np.random.default_rng(3).choice(ids, int(COUNT * fraction), replace=False)
        _, found = index.search(queries, K, id_filter=allowed)
        assert (np.count_nonzero(found >= 0, axis=1) == min(K, len(allowed))).all()
        expected = exact_filtered(ids, vectors, allowed, queries, K, "l2")
        assert recall(found, expected) >= 0.95, fraction


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("factory", FACTORIES)
def test_exact_comparison_in_place_equals_the_gathered_copy(tmp_path, monkeypatch, metric, factory):
    """Few queries read the allowed vectors in place where the index stores them plainly;
    that must give exactly what comparing a gathered copy gives, for every factory."""
    from mammosearch.index import filtered as filtered_module

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((3000, DIM)).astype(np.float32)
    ids = np.arange(1, 3001, dtype=np.int64) * 2
    queries = rng.standard_normal((3, DIM)).astype(np.float32)
    index = ShardedIndex(tmp_path / "idx", DIM, metric, segment_size=1000, factory=factory)
    index.replace_all(ids, vectors)
    allowed = rng.choice(ids, 90, replace=False)
    # the exact path, whatever the sealing-time timings would pick for 3% allowed
    monkeypatch.setattr(filtered_module, "tuned_plan", lambda bands, fraction: (True, None))
    in_place = index.search(queries, K, id_filter=allowed)
    monkeypatch.setattr(filtered_module, "IN_PLACE_MAX_QUERIES", 0)
    gathered = index.search(queries, K, id_filter=allowed)
    np.testing.assert_array_equal(in_place[1], gathered[1])
    np.testing.assert_allclose(in_place[0], gathered[0], rtol=1e-6, atol=1e-6)
    assert np.isin(in_place[1], allowed).all()
    expected = exact_filtered(ids, vectors, allowed, queries, K, metric)
    assert recall(in_place[1], expected) == 1.0
