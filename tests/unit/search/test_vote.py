"""The neighbour vote (mammosearch.search.vote): one rule, a reliability table measured out of fold,
and a suggestion that is put forward only where suggestions like it were right."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.evaluate.neighbour_vote import measure_vote
from mammosearch.search.vote import (
    MIN_FLOOR,
    VOTE_K,
    Reliability,
    class_shares,
    label_suggestion,
    reliability_table,
    suggest,
    vote,
)
from mammosearch.train.crossval import FoldFigures


def test_the_ten_nearest_labelled_neighbours_vote_weighted_by_similarity() -> None:
    """Unlabelled neighbours neither vote nor take a voter's place; the eleventh labelled one
    does not vote; a class wins by its similarity-weighted share, not its archive share."""
    neighbours = [(None, 0.99)] + [(2, 0.9)] * 5 + [(None, 0.8)] + [(5, 0.5)] * 5 + [(5, 0.4)]
    result = vote(neighbours, class_counts={2: 10, 5: 1000})
    assert result.voters == VOTE_K
    assert result.votes == {2: 5, 5: 5}
    assert result.leader == 2
    assert result.shares[2] == pytest.approx(4.5 / 7.0)
    assert result.split  # five against five: no class stands out


def test_the_batched_vote_is_the_same_rule_row_by_row() -> None:
    codes = np.array([[0, 1, 1, -1], [1, -1, -1, -1], [-1, -1, -1, -1]])
    similarities = np.array([[0.9, 0.3, 0.3, 0.99], [0.2, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]])
    shares, votes = class_shares(codes, similarities, 2)
    assert shares.round(4).tolist() == [[0.6, 0.4], [0.0, 1.0], [0.0, 0.0]]
    assert votes.tolist() == [[1, 2], [0, 1], [0, 0]]
    single = vote([(0, 0.9), (1, 0.3), (1, 0.3), (None, 0.99)], classes=[0, 1])
    assert single.shares == {0: pytest.approx(0.6), 1: pytest.approx(0.4)}


def test_the_reliability_table_bins_suggestions_by_share_and_sets_a_floor() -> None:
    """Small bins merge; precision per bin; the floor is at least MIN_FLOOR and at least the
    rate of the commonest true class."""
    rng = np.random.default_rng(0)
    shares = np.concatenate([rng.uniform(0.36, 0.44, 40), rng.uniform(0.86, 1.0, 40), [0.6] * 3])
    correct = np.concatenate([np.arange(40) < 12, np.arange(40) < 32, [True] * 3])
    truth = np.concatenate([np.zeros(60, int), np.ones(23, int)])
    table = reliability_table(shares, correct, truth, min_bin=10)
    assert table.bins[0]["low"] == 0.0 and table.bins[-1]["high"] == 1.0
    assert all(row["suggestions"] >= 10 for row in table.bins)
    assert sum(row["suggestions"] for row in table.bins) == 83
    assert table.precision_at(0.32) == pytest.approx(12 / 40, abs=1e-4)
    # The three at 0.6 are too few for a bin of their own: merged with those above.
    assert table.precision_at(0.95) == pytest.approx(35 / 43, abs=1e-4)
    assert table.majority_rate == pytest.approx(60 / 83, abs=1e-4)
    assert table.floor == max(MIN_FLOOR, table.majority_rate)
    assert not table.is_sure(0.32) and table.is_sure(0.95)
    assert Reliability.from_dict(table.to_dict()) == table


MEASURED = {
    "bins": [
        {"low": 0.0, "high": 0.55, "suggestions": 50, "correct": 15, "precision": 0.3},
        {"low": 0.55, "high": 1.0, "suggestions": 50, "correct": 35, "precision": 0.7},
    ],
    "floor": 0.5, "accuracy": 0.5, "majority_rate": 0.4, "source": "test run",
}  # fmt: skip


def test_a_clear_vote_in_a_measured_space_is_suggested_with_its_precision() -> None:
    shown = label_suggestion([(1, 0.9)] * 8 + [(4, 0.9)] * 2, MEASURED)
    assert (shown["status"], shown["suggested"], shown["precision"]) == ("suggested", 1, 0.7)
    assert shown["votes"] == {"1": 8, "4": 2} and shown["measured"]["source"] == "test run"


def test_a_vote_below_the_floor_or_split_is_uncertain() -> None:
    weak = label_suggestion([(1, 0.9)] * 4 + [(4, 0.9)] * 3 + [(5, 0.9)] * 3, MEASURED)
    assert (weak["status"], weak["suggested"], weak["leading"]) == ("uncertain", None, 1)
    assert weak["precision"] == 0.3
    # Five against five with the nearer five leading by share: split, whatever the table says.
    split = label_suggestion([(2, 0.95)] * 5 + [(5, 0.2)] * 5, MEASURED)
    assert split["share"] > 0.55 and split["split"]
    assert (split["status"], split["suggested"]) == ("uncertain", None)


def test_an_unmeasured_space_lists_the_labels_and_suggests_nothing() -> None:
    panel = suggest([(1, 0.9)] * 9 + [(2, 0.5)], [("malignant", 0.9)] * 10, {})
    assert panel["birads"] is None and panel["status"] == "unmeasured"
    assert panel["votes"] == {"1": 9, "2": 1}
    assert panel["pathology"]["status"] == "unmeasured"
    assert panel["pathology"]["distribution"] == {"malignant": 1.0}
    assert panel["note"] == "Decision support, not a diagnosis."
    assert suggest([(None, 0.9)], [], {"birads": MEASURED})["status"] == "no-vote"


def test_measured_figures_come_out_of_fold_with_per_class_recall_and_calibration() -> None:
    """Two separated classes of five patients each: every out-of-fold suggestion is right,
    the table's one bin says so, and train's CV writes the same table from its folds."""
    rng = np.random.default_rng(1)
    vectors = np.vstack([rng.normal([5, 0], 0.3, (10, 2)), rng.normal([0, 5], 0.3, (10, 2))])
    labels = [1] * 10 + [4] * 10
    patients = [i // 2 for i in range(20)]
    table = measure_vote(vectors, labels, patients, [1, 4])
    assert table.accuracy == 1.0 and table.extra["per_class_recall"] == {"1": 1.0, "4": 1.0}
    assert table.extra["balanced_accuracy"] == 1.0 and table.extra["ece"] < 0.05
    assert table.is_sure(1.0)
    folds = FoldFigures([1, 4])
    folds.add_fold(vectors, labels, patients, "birads")
    reliability = folds.summary()["vote_reliability"]
    assert reliability["suggestions"] == 20 and reliability["accuracy"] == 1.0


def test_an_archive_of_one_patient_leaves_the_vote_unmeasured_without_failing() -> None:
    """No query has another patient's image to ask: nothing is measured, nothing raised."""
    from mammosearch.evaluate.neighbour_vote import measure_space_votes

    rows = [{"birads": 1 + i % 2, "pathology": "benign"} for i in range(4)]
    assert measure_space_votes(np.eye(4), rows, [7, 7, 7, 7]) == {}


