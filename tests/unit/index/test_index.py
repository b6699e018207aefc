"""The sharded index answers exactly as one flat FAISS index over the same live vectors."""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np
import pytest

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace
from mammosearch.index import (
    IndexMismatchError,
    ShardedIndex,
    clear_readers,
    get_reader,
    open_index,
)

DIM = 16
BATCH_SIZES = (1, 5, 13, 40, 100, 141)  # uneven appends: deltas merge and seal mid-batch


def random_vectors(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)


def fill(index: ShardedIndex, ids: np.ndarray, vectors: np.ndarray) -> None:
    start = 0
    for size in BATCH_SIZES * 10:
        if start >= len(ids):
            break
        index.add(ids[start : start + size], vectors[start : start + size])
        start += size


def flat_reference(ids, vectors, queries, k, metric):
    """One plain FAISS flat index over exactly these vectors: the answer to match."""
    vectors = np.array(vectors, dtype=np.float32)
    queries = np.array(queries, dtype=np.float32)
    if metric == "cosine":
        faiss.normalize_L2(vectors)
        faiss.normalize_L2(queries)
        reference = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    else:
        reference = faiss.IndexIDMap2(faiss.IndexFlatL2(DIM))
    reference.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
    return reference.search(queries, k)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("segment_size", [7, 64, 1000])
@pytest.mark.parametrize("with_filter", [False, True])
def test_sharded_search_equals_one_flat_index(tmp_path, metric, segment_size, with_filter):
    """Per-segment top-k merged equals one flat index, with tombstones and an id filter."""
    ids = np.arange(1000, 1300, dtype=np.int64)
    vectors = random_vectors(len(ids))
    index = ShardedIndex(tmp_path / "idx", DIM, metric, segment_size=segment_size)
    fill(index, ids, vectors)
    removed = ids[::7]
    assert index.remove(removed) == len(removed)
    live = ~np.isin(ids, removed)
    candidates = live.copy()
    id_filter = None
    if with_filter:
        id_filter = set(ids[::3].tolist()) | {999_999}  # an unknown id is harmless
        candidates &= np.isin(ids, list(id_filter))
    queries = random_vectors(9, seed=1)
    k = 10

    distances, found_ids = index.search(queries, k, id_filter=id_filter)
    expected_distances, expected_ids = flat_reference(
        ids[candidates], vectors[candidates], queries, k, metric
    )

    np.testing.assert_array_equal(found_ids, expected_ids)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-4, atol=1e-4)
    assert index.ntotal == live.sum()
    assert not np.isin(found_ids, removed).any()


def test_fewer_candidates_than_k_are_padded_with_minus_one(tmp_path):
    """Missing neighbours come back as id -1 with an infinite distance."""
    index = ShardedIndex(tmp_path / "idx", DIM, "l2", segment_size=2)
    index.add(np.arange(3), random_vectors(3))
    distances, found_ids = index.search(random_vectors(2, seed=5), k=5)
    assert (found_ids[:, 3:] == -1).all() and np.isinf(distances[:, 3:]).all()
    assert set(found_ids[0, :3]) == {0, 1, 2}
    _, none_found = index.search(random_vectors(1), k=3, id_filter=set())
    assert (none_found == -1).all()


def test_an_empty_index_searches_to_padding(tmp_path):
    """A directory never written to is an empty index, and nothing is created by reading."""
    index = ShardedIndex(tmp_path / "never-written", DIM, "cosine")
    distances, found_ids = index.search(random_vectors(1), k=2)
    assert (found_ids == -1).all() and (distances == -np.inf).all()
    assert index.ntotal == 0 and index.version == 0
    assert not (tmp_path / "never-written").exists()


def test_re_adding_the_same_ids_adds_nothing(tmp_path):
    """An append re-run (or duplicated within a batch) adds each id once and writes nothing new."""
    index = ShardedIndex(tmp_path / "idx", DIM, "l2", segment_size=10)
    ids = np.arange(25)
    vectors = random_vectors(25)
    assert index.add(ids, vectors) == 25
    version = index.version
    assert index.add(ids, vectors) == 0
    assert index.add(ids[:5], vectors[:5] + 1.0) == 0
    assert index.version == version
    assert index.add(np.array([30, 30, 31]), random_vectors(3, seed=2)) == 2
    assert index.ntotal == 27
    np.testing.assert_array_equal(index.ids(), np.r_[np.arange(25), 30, 31])


def test_re_adding_a_removed_id_supersedes_the_old_vector(tmp_path):
    """Remove then add the same id: only the new vector is found."""
    index = ShardedIndex(tmp_path / "idx", DIM, "l2", segment_size=4)
    old, new = random_vectors(2, seed=3)
    index.add(np.arange(10), random_vectors(10))
    index.add(np.array([42]), old[None])
    assert index.remove([42, 12345]) == 1
    assert 42 not in index
    assert index.add(np.array([42]), new[None]) == 1
    np.testing.assert_allclose(index.get_vectors([42])[0], new)
    distances, found_ids = index.search(old[None], k=11)
    assert list(found_ids[0]).count(42) == 1
    distances, found_ids = index.search(new[None], k=1)
    assert found_ids[0, 0] == 42 and distances[0, 0] == pytest.approx(0.0, abs=1e-5)


