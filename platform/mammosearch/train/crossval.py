"""Out-of-fold figures: each fold's unseen patients embedded by the model that never saw them.

Within a fold, the validation images are both the queries and the candidates (an archive of
new patients, as a model trained elsewhere meets it), patient-excluded. The base space is
scored on the same images by the same rule, so the two columns compare like with like.
Fold figures are pooled with each fold weighted by its number of queries.

A second protocol scores what a hospital sees with its own archive: the same unseen
patients' images query the fold's whole archive, whose training images were embedded by the
model that learned from them (`ARCHIVE_PROTOCOL`). The query is never seen in training and
its own patient is excluded, but the candidates were: this is not the out-of-fold figure of
a new archive, and it is reported beside it, never instead of it.

Each space is also scored at case level (`trained_case`, `base_case`): each fold's unseen
patients' images grouped into cases (one breast of one study), every case a query against
the fold's other cases, by each fusion rule (mammosearch.search.cases), similarity order; with each
rule's case vote reliability (`vote_reliability`, what a case search in that space reads).

Every figure is scored twice: in similarity order (the embedding's own figure, the
headline), and in the consensus order the search service serves by default
(mammosearch.search.ranking), as `consensus_<metric>`; per-class P@5 of both shows who gains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mammosearch.evaluate.case_units import (
    case_label_rows,
    case_mean_vectors,
    case_score_matrix,
    evaluate_cases,
    group_cases,
)
from mammosearch.evaluate.evaluator import evaluate_vectors
from mammosearch.evaluate.labels import get_label
from mammosearch.evaluate.neighbour_vote import DEFAULT_VOTE_K, neighbour_vote_shares
from mammosearch.evaluate.result import EvaluationError
from mammosearch.search.cases import CASE_FUSIONS
from mammosearch.search.vote import RULE, expected_calibration_error, reliability_table, winners
from mammosearch.vocabulary import RANKINGS

CV_KS = (1, 5, 10)
ARCHIVE_PROTOCOL = (
    "new patients' images (unseen, own patient excluded) against the fold's whole archive, "
    "its training images included, cosine"
)
HEADLINE_KEYS = ("precision@1", "precision@5", "precision@10", "ndcg@5", "ndcg@10", "map")
CONSENSUS_PREFIX = "consensus_"
PER_CLASS_KEY = "precision@5"
PANEL_LABELS = ("birads", "pathology")
"""The labels search's suggestion panel votes on (mammosearch.search.vote.suggest): train scores
each of them on its folds, whichever it learns, so the served space's panel is measured."""


def _ranked_key(ranking: str, key: str) -> str:
    return key if ranking == "similarity" else f"{CONSENSUS_PREFIX}{key}"


Suggestions = list[tuple[np.ndarray, np.ndarray, np.ndarray]]
"""Out-of-fold suggestions per fold: (leader's share, right?, true class code)."""


