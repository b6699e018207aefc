"""An ANN main index is built and extended with the efSearch / nprobe that keeps recall@10
>= 0.95.

High-dimensional data on which a small fixed efSearch or nprobe falls short: the tuned
value, recorded in the manifest, must hold the floor on queries the tuning never saw.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from mammosearch.index import ShardedIndex
from mammosearch.index.filtered import tuned_plan
from mammosearch.index.manifest import read_manifest
from mammosearch.index.tuning import RECALL_FLOOR

DIM = 128


def _clusters(count: int, seed: int) -> np.ndarray:
    """Points around 40 centres, spread wide enough that neighbours cross clusters."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(40, DIM)).astype(np.float32)
    return (centres[rng.integers(0, 40, count)] + rng.normal(0, 0.9, (count, DIM))).astype(
        np.float32
    )


def _recall(
    index: ShardedIndex, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, metric: str
) -> float:
    if metric == "cosine":
        vectors, queries = vectors.copy(), queries.copy()
        faiss.normalize_L2(vectors)
        faiss.normalize_L2(queries)
    _, rows = faiss.knn(
        queries,
        vectors,
        10,
        metric=faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT,
    )
    _, found = index.search(queries, 10)
    shares = [len(set(f) & set(ids[r])) / 10 for f, r in zip(found, rows, strict=True)]
    return float(np.mean(shares))


@pytest.mark.parametrize(
    ("factory", "knob", "untuned"),
    [("HNSW4", "ef_search", {"ef_search": 8}), ("IVF64,Flat", "nprobe", {"nprobe": 1})],
)
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_a_sealed_ann_segment_keeps_the_recall_floor_on_unseen_queries(
    tmp_path, factory: str, knob: str, untuned: dict[str, int], metric: str
) -> None:
    vectors = _clusters(6000, seed=1)
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64) * 3
    queries = _clusters(100, seed=2)
    index = ShardedIndex(
        tmp_path / "ix", DIM, metric, segment_size=3000, factory=factory, **untuned
    )
    index.add(ids[:3000], vectors[:3000])  # the main index, built and trained
    built = read_manifest(tmp_path / "ix" / "manifest.json")["segments"][0]
    index.add(ids[3000:], vectors[3000:])  # ... then extended, tuned again

    entries = read_manifest(tmp_path / "ix" / "manifest.json")["segments"]
    sealed = [entry for entry in entries if entry["kind"] == "sealed"]
    assert len(sealed) == 1 and sealed[0]["search"]["recall@10"] >= RECALL_FLOOR
    assert sealed[0]["trained_on"] == built["trained_on"] == 3000 and sealed[0]["count"] == 6000
    assert {entry["search"][knob] for entry in sealed} != {untuned[knob]}
    assert index.stats()["tuned_search"] == [entry["search"] for entry in sealed]
    assert _recall(index, vectors, ids, queries, metric) >= RECALL_FLOOR

    untuned_index = ShardedIndex(
        tmp_path / "ix", DIM, metric, segment_size=3000, factory=factory, **untuned
    )
    manifest = untuned_index._reader.view.manifest
    untuned_manifest = {  # the same segments, their tuned parameters dropped
        **manifest,
        "segments": [{k: v for k, v in e.items() if k != "search"} for e in manifest["segments"]],
    }
    untuned_index._reader.install(untuned_index._reader.load(untuned_manifest), None)
    assert _recall(untuned_index, vectors, ids, queries, metric) < RECALL_FLOOR  # it mattered


def test_exhaustive_segments_need_no_tuning(tmp_path) -> None:
    index = ShardedIndex(tmp_path / "ix", DIM, "l2", segment_size=500, factory="Flat")
    index.add(np.arange(1, 1001, dtype=np.int64), _clusters(1000, seed=3))
    assert index.stats()["tuned_search"] == []


def test_the_tuned_parameters_are_exported_as_metrics(tmp_path) -> None:
    """/metrics shows each sealed ANN segment's efSearch and measured recall@10."""
    from web.metrics import IngestionCollector

    root = tmp_path / "indexes" / "space-1" / "l2"
    index = ShardedIndex(root, DIM, "l2", segment_size=1000, factory="HNSW4", ef_search=8)
    index.add(np.arange(1, 2001, dtype=np.int64), _clusters(2000, seed=4))
    collector = IngestionCollector(sessions=None, index_dir=tmp_path / "indexes")  # type: ignore[arg-type]
    families = {family.name: family for family in collector._tuned_search()}
    values = families["mammosearch_index_search_parameter"].samples
    recalls = families["mammosearch_index_tuned_recall_at_10"].samples
    assert len(values) == len(recalls) == 1  # the one main index
    assert {sample.labels["parameter"] for sample in values} == {"ef_search"}
    assert all(sample.value >= RECALL_FLOOR for sample in recalls)
    shares = families["mammosearch_index_filtered_search_parameter"].samples
    tuned = index.stats()["tuned_search"][0]["filtered"]
    assert {(s.labels["fraction"], s.value) for s in shares} == {
        (f"{band['fraction']:g}", band["ef_search"]) for band in tuned if band["ef_search"]
    }


def _filtered_recall(
    index: ShardedIndex,
    vectors: np.ndarray,
    ids: np.ndarray,
    queries: np.ndarray,
    allowed: np.ndarray,
) -> tuple[float, int]:
    """(recall@10 against exact search over the allowed vectors, fewest hits of a query)."""
    keep = np.isin(ids, allowed)
    _, rows = faiss.knn(queries, vectors[keep], 10)
    truth = ids[keep][rows]
    _, found = index.search(queries, 10, id_filter=allowed)
    shares = [len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]
    return float(np.mean(shares)), int((found >= 0).sum(axis=1).min())


