"""The neighbours' vote under a protocol, for every query (mammosearch.search.vote's rule, batched).

Each labelled query's candidates (the labelled images the protocol leaves it) are ranked by
the similarity search shows (cosine -> the cosine itself, l2 -> 1 / (1 + squared distance));
the VOTE_K nearest vote by mammosearch.search.vote.class_shares. Out of these votes come the
confusion matrix of reports and cross-validation, and the reliability table that says how
sure a suggestion is (`measure_vote`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mammosearch.evaluate.protocols import candidate_mask, get_protocol, query_rows
from mammosearch.search.vote import (
    RULE,
    VOTE_K,
    NoSuggestion,
    Reliability,
    VoteRule,
    class_shares,
    expected_calibration_error,
    reliability_table,
    winners,
)

DEFAULT_VOTE_K = VOTE_K
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


def similarity_of_scores(scores: np.ndarray, metric: str) -> np.ndarray:
    """Index scores -> what search shows (search.distance_and_similarity, vectorised):
    cosine -> the cosine itself, l2 (squared distance) -> 1 / (1 + distance)."""
    return scores if metric == "cosine" else 1.0 / (1.0 + np.maximum(scores, 0.0))


def _similarities(queries: np.ndarray, matrix: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        cosine: np.ndarray = queries @ matrix.T
        return cosine
    squared = (
        np.einsum("ij,ij->i", queries, queries)[:, None]
        - 2.0 * queries @ matrix.T
        + np.einsum("ij,ij->i", matrix, matrix)[None, :]
    )
    return similarity_of_scores(squared, metric)


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


def _query_codes(
    labels: Sequence[Hashable | None],
    patient_ids: Sequence[Hashable],
    classes: Sequence[Hashable],
    query_mask: np.ndarray | None,
) -> np.ndarray:
    """Each image's true class code as a query: -1 without a label or outside `query_mask`."""
    codes, _ = _codes(labels, patient_ids, classes)
    if query_mask is None:
        return codes
    return np.where(np.asarray(query_mask, dtype=bool), codes, -1)


