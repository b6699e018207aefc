"""The neighbours' class vote under a protocol, for every query: a confusion matrix.

The vote is the search service's BIRADS suggestion (mammosearch.search.suggest_birads),
vectorised: the top-k candidates of each query each add max(similarity, 0) (or 1e-9) to
their class, and each class's sum is discounted by its share of the archive
(`prior_correction`), so a common class does not win by being common alone; the heaviest
class wins, ties going to more votes, then to the earlier class.
Similarity is what the search service shows: cosine -> the cosine itself, l2 -> 1 / (1 +
squared distance). Candidates are the labelled images the protocol leaves to the query.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mammosearch.evaluate.protocols import candidate_mask, get_protocol, query_rows
from mammosearch.ranking import MIN_VOTE_WEIGHT

DEFAULT_VOTE_K = 10
QUERY_CHUNK = 512


@dataclass
class VoteConfusion:
    """`matrix[t, p]` counts queries of true class t whose neighbours voted p."""

    classes: list[str]
    matrix: np.ndarray
    k: int
    metric: str
    protocol: str
    abstained: int  # queries without a single candidate

    @property
    def per_class_accuracy(self) -> dict[str, float | None]:
        totals = self.matrix.sum(axis=1)
        return {
            label: (float(self.matrix[row, row] / totals[row]) if totals[row] else None)
            for row, label in enumerate(self.classes)
        }

    @property
    def accuracy(self) -> float | None:
        total = int(self.matrix.sum())
        return float(np.trace(self.matrix) / total) if total else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "matrix": self.matrix.astype(int).tolist(),
            "k": self.k,
            "metric": self.metric,
            "protocol": self.protocol,
            "abstained": self.abstained,
            "accuracy": self.accuracy,
            "per_class_accuracy": self.per_class_accuracy,
        }


PRIOR_STRENGTH = 0.5
"""How far the vote discounts a class for being common: weight (share x classes)^-strength.

1 would equalise the classes' expected weight; on the dev archive's folds that over-corrects
(a class with one image in the archive wins every vote it appears in: accuracy 0.38 -> 0.21,
balanced accuracy 0.21 -> 0.18 for the base space); 0.5 halves BIRADS 1's pull on BIRADS 2
and 3 queries (their recall 0.10 -> 0.23 and 0.0 -> 0.10) and keeps balanced accuracy.
"""
MIN_SHARE_OF_EVEN = 0.5
"""A class's share counts as at least half of an even share: rare classes cannot explode."""


