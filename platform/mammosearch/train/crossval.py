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
the fold's other cases, by each fusion rule (mammosearch.cases), similarity order.

Every figure is scored twice: in similarity order (the embedding's own figure, the
headline), and in the consensus order the search service serves by default
(mammosearch.ranking), as `consensus_<metric>`; per-class P@5 of both shows who gains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mammosearch.cases import CASE_FUSIONS
from mammosearch.evaluate.case_units import evaluate_cases
from mammosearch.evaluate.evaluator import evaluate_vectors
from mammosearch.evaluate.neighbour_vote import DEFAULT_VOTE_K, neighbour_vote_shares
from mammosearch.ranking import RANKINGS
from mammosearch.vote import RULE, expected_calibration_error, reliability_table, winners

CV_KS = (1, 5, 10)
ARCHIVE_PROTOCOL = (
    "new patients' images (unseen, own patient excluded) against the fold's whole archive, "
    "its training images included, cosine"
)
HEADLINE_KEYS = ("precision@1", "precision@5", "precision@10", "ndcg@5", "ndcg@10", "map")
CONSENSUS_PREFIX = "consensus_"
PER_CLASS_KEY = "precision@5"


def _ranked_key(ranking: str, key: str) -> str:
    return key if ranking == "similarity" else f"{CONSENSUS_PREFIX}{key}"


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
    # reliability table search reads (mammosearch.vote.Reliability).
    suggestions: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

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
        self.suggestions.append(
            (
                shares[np.flatnonzero(asked), predicted[asked]],
                predicted[asked] == truth[asked],
                truth[asked],
            )
        )
        return fold

    def reliability(self) -> dict[str, Any] | None:
        """The out-of-fold suggestions' reliability table (mammosearch.vote), with the vote's
        accuracy, balanced accuracy, per-class recall and calibration error."""
        if not self.suggestions:
            return None
        parts = zip(*self.suggestions, strict=True)
        shares, correct, truth = (np.concatenate(part) for part in parts)
        if not shares.size:
            return None
        table = reliability_table(shares, correct, truth)
        recall = {
            str(label): float(correct[truth == code].mean())
            for code, label in enumerate(self.classes)
            if (truth == code).any()
        }
        table.extra.update(
            rule=RULE.name,
            k=DEFAULT_VOTE_K,
            classes=[str(label) for label in self.classes],
            suggestions=int(shares.size),
            balanced_accuracy=round(float(np.mean(list(recall.values()))), 4),
            per_class_recall=recall,
            ece=round(expected_calibration_error(shares, correct), 4),
        )
        return table.to_dict()

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

    def add_fold(self, vectors: np.ndarray, case_rows: Sequence[dict[str, Any]]) -> None:
        """Score one fold's images grouped into cases, by every fusion rule."""
        for fusion in CASE_FUSIONS:
            result = evaluate_cases(
                vectors,
                list(range(len(case_rows))),
                case_rows,
                label=self.label,
                fusion=fusion,
                metric="cosine",
                ks=CV_KS,
            )
            sums = self.weighted_sums.setdefault(fusion, {})
            chance = self.chance_sums.setdefault(fusion, {})
            for key in HEADLINE_KEYS:
                sums[key] = sums.get(key, 0.0) + result.metrics[key] * result.queries
                chance[key] = chance.get(key, 0.0) + result.chance[key] * result.queries
            self.queries[fusion] = self.queries.get(fusion, 0) + result.queries

    def summary(self) -> dict[str, Any]:
        """Per fusion rule: cases scored, pooled metrics and chance."""
        return {
            fusion: {
                "queries": self.queries[fusion],
                "metrics": {k: v / self.queries[fusion] for k, v in sums.items()},
                "chance": {
                    k: v / self.queries[fusion] for k, v in self.chance_sums[fusion].items()
                },
            }
            for fusion, sums in self.weighted_sums.items()
            if self.queries.get(fusion)
        }
