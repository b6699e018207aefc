"""The report's neighbour vote: the search service's BIRADS suggestion, for every query."""

from __future__ import annotations

from collections import Counter

import numpy as np

from mammosearch.evaluate.neighbour_vote import neighbour_vote_confusion, neighbour_votes
from mammosearch.search import Hit, distance_and_similarity, suggest_birads


def _hit(rank: int, similarity: float, birads: int | None) -> Hit:
    return Hit(
        rank=rank, image_id=rank, patient_id="p", distance=0.0, similarity=similarity,
        birads=birads, birads_raw=None, pathology=None, side=None, view=None,
        modality="subtracted", findings=None, report_excerpt=None, source_file_name="x.jpg",
    )  # fmt: skip


def _brute_force_suggestion(
    vectors: np.ndarray, labels: list[int | None], patients: list[int], query: int, k: int,
    metric: str,
) -> int | None:  # fmt: skip
    """Rank the other patients' labelled images, then ask mammosearch.search.suggest_birads."""
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
    hits = [_hit(r, float(similarity[i]), labels[i]) for r, i in enumerate(ranked)]
    counts = Counter(label for label in labels if label is not None)  # the archive's priors
    return suggest_birads(hits, dict(counts))["birads"]


def test_votes_match_the_search_services_suggestion_for_every_query() -> None:
    """For both metrics, each query's vote equals suggest_birads over its top-k hits."""
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


def test_a_common_class_does_not_win_by_being_common() -> None:
    """Equal similarity, 3 neighbours of a class 9x as common as the other's 2: prior wins."""
    hits = [_hit(r, 0.5, 1) for r in range(3)] + [_hit(3 + r, 0.5, 5) for r in range(2)]
    assert suggest_birads(hits)["birads"] == 1  # no priors: the majority
    corrected = suggest_birads(hits, {1: 900, 5: 100})
    assert corrected["birads"] == 5
    assert corrected["note"] == "Decision support, not a diagnosis."


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
