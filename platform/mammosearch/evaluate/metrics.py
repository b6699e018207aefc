"""Ranking metrics for one query, and their values under a random ranking: one registry.

Every function takes the relevance of the query's candidates in ranked order (a boolean
array over all eligible candidates, best first) and `n_relevant`, the number of relevant
candidates in the whole ranking (so recall and NDCG's ideal ranking never depend on where
the ranking was cut). Queries with no relevant candidate are not scored (see evaluator).

Definitions (binary relevance):
- precision@k = hits in the top k / k (k, not min(k, candidates): the trec_eval convention).
- recall@k    = hits in the top k / n_relevant.
- ndcg@k      = DCG@k / IDCG@k, DCG@k = sum_{i=1..k} rel_i / log2(i + 1), IDCG@k the same sum
  over the ideal ranking, i.e. min(k, n_relevant) ones. (The standard definition; the
  formula printed in the reference paper has a typo.)
- ap          = average precision over the FULL ranking of eligible candidates:
  (1 / n_relevant) * sum over relevant positions i of precision@i. With a cut-off K it is
  AP@K = (1 / min(n_relevant, K)) * sum over relevant positions i <= K of precision@i.

Chance levels are exact expectations over a uniformly random ranking of the C candidates,
R of them relevant: position i is relevant with probability R/C, and given that it is,
each of the other i - 1 places above it is relevant with probability (R-1)/(C-1). So
E[P@k] = min(k, C)/k * R/C, E[R@k] = min(k, C)/C, E[DCG@k] = R/C * sum_{i<=min(k,C)}
1/log2(i+1) (NDCG's denominator is fixed), E[AP@K] = 1/min(R,K) * sum_{i<=min(K,C)} R/C *
(1 + (i-1)(R-1)/(C-1)) / i. No Monte-Carlo is needed; the tests check these against one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def precision_at_k(relevance: np.ndarray, n_relevant: int, k: int) -> float:
    return float(np.count_nonzero(relevance[:k])) / k


def recall_at_k(relevance: np.ndarray, n_relevant: int, k: int) -> float:
    return float(np.count_nonzero(relevance[:k])) / n_relevant


def _discounts(length: int) -> np.ndarray:
    """1 / log2(i + 1) for ranks i = 1..length."""
    return 1.0 / np.log2(np.arange(2, length + 2, dtype=np.float64))


def ndcg_at_k(relevance: np.ndarray, n_relevant: int, k: int) -> float:
    top = np.asarray(relevance[:k], dtype=np.float64)
    dcg = float(np.dot(top, _discounts(top.size)))
    idcg = float(_discounts(min(k, n_relevant)).sum())
    return dcg / idcg


def average_precision(relevance: np.ndarray, n_relevant: int, k: int | None = None) -> float:
    """AP over the full ranking (k None), or AP@k."""
    ranked = np.asarray(relevance if k is None else relevance[:k], dtype=bool)
    hit_ranks = np.flatnonzero(ranked) + 1  # 1-based positions of the relevant candidates
    if hit_ranks.size == 0:
        return 0.0
    precision_at_hits = np.arange(1, hit_ranks.size + 1) / hit_ranks
    denominator = n_relevant if k is None else min(n_relevant, k)
    return float(precision_at_hits.sum()) / denominator


def chance_precision(n_candidates: int, n_relevant: int, k: int) -> float:
    return min(k, n_candidates) / k * n_relevant / n_candidates


def chance_recall(n_candidates: int, n_relevant: int, k: int) -> float:
    return min(k, n_candidates) / n_candidates


def chance_ndcg(n_candidates: int, n_relevant: int, k: int) -> float:
    expected_dcg = n_relevant / n_candidates * _discounts(min(k, n_candidates)).sum()
    return float(expected_dcg / _discounts(min(k, n_relevant)).sum())


def chance_average_precision(n_candidates: int, n_relevant: int, k: int | None = None) -> float:
    depth = n_candidates if k is None else min(k, n_candidates)
    ranks = np.arange(1, depth + 1, dtype=np.float64)
    others_above = 0.0 if n_candidates == 1 else (n_relevant - 1) / (n_candidates - 1)
    expected_hits_above = 1.0 + (ranks - 1.0) * others_above
    expected_sum = (n_relevant / n_candidates * expected_hits_above / ranks).sum()
    denominator = n_relevant if k is None else min(n_relevant, k)
    return float(expected_sum / denominator)


@dataclass(frozen=True)
class RankingMetric:
    """A per-query metric; `at_k` metrics are reported once per k, the others once."""

    name: str
    at_k: bool
    value: Callable[..., float]  # (relevance, n_relevant, k) -> float
    chance: Callable[..., float]  # (n_candidates, n_relevant, k) -> float
    description: str

    def key(self, k: int | None) -> str:
        """The name in result tables: `precision@5`, `map`, `map@100`."""
        return self.name if k is None else f"{self.name}@{k}"


METRICS: dict[str, RankingMetric] = {
    "precision": RankingMetric(
        "precision", True, precision_at_k, chance_precision, "hits in the top k / k"
    ),
    "recall": RankingMetric(
        "recall", True, recall_at_k, chance_recall, "hits in the top k / relevant candidates"
    ),
    "ndcg": RankingMetric(
        "ndcg", True, ndcg_at_k, chance_ndcg, "normalised DCG, binary relevance, log2(i+1)"
    ),
    "map": RankingMetric(
        "map",
        False,
        average_precision,
        chance_average_precision,
        "mean average precision over the full ranking (or AP@K with a cut-off)",
    ),
}

TIMING_KEYS = ("search_ms_median", "search_ms_p95")
"""The timing entries of the metrics table (milliseconds per single-query search)."""