def test_a_trained_space_is_measured_by_its_models_out_of_fold_suggestions(
    session: Session, settings: Settings
) -> None:
    """model.json's archive-protocol vote_reliability (train's CV) is what search reads for
    the model's space; a trained space whose model has none is unmeasured."""
    import hashlib
    import json

    from mammosearch.db.models import EmbeddingSpace
    from mammosearch.embed.loader import registry_dir
    from mammosearch.evaluate.runs import measured_vote

    def register(name: str, cross_validation: dict) -> EmbeddingSpace:
        folder = registry_dir(settings) / name
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(name.encode())
        sha = hashlib.sha256(name.encode()).hexdigest()
        (folder / "model.json").write_text(json.dumps({
            "format": 1, "name": name, "model_sha256": sha, "input": {"image_size_px": 224},
            "output": {"dim": 4}, "base": {}, "labels": {"birads": [1, 4]},
            "training_images": {"count": 20}, "created_at": "2026-12-07T12:00:00Z",
            "cross_validation": cross_validation,
        }))  # fmt: skip
        space = EmbeddingSpace(
            backbone=f"trained:{name}", weights_sha256=sha, weights_source="test",
            pretrained=True, preprocessing_version=1, dim=4, active=False,
        )  # fmt: skip
        session.add(space)
        session.commit()
        return space

    within, archive = {**MEASURED, "accuracy": 0.4}, {**MEASURED, "accuracy": 0.6}
    by_case = {**MEASURED, "accuracy": 0.7}
    measured = register("site-v2", {
        "label": "birads", "folds": 5,
        "trained": {"vote_reliability": within}, "trained_archive": {"vote_reliability": archive},
        "trained_case": {"mean": {"vote_reliability": by_case}},
    })  # fmt: skip
    old = register("site-v1", {"label": "birads", "folds": 5, "trained": {"metrics": {}}})
    read = measured_vote(session, settings, measured)
    assert read["birads"]["accuracy"] == 0.6
    assert "out of fold against the fold archive (model site-v2)" in read["birads"]["source"]
    assert measured_vote(session, settings, old) == {}
    # A case search reads the case-level column of its fusion, never the image table.
    case_read = measured_vote(session, settings, measured, unit="case")
    assert case_read["birads"]["accuracy"] == 0.7
    assert "cases by mean" in case_read["birads"]["source"]
    assert measured_vote(session, settings, measured, unit="case", fusion="best-pair") == {}
    assert measured_vote(session, settings, old, unit="case") == {}


def test_trains_case_level_figures_carry_the_case_votes_reliability() -> None:
    """Train's CV scores each fold's cases by every fusion rule and pools each rule's case
    votes into the table a case search reads (one suggestion per case, not per image)."""
    from mammosearch.train.crossval import CaseFoldFigures

    rng = np.random.default_rng(2)
    rows, vectors = [], []
    for patient in range(10):
        for side in ("L", "R"):
            birads = 1 if patient < 5 else 4
            for view in ("CC", "MLO"):
                rows.append(
                    {
                        "patient_id": patient,
                        "study_instance_uid": None,
                        "side": side,
                        "view": view,
                        "modality": "subtracted",
                        "birads": birads,
                    }
                )
                vectors.append(rng.normal([5, 0] if birads == 1 else [0, 5], 0.3))
    figures = CaseFoldFigures("birads")
    figures.add_fold(np.array(vectors, dtype=np.float32), rows)
    for fusion, scored in figures.summary().items():
        reliability = scored["vote_reliability"]
        assert reliability["suggestions"] == 20 and reliability["accuracy"] == 1.0, fusion
