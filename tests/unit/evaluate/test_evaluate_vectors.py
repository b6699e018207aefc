"""Leave-one-out over arrays: protocols, exclusions, chance levels and the JSON document."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mammosearch.evaluate import EvaluationError, evaluate_vectors, format_summary, parse_ks

# Six images of four patients plus one unlabelled image. Patient 10's two images are
# near-duplicates (like a CC/MLO pair); the unlabelled one sits next to everything.
VECTORS = np.array(
    [
        [1.0, 0.0, 0.0],  # 0: patient 10, class a
        [0.99, 0.05, 0.0],  # 1: patient 10, class a (near-duplicate of 0)
        [0.8, 0.6, 0.0],  # 2: patient 11, class a
        [0.0, 1.0, 0.0],  # 3: patient 12, class b
        [0.0, 0.9, 0.3],  # 4: patient 13, class b
        [0.5, 0.5, 0.7],  # 5: patient 14, class c (alone in its class)
        [0.6, 0.6, 0.1],  # 6: patient 15, no label
    ],
    dtype=np.float32,
)
IMAGE_IDS = [100, 101, 102, 103, 104, 105, 106]
LABELS = ["a", "a", "a", "b", "b", "c", None]
PATIENTS = [10, 10, 11, 12, 13, 14, 15]


def run(protocol: str, metric: str = "cosine", **options: object):
    return evaluate_vectors(
        VECTORS, IMAGE_IDS, LABELS, PATIENTS, metric=metric, protocol=protocol,
        ks=(1, 2, 5), per_query_k=10, **options,
    )  # fmt: skip


def test_patient_excluded_never_offers_the_query_patients_images() -> None:
    """Under patient-excluded no neighbour shares the query's patient; 0's best is then 2."""
    result = run("patient-excluded")
    for row in result.per_query:
        assert all(n["patient_id"] != row["patient_id"] for n in row["neighbours"])
    first = next(row for row in result.per_query if row["query_image_id"] == 100)
    assert first["neighbours"][0]["image_id"] == 102
    assert first["candidates"] == 4  # 7 images - 1 unlabelled - 2 of patient 10


def test_self_excluded_keeps_the_same_patients_other_images() -> None:
    """Under self-excluded the query is gone but its near-duplicate is the top-1."""
    result = run("self-excluded")
    first = next(row for row in result.per_query if row["query_image_id"] == 100)
    assert first["neighbours"][0]["image_id"] == 101
    assert all(row["query_image_id"] not in
               [n["image_id"] for n in row["neighbours"]] for row in result.per_query)  # fmt: skip


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_self_included_finds_the_query_itself_first_at_distance_zero(metric: str) -> None:
    """The paper's protocol: every query is its own top-1, distance 0, and it says so."""
    result = run("self-included", metric)
    for row in result.per_query:
        top = row["neighbours"][0]
        assert top["image_id"] == row["query_image_id"]
        assert top["distance"] == pytest.approx(0.0, abs=1e-5)
    assert result.metrics["precision@1"] == 1.0
    assert "SELF-INCLUDED" in result.protocol_note
    assert "SELF-INCLUDED" in result.to_dict()["protocol_note"]
    assert "SELF-INCLUDED" in format_summary(result)


def test_unlabelled_images_are_neither_queries_nor_candidates() -> None:
    """Image 106 has no label: no row for it, never a neighbour, counted as excluded."""
    result = run("self-excluded")
    assert result.excluded["no_label"] == 1
    assert result.archive_size == 7
    assert 106 not in [row["query_image_id"] for row in result.per_query]
    assert all(n["image_id"] != 106 for row in result.per_query for n in row["neighbours"])


def test_a_query_without_relevant_candidate_is_counted_not_scored() -> None:
    """Class c has one image, so it can't be judged; it is excluded from every average."""
    result = run("patient-excluded")
    assert result.excluded["no_relevant_candidate"] == 1
    assert result.queries == 5
    assert result.per_class["c"] == {
        "images": 1, "queries": 0, **{key: None for key in result.chance},
        "chance": {key: None for key in result.chance},
    }  # fmt: skip


def test_chance_levels_on_a_toy_distribution() -> None:
    """Five single-image patients, classes a,a,a,b,b.

    Excluded: an a-query has 4 candidates, 2 relevant (1/2); a b-query 4 and 1 (1/4):
    E[P@1] = (3 * 1/2 + 2 * 1/4) / 5 = 0.4, E[R@1] = 1/4, E[R@5] = min(5, 4)/4 = 1.
    Included: a: 3/5, b: 2/5 -> E[P@1] = (3 * 0.6 + 2 * 0.4) / 5 = 0.52, E[R@1] = 1/5.
    """
    vectors = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    args = (vectors, [1, 2, 3, 4, 5], ["a", "a", "a", "b", "b"], [1, 2, 3, 4, 5])
    excluded = evaluate_vectors(*args, protocol="patient-excluded", ks=(1, 5))
    assert excluded.chance["precision@1"] == pytest.approx(0.4)
    assert excluded.chance["recall@1"] == pytest.approx(0.25)
    assert excluded.chance["recall@5"] == pytest.approx(1.0)
    assert excluded.chance["precision@5"] == pytest.approx((3 * 4 / 5 * 2 / 4 + 2 * 4 / 5 / 4) / 5)
    included = evaluate_vectors(*args, protocol="self-included", ks=(1,))
    assert included.chance["precision@1"] == pytest.approx(0.52)
    assert included.chance["recall@1"] == pytest.approx(0.2)
    assert excluded.per_class["b"]["chance"]["precision@1"] == pytest.approx(0.25)


