"""Ranking metrics against hand-computed rankings, and exact chance levels against sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mammosearch.evaluate.metrics import (
    METRICS,
    average_precision,
    chance_average_precision,
    chance_ndcg,
    chance_precision,
    chance_recall,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

# A full ranking of 8 candidates; the relevant ones sit at ranks 1, 3, 6 and 8 (R = 4).
RANKING = np.array([1, 0, 1, 0, 0, 1, 0, 1], dtype=bool)
R = 4


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, 1.0),  # 1 hit / 1
        (3, 2 / 3),  # hits at 1, 3
        (5, 0.4),  # 2 hits / 5
        (10, 0.4),  # 4 hits / 10: divided by k even past the ranking's end
    ],
)
def test_precision_at_k_counts_hits_over_k(k: int, expected: float) -> None:
    """P@k = hits in the top k / k."""
    assert precision_at_k(RANKING, R, k) == pytest.approx(expected)


@pytest.mark.parametrize(("k", "expected"), [(1, 0.25), (3, 0.5), (6, 0.75), (8, 1.0)])
def test_recall_at_k_divides_by_all_relevant_candidates(k: int, expected: float) -> None:
    """R@k = hits in the top k / R."""
    assert recall_at_k(RANKING, R, k) == pytest.approx(expected)


def test_ndcg_uses_log2_of_rank_plus_one_and_the_ideal_ranking() -> None:
    """NDCG@3 = (1/log2 2 + 1/log2 4) / (1 + 1/log2 3 + 1/log2 4) = 1.5 / 2.13093."""
    assert ndcg_at_k(RANKING, R, 3) == pytest.approx(1.5 / (1 + 1 / math.log2(3) + 0.5))
    # NDCG@8: DCG = 1 + 1/2 + 1/log2 7 + 1/log2 9 = 2.171672;
    # IDCG over four ones = 1 + 1/log2 3 + 1/2 + 1/log2 5 = 2.561606 -> 0.847778.
    assert ndcg_at_k(RANKING, R, 8) == pytest.approx(0.847778, abs=1e-6)


def test_ndcg_ideal_ranking_has_only_min_k_r_ones() -> None:
    """One relevant candidate at rank 1: perfect whatever k, since IDCG has one 1 in it."""
    assert ndcg_at_k(np.array([1, 0, 0, 0], dtype=bool), 1, 4) == pytest.approx(1.0)


def test_average_precision_over_the_full_ranking() -> None:
    """AP = (P@1 + P@3 + P@6 + P@8) / 4 = (1 + 2/3 + 1/2 + 1/2) / 4 = 2/3."""
    assert average_precision(RANKING, R) == pytest.approx(2 / 3)


def test_average_precision_with_a_cut_off_divides_by_min_r_k() -> None:
    """AP@5 = (1 + 2/3) / min(4, 5) = 5/12; AP@2 = 1 / min(4, 2) = 1/2."""
    assert average_precision(RANKING, R, 5) == pytest.approx(5 / 12)
    assert average_precision(RANKING, R, 2) == pytest.approx(0.5)


def test_chance_levels_of_a_small_case_by_hand() -> None:
    """C = 2, R = 1: rankings [1,0] (AP 1) and [0,1] (AP 1/2) are equally likely -> 3/4."""
    assert chance_average_precision(2, 1) == pytest.approx(0.75)
    assert chance_precision(2, 1, 1) == pytest.approx(0.5)
    assert chance_precision(2, 1, 5) == pytest.approx(2 / 5 * 1 / 2)  # min(k, C)/k * R/C
    assert chance_recall(2, 1, 1) == pytest.approx(0.5)
    assert chance_recall(2, 1, 5) == pytest.approx(1.0)
    # E[NDCG@2] = (1/2)(1 + 1/log2 3) / 1
    assert chance_ndcg(2, 1, 2) == pytest.approx(0.5 * (1 + 1 / math.log2(3)))


@pytest.mark.parametrize(("candidates", "relevant"), [(10, 3), (7, 1), (12, 12), (30, 8)])
def test_exact_chance_levels_match_random_rankings(candidates: int, relevant: int) -> None:
    """The closed forms equal the mean over many random permutations (fixed seed)."""
    rng = np.random.default_rng(7)
    base = np.zeros(candidates, dtype=bool)
    base[:relevant] = True
    rankings = [rng.permutation(base) for _ in range(5_000)]
    for metric in METRICS.values():
        for k in (1, 5, 20) if metric.at_k else (None, 5):
            sampled = np.mean([metric.value(r, relevant, k) for r in rankings])
            exact = metric.chance(candidates, relevant, k)
            assert exact == pytest.approx(sampled, abs=0.02), (metric.key(k), exact, sampled)


def test_metric_keys_name_the_cut_off() -> None:
    """precision@5 for at-k metrics; map for the full ranking, map@100 for a cut-off."""
    assert METRICS["precision"].key(5) == "precision@5"
    assert METRICS["map"].key(None) == "map"
    assert METRICS["map"].key(100) == "map@100"