def prior_correction(class_counts: np.ndarray, strength: float = PRIOR_STRENGTH) -> np.ndarray:
    """Per class: (its share of the archive x number of classes present)^-strength; 0 if absent.

    Discounts the classes that are common in the archive, so the vote says more of what is
    near and less of what is frequent.
    """
    counts = np.asarray(class_counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        return np.zeros_like(counts)
    n_present = int(present.sum())
    share = np.maximum(counts / counts.sum(), MIN_SHARE_OF_EVEN / n_present)
    return np.where(present, (share * n_present) ** -strength, 0.0)


def similarity_of_scores(scores: np.ndarray, metric: str) -> np.ndarray:
    """Index scores -> what search shows (search.distance_and_similarity, vectorised):
    cosine -> the cosine itself, l2 (squared distance) -> 1 / (1 + distance)."""
    return scores if metric == "cosine" else 1.0 / (1.0 + np.maximum(scores, 0.0))


def _similarities(queries: np.ndarray, matrix: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        return queries @ matrix.T
    squared = (
        np.einsum("ij,ij->i", queries, queries)[:, None]
        - 2.0 * queries @ matrix.T
        + np.einsum("ij,ij->i", matrix, matrix)[None, :]
    )
    return similarity_of_scores(squared, metric)


def _winners(weights: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """Per row: the heaviest class, then the most votes, then the lowest class index."""
    heaviest = weights == weights.max(axis=1, keepdims=True)
    votes_of_heaviest = np.where(heaviest, votes, -1)
    return np.argmax(votes_of_heaviest == votes_of_heaviest.max(axis=1, keepdims=True), axis=1)


def _codes(
    labels: Sequence[Hashable | None], patient_ids: Sequence[Hashable], classes: Sequence[Hashable]
) -> tuple[np.ndarray, np.ndarray]:
    class_code = {label: code for code, label in enumerate(classes)}
    codes = np.array([class_code.get(label, -1) for label in labels], dtype=np.int64)
    patient_index: dict[Hashable, int] = {}
    patient_codes = np.array(
        [patient_index.setdefault(p, len(patient_index)) for p in patient_ids], dtype=np.int64
    )
    return codes, patient_codes


def neighbour_votes(
    vectors: np.ndarray,
    labels: Sequence[Hashable | None],
    patient_ids: Sequence[Hashable],
    classes: Sequence[Hashable],
    metric: str = "cosine",
    protocol: str = "patient-excluded",
    k: int = DEFAULT_VOTE_K,
    query_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Per image: the index in `classes` its top-k candidates vote for; -1 when it has no
    label or is outside `query_mask` (not a query) or has no candidate."""
    rule = get_protocol(protocol)
    codes, patient_codes = _codes(labels, patient_ids, classes)
    eligible = codes >= 0
    matrix = np.asarray(vectors, dtype=np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.where(norms > 0, norms, 1.0)
    predicted = np.full(codes.shape[0], -1, dtype=np.int64)
    correction = prior_correction(np.bincount(codes[eligible], minlength=len(classes)))
    asked = query_rows(eligible, query_mask)
    queries = np.flatnonzero(asked)
    for start in range(0, queries.size, QUERY_CHUNK):
        chunk = queries[start : start + QUERY_CHUNK]
        allowed = np.stack([candidate_mask(rule, int(q), eligible, patient_codes) for q in chunk])
        similarity = np.where(allowed, _similarities(matrix[chunk], matrix, metric), -np.inf)
        depth = min(k, similarity.shape[1])
        top = np.argpartition(-similarity, depth - 1, axis=1)[:, :depth]
        top_similarity = np.take_along_axis(similarity, top, axis=1)
        counted = np.isfinite(top_similarity)
        weight = np.where(counted, np.maximum(top_similarity, 0.0), 0.0)
        weight = np.where(counted & (weight == 0.0), MIN_VOTE_WEIGHT, weight)
        rows = np.repeat(np.arange(chunk.size), depth)
        class_weights = np.zeros((chunk.size, len(classes)))
        class_votes = np.zeros((chunk.size, len(classes)), dtype=np.int64)
        top_codes = np.where(counted, codes[top], 0).ravel()
        np.add.at(class_weights, (rows, top_codes), weight.ravel())
        np.add.at(class_votes, (rows, top_codes), counted.ravel().astype(np.int64))
        class_weights *= correction[None, :]
        voted = counted.any(axis=1)
        predicted[chunk[voted]] = _winners(class_weights, class_votes)[voted]
    return predicted


def neighbour_vote_confusion(
    vectors: np.ndarray,
    labels: Sequence[Hashable | None],
    patient_ids: Sequence[Hashable],
    classes: Sequence[Hashable],
    metric: str = "cosine",
    protocol: str = "patient-excluded",
    k: int = DEFAULT_VOTE_K,
    query_mask: np.ndarray | None = None,
) -> VoteConfusion:
    """Every labelled image (in `query_mask`) asks its top-k candidates for a class; count
    what they answer."""
    predicted = neighbour_votes(
        vectors, labels, patient_ids, classes, metric, protocol, k, query_mask
    )
    codes, _ = _codes(labels, patient_ids, classes)
    if query_mask is not None:
        codes = np.where(np.asarray(query_mask, dtype=bool), codes, -1)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    voted = predicted >= 0
    np.add.at(confusion, (codes[voted], predicted[voted]), 1)
    return VoteConfusion(
        classes=[str(label) for label in classes],
        matrix=confusion,
        k=k,
        metric=metric,
        protocol=protocol,
        abstained=int(np.count_nonzero((codes >= 0) & ~voted)),
    )