def test_well_separated_classes_score_perfectly() -> None:
    """Tight clusters per class: P@1, R@k at the class size, NDCG and mAP are all 1."""
    rng = np.random.default_rng(1)
    centres = np.eye(3, 16, dtype=np.float32) * 10
    labels = [c for c in (1, 2, 3) for _ in range(4)]
    vectors = centres[[c - 1 for c in labels]] + rng.normal(scale=0.01, size=(12, 16))
    result = evaluate_vectors(
        vectors.astype(np.float32), list(range(12)), labels, list(range(12)),
        metric="l2", protocol="patient-excluded", ks=(1, 3), label_name="birads",
    )  # fmt: skip
    for key in ("precision@1", "recall@3", "ndcg@3", "map", "precision@3"):
        assert result.metrics[key] == pytest.approx(1.0), key
    assert list(result.per_class) == ["1", "2", "3"]  # the registry's class order
    assert result.per_class["2"]["queries"] == 4


def test_to_dict_is_the_documented_json() -> None:
    """Keys of `--json`: space, protocol, label, queries, metrics per k, per class, chance."""
    space = {"id": 3, "backbone": "densenet121", "pretrained": False, "untrained": True}
    result = run("patient-excluded", embedding_space=space, map_cutoff=None)
    document = json.loads(json.dumps(result.to_dict()))
    assert document["embedding_space"] == space
    assert document["protocol"] == "patient-excluded"
    assert "protocol_note" not in document
    assert document["label"] == "custom"
    assert document["queries"] == 5
    for k in (1, 2, 5):
        for name in ("precision", "recall", "ndcg"):
            assert 0.0 <= document["metrics"][f"{name}@{k}"] <= 1.0
            assert f"{name}@{k}" in document["chance"]
    assert set(document["metrics"]) >= {"map", "search_ms_median", "search_ms_p95"}
    assert document["metrics"]["search_ms_p95"] >= document["metrics"]["search_ms_median"] > 0
    assert set(document["per_class"]) == {"a", "b", "c"}
    assert document["per_class"]["a"]["queries"] == 3
    row = document["per_query"][0]
    assert {"query_image_id", "query_name", "label", "neighbours", "precision@10"} <= set(row)
    assert {"image_id", "label", "distance", "rank"} <= set(row["neighbours"][0])


def test_a_map_cut_off_is_named_in_the_key() -> None:
    result = run("self-excluded", map_cutoff=2)
    assert "map@2" in result.metrics and "map" not in result.metrics
    assert result.config["map"] == "AP@2"


def test_per_query_limit_and_progress_callback() -> None:
    """The per-query table can be cut; a callable hears (done, total) up to the end."""
    heard: list[tuple[int, int]] = []
    result = run("self-excluded", per_query_limit=2, progress=lambda d, t: heard.append((d, t)))
    assert len(result.per_query) == 2
    assert heard[-1] == (result.queries, result.queries)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"protocol": "leave-two-out"}, "protocol 'leave-two-out': unknown"),
        ({"metric": "manhattan"}, "metric 'manhattan': unknown"),
        ({"ks": (0, 5)}, "k values"),
    ],
)
def test_bad_options_name_the_input(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_vectors(VECTORS, IMAGE_IDS, LABELS, PATIENTS, **options)


def test_no_scorable_query_is_an_error_not_nan() -> None:
    with pytest.raises(EvaluationError, match="no query can be scored"):
        evaluate_vectors(VECTORS[:2], [1, 2], ["a", "b"], [1, 2])


def test_parse_ks() -> None:
    assert parse_ks("10,1,5,5") == (1, 5, 10)
    with pytest.raises(EvaluationError, match="'1,x'"):
        parse_ks("1,x")


def test_a_query_mask_limits_the_queries_and_keeps_every_candidate() -> None:
    """New patients query an archive: only they ask, everyone labelled can be an answer."""
    mask = np.array([False, False, True, True, False, False, False])
    result = run("patient-excluded", query_mask=mask)
    assert [row["query_image_id"] for row in result.per_query] == [102, 103]
    assert result.queries == 2
    assert result.excluded == {"no_label": 1, "no_relevant_candidate": 0, "not_a_query": 4}
    first = result.per_query[0]
    assert first["candidates"] == 5  # every labelled image but the query's own
    assert first["neighbours"][0]["image_id"] in (100, 101)  # not queries, still answers
    everyone = run("patient-excluded")
    assert "not_a_query" not in everyone.excluded
    with pytest.raises(EvaluationError, match="query mask of shape"):
        run("patient-excluded", query_mask=mask[:3])