def fold_suggestions(
    shares: np.ndarray, votes: np.ndarray, truth: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One fold's votes -> its suggestions (queries with a class and a vote only)."""
    predicted = winners(shares, votes)
    asked = (truth >= 0) & (predicted >= 0)
    return (
        shares[np.flatnonzero(asked), predicted[asked]],
        predicted[asked] == truth[asked],
        truth[asked],
    )


def pooled_reliability(suggestions: Suggestions, classes: Sequence[Any]) -> dict[str, Any] | None:
    """The pooled suggestions' reliability table (mammosearch.search.vote), with the vote's
    accuracy, balanced accuracy, per-class recall and calibration error; None if none."""
    if not suggestions:
        return None
    parts = zip(*suggestions, strict=True)
    shares, correct, truth = (np.concatenate(part) for part in parts)
    if not shares.size:
        return None
    table = reliability_table(shares, correct, truth)
    recall = {
        str(label): float(correct[truth == code].mean())
        for code, label in enumerate(classes)
        if (truth == code).any()
    }
    table.extra.update(
        rule=RULE.name,
        k=DEFAULT_VOTE_K,
        classes=[str(label) for label in classes],
        suggestions=int(shares.size),
        balanced_accuracy=round(float(np.mean(list(recall.values()))), 4),
        per_class_recall=recall,
        ece=round(expected_calibration_error(shares, correct), 4),
    )
    return table.to_dict()


@dataclass
class FoldFigures:
    """Pooled figures of one space over the folds seen so far."""

    classes: list[Any]
    weighted_sums: dict[str, float] = field(default_factory=dict)
    chance_sums: dict[str, float] = field(default_factory=dict)
    queries: int = 0
    confusion: np.ndarray | None = None
    per_class_sums: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # Every out-of-fold suggestion: (leader's share, right?, true class code), for the
    # reliability table search reads (mammosearch.search.vote.Reliability).
    suggestions: Suggestions = field(default_factory=list)

    def add_fold(
        self,
        vectors: np.ndarray,
        labels: Sequence[Any],
        patient_ids: Sequence[Any],
        name: str,
        query_mask: np.ndarray | None = None,
    ) -> dict[str, float]:
        """Score one fold's vectors (queries: `query_mask`, default all); that fold's metrics."""
        fold: dict[str, float] = {}
        for ranking in RANKINGS:
            result = evaluate_vectors(
                vectors,
                list(range(len(labels))),
                labels,
                patient_ids,
                metric="cosine",
                ks=CV_KS,
                label_name=name,
                query_mask=query_mask,
                ranking=ranking,
            )
            for key in HEADLINE_KEYS:
                ranked = _ranked_key(ranking, key)
                fold[ranked] = result.metrics[key]
                self.weighted_sums[ranked] = self.weighted_sums.get(ranked, 0.0) + (
                    result.metrics[key] * result.queries
                )
                self.chance_sums[ranked] = self.chance_sums.get(ranked, 0.0) + (
                    result.chance[key] * result.queries
                )
            by_class = self.per_class_sums.setdefault(ranking, {})
            for label, row in result.per_class.items():
                if row[PER_CLASS_KEY] is not None:
                    sums = by_class.setdefault(label, [0.0, 0.0])
                    sums[0] += row[PER_CLASS_KEY] * row["queries"]
                    sums[1] += row["queries"]
        self.queries += result.queries
        shares, votes = neighbour_vote_shares(
            vectors,
            labels,
            patient_ids,
            self.classes,
            metric="cosine",
            k=DEFAULT_VOTE_K,
            query_mask=query_mask,
        )
        predicted = winners(shares, votes)
        class_code = {label: code for code, label in enumerate(self.classes)}
        truth = np.array([class_code.get(label, -1) for label in labels], dtype=np.int64)
        if query_mask is not None:
            truth = np.where(np.asarray(query_mask, dtype=bool), truth, -1)
        asked = (truth >= 0) & (predicted >= 0)
        matrix = np.zeros((len(self.classes), len(self.classes)), dtype=np.int64)
        np.add.at(matrix, (truth[asked], predicted[asked]), 1)
        self.confusion = matrix if self.confusion is None else self.confusion + matrix
        self.suggestions.append(fold_suggestions(shares, votes, truth))
        return fold

    def reliability(self) -> dict[str, Any] | None:
        """The out-of-fold suggestions' reliability table (mammosearch.search.vote), with the vote's
        accuracy, balanced accuracy, per-class recall and calibration error."""
        return pooled_reliability(self.suggestions, self.classes)

    def summary(self) -> dict[str, Any]:
        """Pooled metrics, chance levels, vote accuracy, balanced accuracy, per-class recall."""
        if not self.queries or self.confusion is None:
            return {}
        metrics = {key: value / self.queries for key, value in self.weighted_sums.items()}
        totals = self.confusion.sum(axis=1)
        recall = {
            str(label): (float(self.confusion[row, row] / totals[row]) if totals[row] else None)
            for row, label in enumerate(self.classes)
        }
        present = [value for value in recall.values() if value is not None]
        metrics["vote_accuracy"] = float(np.trace(self.confusion) / max(1, totals.sum()))
        metrics["vote_balanced_accuracy"] = float(np.mean(present)) if present else 0.0
        return {
            "queries": self.queries,
            "metrics": metrics,
            "chance": {key: value / self.queries for key, value in self.chance_sums.items()},
            "vote_per_class_recall": recall,
            f"per_class_{PER_CLASS_KEY}": {
                ranking: {label: total / count for label, (total, count) in by_class.items()}
                for ranking, by_class in self.per_class_sums.items()
            },
            "vote_reliability": self.reliability(),
            "vote_confusion": {
                "classes": [str(c) for c in self.classes],
                "matrix": self.confusion.astype(int).tolist(),
                "k": DEFAULT_VOTE_K,
            },
        }


@dataclass
class CaseFoldFigures:
    """Pooled case-level figures of one space over the folds, per fusion rule."""

    label: str
    weighted_sums: dict[str, dict[str, float]] = field(default_factory=dict)
    chance_sums: dict[str, dict[str, float]] = field(default_factory=dict)
    queries: dict[str, int] = field(default_factory=dict)
    unscored_folds: dict[str, int] = field(default_factory=dict)
    # Per fusion rule, every out-of-fold case suggestion: the case search's reliability table.
    suggestions: dict[str, Suggestions] = field(default_factory=dict)
    # Per fusion rule and case class: [sum of P@5 x cases, cases].
    per_class_sums: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add_fold(self, vectors: np.ndarray, case_rows: Sequence[dict[str, Any]]) -> None:
        """Score one fold's images grouped into cases, by every fusion rule; and each case's
        vote (its nearest other patients' cases by that rule), as a case search votes."""
        spec = get_label(self.label)
        groups = group_cases(case_rows)
        class_code = {label: code for code, label in enumerate(spec.classes)}
        case_labels = [spec.of_image(row) for row in case_label_rows(groups, case_rows)]
        truth = np.array([class_code.get(label, -1) for label in case_labels], dtype=np.int64)
        case_patients = [key.patient_id for key in groups.keys]
        for fusion in CASE_FUSIONS:
            shares, votes = neighbour_vote_shares(
                case_mean_vectors(vectors, groups), case_labels, case_patients, spec.classes,
                metric="cosine", k=DEFAULT_VOTE_K,
                score_matrix=case_score_matrix(vectors, groups, fusion, "cosine"),
            )  # fmt: skip
            self.suggestions.setdefault(fusion, []).append(fold_suggestions(shares, votes, truth))
            try:
                result = evaluate_cases(
                    vectors,
                    list(range(len(case_rows))),
                    case_rows,
                    label=self.label,
                    fusion=fusion,
                    metric="cosine",
                    ks=CV_KS,
                )
            except EvaluationError:  # no case of this fold has a relevant other case
                self.unscored_folds[fusion] = self.unscored_folds.get(fusion, 0) + 1
                continue
            sums = self.weighted_sums.setdefault(fusion, {})
            chance = self.chance_sums.setdefault(fusion, {})
            for key in HEADLINE_KEYS:
                sums[key] = sums.get(key, 0.0) + result.metrics[key] * result.queries
                chance[key] = chance.get(key, 0.0) + result.chance[key] * result.queries
            self.queries[fusion] = self.queries.get(fusion, 0) + result.queries
            by_class = self.per_class_sums.setdefault(fusion, {})
            for case_class, row in result.per_class.items():
                if row[PER_CLASS_KEY] is not None:
                    class_sums = by_class.setdefault(case_class, [0.0, 0.0])
                    class_sums[0] += row[PER_CLASS_KEY] * row["queries"]
                    class_sums[1] += row["queries"]

    def summary(self) -> dict[str, Any]:
        """Per fusion rule: cases scored, pooled metrics, chance and per-class P@5."""
        return {
            fusion: {
                "queries": self.queries[fusion],
                "metrics": {k: v / self.queries[fusion] for k, v in sums.items()},
                "chance": {
                    k: v / self.queries[fusion] for k, v in self.chance_sums[fusion].items()
                },
                "unscored_folds": self.unscored_folds.get(fusion, 0),
                f"per_class_{PER_CLASS_KEY}": {
                    case_class: total / count
                    for case_class, (total, count) in self.per_class_sums.get(fusion, {}).items()
                },
                "vote_reliability": pooled_reliability(
                    self.suggestions.get(fusion, []), get_label(self.label).classes
                ),
            }
            for fusion, sums in self.weighted_sums.items()
            if self.queries.get(fusion)
        }