def test_compact_drops_tombstoned_vectors(tmp_path):
    """After compact no tombstones remain, stored == live, and answers are unchanged."""
    index = ShardedIndex(tmp_path / "idx", DIM, "cosine", segment_size=20)
    ids = np.arange(100)
    fill(index, ids, random_vectors(100))
    index.remove(ids[::2])
    queries = random_vectors(4, seed=9)
    before = index.search(queries, 5)
    assert index.stats()["tombstones"] == 50

    assert index.compact() == 50

    stats = index.stats()
    assert stats["tombstones"] == 0 and stats["stored_vectors"] == stats["vectors"] == 50
    assert (stats["sealed_segments"], stats["delta_segments"]) == (1, 0)
    after = index.search(queries, 5)
    np.testing.assert_array_equal(before[1], after[1])
    reopened = ShardedIndex(tmp_path / "idx", DIM, "cosine", segment_size=20)
    np.testing.assert_array_equal(reopened.search(queries, 5)[1], before[1])


def test_index_survives_a_restart(tmp_path):
    """A new object over the same directory answers exactly as the one that wrote it."""
    writer = ShardedIndex(tmp_path / "idx", DIM, "l2", segment_size=30)
    fill(writer, np.arange(200), random_vectors(200))
    writer.remove([3, 4, 5])
    queries = random_vectors(3, seed=4)
    reopened = ShardedIndex(tmp_path / "idx", DIM, "l2", segment_size=30)
    assert reopened.version == writer.version
    assert reopened.stats() == writer.stats()
    for got, expected in zip(reopened.search(queries, 7), writer.search(queries, 7), strict=True):
        np.testing.assert_array_equal(got, expected)
    assert reopened.verify() == []


def test_reader_sees_a_writers_new_version_on_reload(tmp_path):
    """A reader picks up new segments via reload_if_changed, and only when something changed."""
    reader = ShardedIndex(tmp_path / "idx", DIM, "l2", segment_size=8)
    writer = ShardedIndex(tmp_path / "idx", DIM, "l2", segment_size=8)
    writer.add(np.arange(5), random_vectors(5))
    assert reader.reload_if_changed() is True
    assert reader.ntotal == 5
    assert reader.reload_if_changed() is False
    vectors = random_vectors(20, seed=6)
    writer.add(np.arange(100, 120), vectors)
    assert reader.ntotal == 5  # a reader's view only moves on reload
    assert reader.reload_if_changed() is True
    assert reader.version == writer.version and reader.ntotal == 25
    assert reader.search(vectors[7:8], 1)[1][0, 0] == 107


def test_delta_segments_stay_few_under_single_vector_appends(tmp_path):
    """Appends one at a time keep at most log2(segment_size)+1 deltas, each append O(batch)."""
    segment_size = 32
    index = ShardedIndex(tmp_path / "idx", DIM, "l2", segment_size=segment_size)
    vectors = random_vectors(80)
    for image_id in range(80):
        index.add(np.array([image_id]), vectors[image_id : image_id + 1])
        assert index.stats()["delta_segments"] <= math.log2(segment_size) + 1
    stats = index.stats()
    assert stats["sealed_segments"] == 1 and stats["vectors"] == 80


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"dim": 32, "identity": None}, "dim 16"),
        ({"metric": "cosine"}, "metric 'l2'"),
        ({"identity": {"backbone": "efficientnet_lite0", "dim": 16}}, "backbone 'densenet121'"),
    ],
)
def test_opening_an_index_built_for_another_space_fails_clearly(tmp_path, changes, complaint):
    """dim, metric or backbone that differ from the manifest raise IndexMismatchError."""
    identity = {"backbone": "densenet121", "weights_sha256": "ab" * 32, "dim": DIM}
    ShardedIndex(tmp_path / "idx", DIM, "l2", identity=identity).add(
        np.arange(3), random_vectors(3)
    )
    arguments = {"dim": DIM, "metric": "l2", "identity": identity} | changes
    with pytest.raises(IndexMismatchError, match=complaint):
        ShardedIndex(tmp_path / "idx", **arguments)


def test_bad_input_is_rejected_with_its_name(tmp_path):
    """Shapes, negative ids, NaNs and unknown metrics are refused before anything is written."""
    index = ShardedIndex(tmp_path / "idx", DIM, "l2")
    with pytest.raises(ValueError, match="vectors: shape"):
        index.add(np.arange(2), random_vectors(3))
    with pytest.raises(ValueError, match="negative"):
        index.add(np.array([-1]), random_vectors(1))
    nan_vector = random_vectors(1)
    nan_vector[0, 0] = np.nan
    with pytest.raises(ValueError, match="ids \\[7\\]"):
        index.add(np.array([7]), nan_vector)
    with pytest.raises(ValueError, match="queries: shape"):
        index.search(np.zeros((1, DIM + 1), np.float32), 1)
    with pytest.raises(ValueError, match="metric 'dot'"):
        ShardedIndex(tmp_path / "other", DIM, "dot")
    with pytest.raises(ValueError, match="index factory 'Nonsense'"):
        ShardedIndex(tmp_path / "other", DIM, "l2", factory="Nonsense")
    assert index.version == 0


