"""The cross-validation table `mammosearch train` and `models show` print."""

from __future__ import annotations

from mammosearch.cli.train_commands import format_cv_table

METRICS = {"precision@5": 0.4, "ndcg@5": 0.41, "vote_accuracy": 0.49}
BASE = {"precision@5": 0.3, "ndcg@5": 0.31, "vote_accuracy": 0.35}


def _cv(**extra: object) -> dict:
    return {
        "protocol": "patient-excluded, within each fold's unseen patients, cosine",
        "folds": 5,
        "trained": {"metrics": METRICS, "vote_per_class_recall": {"1": 0.7, "3": None}},
        "base": {"metrics": BASE, "vote_per_class_recall": {"1": 0.6}},
        **extra,
    }


def test_the_table_shows_trained_beside_base_and_the_vote_recall() -> None:
    table = format_cv_table(_cv())
    assert "out-of-fold, patient-excluded" in table
    assert "precision@5                 0.400    0.300" in table
    assert "vote recall per class: 1 0.70 (base 0.60), 3 - (base -)" in table
    assert "archive" not in table  # a model trained before the archive protocol


def test_the_archive_protocol_is_a_second_block_under_its_own_name() -> None:
    table = format_cv_table(
        _cv(
            archive_protocol="new patients' images against the fold's whole archive",
            trained_archive={"metrics": {**METRICS, "precision@5": 0.474}},
            base_archive={"metrics": {**BASE, "precision@5": 0.33}},
        )
    )
    out_of_fold, archive = table.split("new patients' images against the fold's whole archive:")
    assert "0.400" in out_of_fold and "0.474" not in out_of_fold
    assert "precision@5                 0.474    0.330" in archive


def test_the_consensus_order_and_its_per_class_trade_are_shown() -> None:
    trained = {
        "metrics": {**METRICS, "consensus_precision@5": 0.48},
        "vote_per_class_recall": {"1": 0.7},
        "per_class_precision@5": {
            "similarity": {"1": 0.58, "2": 0.24},
            "consensus": {"1": 0.75, "2": 0.16},
        },
    }
    table = format_cv_table(
        _cv(trained=trained, base={"metrics": {**BASE, "consensus_precision@5": 0.33}})
    )
    assert "consensus_precision@5       0.480    0.330" in table
    assert "P@5 per class, similarity -> consensus order: 1 0.58 -> 0.75, 2 0.24 -> 0.16" in table


def test_a_label_scored_but_not_trained_gets_its_own_line() -> None:
    pathology = {
        "trained": {"metrics": {**METRICS, "precision@5": 0.52}},
        "base": {"metrics": {**BASE, "precision@5": 0.41}},
    }
    table = format_cv_table(_cv(other_labels={"pathology": pathology}))
    assert (
        "pathology (scored on the same folds): P@5 0.520 (base 0.410), vote accuracy 0.490 "
        "(base 0.350)" in table
    )
