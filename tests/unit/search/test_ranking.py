"""Consensus order: the vote's neighbours agreeing with it first, the same in search and
evaluation, and never using the query's own label."""

from __future__ import annotations

import numpy as np
import pytest

from mammosearch.evaluate.evaluator import evaluate_vectors
from mammosearch.evaluate.result import EvaluationError
from mammosearch.search.ranking import (
    RankingError,
    check_ranking,
    consensus_order,
    consensus_ranking,
)
from mammosearch.search.service import Hit, in_consensus_order


def _hit(rank: int, birads: int | None, similarity: float) -> Hit:
    return Hit(rank, rank, "p", 1 - similarity, similarity, birads, None, None,
               None, None, "x", None, None, "f")  # fmt: skip


def test_an_outlier_of_another_class_moves_behind_the_agreeing_neighbours() -> None:
    similarities = np.array([0.90, 0.88, 0.87, 0.86])
    codes = np.array([1, 0, 0, 0])
    order = consensus_ranking(similarities, codes, 2)
    assert order.tolist() == [1, 2, 3, 0]
    assert consensus_order(similarities, np.zeros(4)).tolist() == [0, 1, 2, 3]


def test_only_the_voters_are_reordered_and_the_rest_keep_their_places() -> None:
    similarities = np.linspace(0.9, 0.5, 14)
    codes = np.array([1, 0, -1, 0, 1, 1, 0, 1, 1, 0, 1, 0, 1, 0])
    order = consensus_ranking(similarities, codes, 2)
    # Ten labelled voters reach position 10 (one unlabelled among them): 11 re-ordered.
    assert sorted(order[:11].tolist()) == list(range(11))
    assert order[11:].tolist() == [11, 12, 13]
    assert consensus_ranking(similarities, np.full(14, -1), 2).tolist() == list(range(14))


def test_search_reorders_hits_as_the_evaluation_does() -> None:
    """search.in_consensus_order is ranking.consensus_ranking on the hits' BIRADS."""
    hits = [_hit(1, 4, 0.95), _hit(2, 5, 0.94), _hit(3, 5, 0.93), _hit(4, None, 0.92)]
    reordered = in_consensus_order(hits)
    assert [hit.birads for hit in reordered] == [5, 5, 4, None]
    assert [hit.rank for hit in reordered] == [1, 2, 3, 4]


def test_consensus_lifts_precision_where_the_vote_is_right_and_uses_no_query_label() -> None:
    """Class A: a tight cluster; one class-B image sits nearest each A query. Ordering by the
    vote puts the A neighbours first; relabelling the queries changes nothing in the order."""
    rng = np.random.default_rng(0)
    centre = rng.normal(size=16)
    a = centre + 0.05 * rng.normal(size=(6, 16))
    b = centre + 0.01 * rng.normal(size=(1, 16))
    far = rng.normal(size=(6, 16)) * 3
    vectors = np.vstack([a, b, far])
    labels = ["A"] * 6 + ["B"] + ["B"] * 6
    patients = list(range(13))
    plain = evaluate_vectors(vectors, patients, labels, patients, ks=(1, 5))
    voted = evaluate_vectors(vectors, patients, labels, patients, ks=(1, 5), ranking="consensus")
    assert voted.per_class["A"]["precision@1"] == 1.0
    assert voted.per_class["A"]["precision@1"] > plain.per_class["A"]["precision@1"]
    assert voted.config["order"] == "consensus"
    first = voted.per_query[0]["neighbours"]
    relabelled = evaluate_vectors(
        vectors, patients, ["B", *labels[1:]], patients, ks=(1, 5), ranking="consensus"
    ).per_query[0]["neighbours"]
    assert [n["image_id"] for n in first] == [n["image_id"] for n in relabelled]


def test_an_unknown_ranking_is_refused_with_the_choices() -> None:
    with pytest.raises(RankingError, match="choose one of similarity, consensus"):
        check_ranking("random")
    with pytest.raises(EvaluationError, match="ranking 'best'"):
        evaluate_vectors(np.eye(3), [1, 2, 3], [1, 1, 2], [1, 2, 3], ranking="best")
