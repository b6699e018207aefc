"""The report's neighbour vote: the search service's BIRADS suggestion, for every query."""

from __future__ import annotations

import numpy as np

from mammosearch.evaluate.neighbour_vote import neighbour_vote_confusion, neighbour_votes
from mammosearch.search.service import distance_and_similarity
from mammosearch.search.vote import VOTE_RULES, vote


def _brute_force_suggestion(
    vectors: np.ndarray, labels: list[int | None], patients: list[int], query: int, k: int,
    metric: str,
) -> int | None:  # fmt: skip
    """Rank the other patients' labelled images, then ask mammosearch.search.vote.vote."""
    if metric == "cosine":
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        similarity = unit @ unit[query]
    else:
        squared = ((vectors - vectors[query]) ** 2).sum(axis=1)
        similarity = np.array([distance_and_similarity(d, "l2")[1] for d in squared])
    candidates = [
        i for i in range(len(labels)) if labels[i] is not None and patients[i] != patients[query]
    ]
    ranked = sorted(candidates, key=lambda i: -similarity[i])[:k]
    return vote([(labels[i], float(similarity[i])) for i in ranked]).leader


def test_votes_match_the_search_services_suggestion_for_every_query() -> None:
    """For both metrics, each query's vote equals mammosearch.search.vote over its top-k hits."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(40, 6))
    labels = [int(v) for v in rng.integers(1, 6, size=40)]
    labels[7] = None  # an unlabelled image: neither query nor candidate
    patients = [i // 2 for i in range(40)]
    classes = [1, 2, 3, 4, 5]
    for metric in ("cosine", "l2"):
        predicted = neighbour_votes(vectors, labels, patients, classes, metric, k=7)
        for query in range(40):
            if labels[query] is None:
                assert predicted[query] == -1
                continue
            expected = _brute_force_suggestion(vectors, labels, patients, query, 7, metric)
            assert classes[predicted[query]] == expected, (metric, query)


def test_the_prior_rule_measured_beside_the_served_one_discounts_a_common_class() -> None:
    """Equal similarity, 3 neighbours of a class 9x as common as the other's 2: the served
    rule names the majority, the prior-corrected one (bench/vote_rules.py) the rare class."""
    neighbours = [(1, 0.5)] * 3 + [(5, 0.5)] * 2
    assert vote(neighbours, {1: 900, 5: 100}).leader == 1
    assert vote(neighbours, {1: 900, 5: 100}, rule=VOTE_RULES["prior"]).leader == 5


def test_confusion_counts_each_labelled_query_once_with_per_class_accuracy() -> None:
    """Two well-separated classes: every vote is right; the same patient never votes."""
    vectors = np.array([[1, 0], [1, 0.1], [1, -0.1], [0, 1], [0.1, 1], [-0.1, 1]], dtype=float)
    labels = [1, 1, 1, 4, 4, 4]
    patients = [0, 1, 2, 3, 4, 5]
    confusion = neighbour_vote_confusion(vectors, labels, patients, [1, 4], "cosine", k=2)
    assert confusion.matrix.tolist() == [[3, 0], [0, 3]]
    assert confusion.accuracy == 1.0
    assert confusion.per_class_accuracy == {"1": 1.0, "4": 1.0}
    # Patient-excluded: image 0's only same-class neighbours belong to its own patient.
    same_patient = [0, 0, 0, 1, 1, 1]
    confusion = neighbour_vote_confusion(vectors, labels, same_patient, [1, 4], "cosine", k=2)
    assert confusion.matrix.tolist() == [[0, 3], [3, 0]]
    assert confusion.to_dict()["per_class_accuracy"] == {"1": 0.0, "4": 0.0}


def test_a_query_mask_counts_only_its_queries_and_keeps_every_voter() -> None:
    """Two new images ask; the archive's other images vote but are neither counted nor abstain."""
    vectors = np.array([[1, 0], [1, 0.1], [1, -0.1], [0, 1], [0.1, 1], [-0.1, 1]], dtype=float)
    labels = [1, 1, 1, 4, 4, 4]
    patients = [0, 1, 2, 3, 4, 5]
    asking = np.array([True, False, False, True, False, False])
    confusion = neighbour_vote_confusion(
        vectors, labels, patients, [1, 4], "cosine", k=2, query_mask=asking
    )
    assert confusion.matrix.tolist() == [[1, 0], [0, 1]]
    assert confusion.abstained == 0
    votes = neighbour_votes(vectors, labels, patients, [1, 4], "cosine", k=2, query_mask=asking)
    assert votes.tolist() == [0, -1, -1, 1, -1, -1]