def test_hnsw_factory_finds_most_true_neighbours(tmp_path):
    """An HNSW32 main index: recall@10 against exact flat search is above 0.9."""
    count = 2000
    ids = np.arange(count)
    vectors = random_vectors(count, seed=11)
    index = ShardedIndex(tmp_path / "hnsw", DIM, "cosine", segment_size=800, factory="HNSW32")
    index.add(ids, vectors)
    stats = index.stats()
    assert stats["sealed_segments"] == 1 and stats["delta_segments"] == 0
    queries = random_vectors(50, seed=12)
    _, found_ids = index.search(queries, 10)
    _, expected_ids = flat_reference(ids, vectors, queries, 10, "cosine")
    pairs = zip(found_ids, expected_ids, strict=True)
    hits = [len(set(found) & set(true)) for found, true in pairs]
    recall = np.mean(hits) / 10
    assert recall > 0.9


def test_ivf_main_index_trains_on_merge_and_a_small_one_falls_back_to_flat(tmp_path):
    """IVF trains the main index (exact when nprobe covers every list); too few -> Flat."""
    ids = np.arange(600)
    vectors = random_vectors(600, seed=13)
    index = ShardedIndex(tmp_path / "ivf", DIM, "l2", segment_size=300, factory="IVF8,Flat")
    index.add(ids, vectors)
    factories = [entry["factory"] for entry in index._reader.view.manifest["segments"]]
    assert factories == ["IVF8,Flat"]
    queries = random_vectors(5, seed=14)
    _, expected_ids = flat_reference(ids, vectors, queries, 10, "l2")
    np.testing.assert_array_equal(index.search(queries, 10)[1], expected_ids)
    np.testing.assert_allclose(index.get_vectors([5, 450]), vectors[[5, 450]])

    small = ShardedIndex(tmp_path / "small", DIM, "l2", segment_size=20, factory="IVF64,Flat")
    small.add(np.arange(20), random_vectors(20))
    assert [e["factory"] for e in small._reader.view.manifest["segments"]] == ["Flat"]


def test_open_index_and_cached_reader_follow_the_settings(tmp_path, monkeypatch):
    """open_index places the index per space and metric; get_reader caches and reloads."""
    settings = Settings(data_dir=tmp_path, index_segment_size=10)
    space = EmbeddingSpace(
        id=3,
        backbone="densenet121",
        weights_sha256="cd" * 32,
        weights_source="test",
        pretrained=False,
        preprocessing_version=1,
        dim=DIM,
    )
    clear_readers()
    writer = open_index(settings, space, "cosine")
    assert writer.root == tmp_path / "indexes" / "space-3" / "cosine"
    writer.add(np.arange(4), random_vectors(4))
    reader = get_reader(settings, space, "cosine")
    assert reader is get_reader(settings, space, "cosine")
    assert reader.ntotal == 4
    recorded = reader.stats()["identity"]
    assert recorded["backbone"] == "densenet121" and recorded["untrained"] is True
    writer.add(np.arange(4, 6), random_vectors(2, seed=1))
    assert get_reader(settings, space, "cosine").ntotal == 4  # checked less than 1 s ago
    monkeypatch.setattr("mammosearch.index.READER_RELOAD_INTERVAL_S", 0.0)
    assert get_reader(settings, space, "cosine").ntotal == 6
    clear_readers()


def test_verify_reports_a_damaged_segment(tmp_path):
    """verify() re-hashes segment files against the manifest."""
    index = ShardedIndex(tmp_path / "idx", DIM, "l2", segment_size=4)
    index.add(np.arange(6), random_vectors(6))
    assert index.verify() == []
    segment_file = Path(index.root / index._reader.view.manifest["segments"][0]["file"])
    damaged = bytearray(segment_file.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    segment_file.write_bytes(bytes(damaged))
    assert any("sha256" in problem for problem in index.verify())


def test_reader_notices_a_directory_swapped_for_a_rebuilt_index(tmp_path):
    """A rebuilt index renamed into place is reloaded even at the same version number."""
    root = tmp_path / "idx"
    ShardedIndex(root, DIM, "l2").add(np.arange(3), random_vectors(3))
    reader = ShardedIndex(root, DIM, "l2")
    staging = tmp_path / "idx.rebuild"
    ShardedIndex(staging, DIM, "l2").add(np.arange(50, 53), random_vectors(3, seed=8))
    root.rename(tmp_path / "idx.retired")
    staging.rename(root)
    assert reader.reload_if_changed() is True
    np.testing.assert_array_equal(reader.ids(), [50, 51, 52])