def neighbour_vote_shares(
    vectors: np.ndarray,
    labels: Sequence[Hashable | None],
    patient_ids: Sequence[Hashable],
    classes: Sequence[Hashable],
    metric: str = "cosine",
    protocol: str = "patient-excluded",
    k: int = DEFAULT_VOTE_K,
    query_mask: np.ndarray | None = None,
    rule: VoteRule = RULE,
    score_matrix: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per image: its top-k candidates' vote (shares, votes), each (n, classes); rows of
    zeros for an image without a label, outside `query_mask` or without a candidate.

    `score_matrix` (n, n) in the metric's convention (cosine: a similarity; l2: a squared
    distance) replaces the vectors' own scores: case against case by a fusion rule."""
    protocol_rule = get_protocol(protocol)
    codes, patient_codes = _codes(labels, patient_ids, classes)
    eligible = codes >= 0
    matrix = np.asarray(vectors, dtype=np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.where(norms > 0, norms, 1.0)
    shares = np.zeros((codes.shape[0], len(classes)))
    votes = np.zeros((codes.shape[0], len(classes)), dtype=np.int64)
    class_counts = np.bincount(codes[eligible], minlength=len(classes))
    queries = np.flatnonzero(query_rows(eligible, query_mask))
    for start in range(0, queries.size, QUERY_CHUNK):
        chunk = queries[start : start + QUERY_CHUNK]
        allowed = np.stack(
            [candidate_mask(protocol_rule, int(q), eligible, patient_codes) for q in chunk]
        )
        scores = (
            _similarities(matrix[chunk], matrix, metric)
            if score_matrix is None
            else similarity_of_scores(np.asarray(score_matrix, dtype=np.float64)[chunk], metric)
        )
        similarity = np.where(allowed, scores, -np.inf)
        depth = min(k, similarity.shape[1])
        top = np.argpartition(-similarity, depth - 1, axis=1)[:, :depth]
        top_similarity = np.take_along_axis(similarity, top, axis=1)
        nearest_first = np.argsort(-top_similarity, axis=1, kind="stable")
        top = np.take_along_axis(top, nearest_first, axis=1)
        top_similarity = np.take_along_axis(top_similarity, nearest_first, axis=1)
        counted = np.isfinite(top_similarity)
        top_codes = np.where(counted, codes[top], -1)
        chunk_shares, chunk_votes = class_shares(
            top_codes, np.where(counted, top_similarity, 0.0), len(classes), class_counts, rule
        )
        shares[chunk], votes[chunk] = chunk_shares, chunk_votes
    return shares, votes


def neighbour_votes(
    vectors: np.ndarray,
    labels: Sequence[Hashable | None],
    patient_ids: Sequence[Hashable],
    classes: Sequence[Hashable],
    metric: str = "cosine",
    protocol: str = "patient-excluded",
    k: int = DEFAULT_VOTE_K,
    query_mask: np.ndarray | None = None,
    rule: VoteRule = RULE,
) -> np.ndarray:
    """Per image: the index in `classes` its top-k candidates vote for; -1 when it has no
    label or is outside `query_mask` (not a query) or has no candidate."""
    shares, votes = neighbour_vote_shares(
        vectors, labels, patient_ids, classes, metric, protocol, k, query_mask, rule
    )
    return winners(shares, votes)


def measure_vote(
    vectors: np.ndarray,
    labels: Sequence[Hashable | None],
    patient_ids: Sequence[Hashable],
    classes: Sequence[Hashable],
    metric: str = "cosine",
    protocol: str = "patient-excluded",
    query_mask: np.ndarray | None = None,
    rule: VoteRule = RULE,
    source: str = "",
    score_matrix: np.ndarray | None = None,
) -> Reliability:
    """The vote's figures over these queries: its reliability table by the leader's share,
    with accuracy, balanced accuracy, per-class recall and calibration error beside it."""
    shares, votes = neighbour_vote_shares(
        vectors, labels, patient_ids, classes, metric, protocol, DEFAULT_VOTE_K, query_mask,
        rule, score_matrix,
    )  # fmt: skip
    codes = _query_codes(labels, patient_ids, classes, query_mask)
    predicted = winners(shares, votes)
    asked = (codes >= 0) & (predicted >= 0)
    leader_share = shares[np.flatnonzero(asked), predicted[asked]]
    correct = predicted[asked] == codes[asked]
    table = reliability_table(leader_share, correct, codes[asked], source=source)
    truth = codes[asked]
    recall = {
        str(label): (float(correct[truth == c].mean()) if (truth == c).any() else None)
        for c, label in enumerate(classes)
    }
    present = [value for value in recall.values() if value is not None]
    table.extra.update(
        rule=rule.name,
        k=DEFAULT_VOTE_K,
        protocol=protocol,
        metric=metric,
        classes=[str(label) for label in classes],
        suggestions=int(asked.sum()),
        balanced_accuracy=round(float(np.mean(present)), 4) if present else None,
        per_class_recall=recall,
        ece=round(expected_calibration_error(leader_share, correct), 4),
    )
    return table


VOTED_LABELS = ("birads", "pathology")
"""What the suggestion panel votes on: the suggested BIRADS, and pathology beside it."""


def measure_space_votes(
    vectors: np.ndarray,
    image_rows: Sequence[Any],
    patient_ids: Sequence[Hashable],
    metric: str = "cosine",
    source: str = "",
    score_matrix: np.ndarray | None = None,
) -> dict[str, Any]:
    """The vote's reliability per VOTED_LABELS over an archive, patient-excluded: what an
    evaluation run stores for search to read. A label with under two classes, or whose
    images have no candidate to vote (one patient), is left out: unmeasured, not an error.

    `image_rows` are what a label reads, one per voter (an image, or a case:
    `measure_case_votes`); `score_matrix` as in neighbour_vote_shares."""
    from mammosearch.evaluate.labels import get_label

    measured: dict[str, Any] = {}
    for name in VOTED_LABELS:
        spec = get_label(name)
        labels = [spec.of_image(row) for row in image_rows]
        classes = [c for c in spec.classes if c in set(labels)]
        if len(classes) < 2:
            continue
        try:
            table = measure_vote(
                vectors, labels, patient_ids, classes, metric, source=source,
                score_matrix=score_matrix,
            )  # fmt: skip
        except NoSuggestion:
            continue
        measured[name] = table.to_dict()
    return measured


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
    codes = _query_codes(labels, patient_ids, classes, query_mask)
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