@pytest.mark.parametrize(("factory", "knob"), [("HNSW8", "ef_search"), ("IVF64,Flat", "nprobe")])
def test_filtered_search_is_tuned_per_share_and_keeps_the_floor_between_shares(
    tmp_path, factory: str, knob: str
) -> None:
    """Each tuned share records the value that reached the floor (or exact, None) and both
    sides' timings; a search at a share between two tuned ones keeps the floor."""
    vectors = _clusters(6000, seed=1)
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64) * 3
    queries = _clusters(60, seed=2)
    index = ShardedIndex(tmp_path / "ix", DIM, "l2", segment_size=6000, factory=factory)
    index.add(ids, vectors)
    (sealed,) = read_manifest(tmp_path / "ix" / "manifest.json")["segments"]
    bands = sealed["search"]["filtered"]
    assert [band["fraction"] for band in bands] == sorted(band["fraction"] for band in bands)
    assert len(bands) >= 4
    for band in bands:
        assert band["exact_ms"] > 0
        if band[knob] is not None:
            assert band["recall@10"] >= RECALL_FLOOR and band["selector_ms"] <= band["exact_ms"]
    assert any(band[knob] is not None for band in bands), "the walk wins somewhere"
    rng = np.random.default_rng(3)
    for share in (0.02, 0.05, 0.2, 0.6, 0.95):
        allowed = np.sort(rng.choice(ids, round(share * len(ids)), replace=False))
        recall, fewest = _filtered_recall(index, vectors, ids, queries, allowed)
        assert fewest == 10 and recall >= RECALL_FLOOR, share


def test_each_timed_query_brings_its_own_allowed_set(tmp_path, monkeypatch) -> None:
    """Timing every query against one allowed set kept those vectors in cache and made exact
    comparison look twice as cheap as a request with a filter of its own finds it."""
    from mammosearch.index import filtered_tuning

    compared: list[bytes] = []
    real_exact = filtered_tuning.exact_search

    def recording_exact(segment, rows, queries, k, metric):  # type: ignore[no-untyped-def]
        compared.append(rows.tobytes())
        return real_exact(segment, rows, queries, k, metric)

    monkeypatch.setattr(filtered_tuning, "exact_search", recording_exact)
    monkeypatch.setattr(filtered_tuning, "FRACTIONS", (0.1,))
    index = ShardedIndex(tmp_path / "ix", DIM, "l2", segment_size=3000, factory="HNSW8")
    index.add(np.arange(1, 3001, dtype=np.int64), _clusters(3000, seed=4))
    timed = min(filtered_tuning.TIMED_QUERIES, 256, 3000 // 10)
    assert len(compared) == timed + 1  # one untimed first call, then one per timed query
    assert len(set(compared[1:])) == timed


def test_the_tuned_plan_takes_the_share_below_and_the_cheaper_side() -> None:
    bands = [
        {"fraction": 0.01, "ef_search": None, "exact_ms": 0.1},
        {"fraction": 0.1, "ef_search": 200, "recall@10": 0.98, "selector_ms": 0.5, "exact_ms": 0.4},
        {"fraction": 0.3, "ef_search": 100, "recall@10": 0.98, "selector_ms": 0.3, "exact_ms": 1.5},
    ]
    assert tuned_plan(bands, 0.005) is None  # below every tuned share: the fixed rules
    assert tuned_plan(bands, 0.05) == (True, None)  # the 1% share found no cheaper walk
    assert tuned_plan(bands, 0.1) == (True, 200)  # exact 0.4 ms against the walk's 0.5
    assert tuned_plan(bands, 0.2) == (False, 200)  # exact scaled to 0.8 ms: the walk
    assert tuned_plan(bands, 0.99) == (False, 100)
    untimed = [{**bands[2], "exact_ms": None}]  # too many rows to ever compare exactly
    assert tuned_plan(untimed, 0.5) == (False, 100)


def test_the_tuning_truth_is_the_same_brute_forced_in_slices(monkeypatch) -> None:
    from mammosearch.index import filtered_tuning

    vectors = _clusters(3000, seed=5)
    queries = _clusters(20, seed=6)
    rows = np.sort(np.random.default_rng(1).choice(3000, 1700, replace=False))
    whole = filtered_tuning._nearest_rows(queries, vectors, rows, 10, "l2")
    monkeypatch.setattr(filtered_tuning, "CHUNK_ROWS", 256)
    np.testing.assert_array_equal(
        filtered_tuning._nearest_rows(queries, vectors, rows, 10, "l2"), whole
    )
    _, positions = faiss.knn(queries, vectors[rows], 10)
    np.testing.assert_array_equal(whole, rows[positions])


def test_index_stats_prints_the_tuned_search_in_one_line() -> None:
    from mammosearch.cli.index_commands import _tuned_line

    entry = {
        "ef_search": 96,
        "recall@10": 0.985,
        "sample": 256,
        "filtered": [
            {"fraction": 0.01, "ef_search": None, "exact_ms": 0.2},
            {
                "fraction": 0.1,
                "ef_search": 128,
                "recall@10": 0.98,
                "selector_ms": 0.3,
                "exact_ms": 1.4,
            },
        ],
    }
    assert _tuned_line(entry) == (
        "ef_search 96 (recall@10 0.985); filtered by share allowed: 1% exact, 10% 128"
    )
    assert _tuned_line({"nprobe": 8, "recall@10": 0.99}) == "nprobe 8 (recall@10 0.99)"
