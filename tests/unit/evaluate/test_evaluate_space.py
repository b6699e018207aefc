"""evaluate_space and `mammosearch evaluate` on a real database with synthetic vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.cli.evaluate_commands import evaluate_command
from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace, EvaluationRun, ImageEmbedding
from mammosearch.evaluate import EvaluationError, evaluate_space, resolve_space
from tests.factories import make_bare_image, make_patient, make_space, make_vector

DIM = 8
BIRADS = [1, 1, 2, 3, 4, 5, 5, None]  # two images per patient; the last has no BI-RADS
COARSE_DIRECTION = {None: 0, 1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 3}
PATHOLOGY = ["Normal", "Normal", "Benign", "Benign", "Malignant", "Malignant", None, None]


def seed_archive(session: Session) -> EmbeddingSpace:
    """Four patients x two images, each vector = its coarse BI-RADS direction + small noise."""
    space = make_space(session, dim=DIM, commit=False)
    rng = np.random.default_rng(5)
    for position, (birads, pathology) in enumerate(zip(BIRADS, PATHOLOGY, strict=True)):
        if position % 2 == 0:
            patient = make_patient(session, f"P{position // 2}", None, commit=False)
        image = make_bare_image(
            session, patient, commit=False, source_file_name=f"P{position // 2}_{position}.jpg",
            birads=birads, pathology=pathology,
        )  # fmt: skip
        vector = np.zeros(DIM, dtype=np.float32)
        vector[COARSE_DIRECTION[birads]] = 1.0
        vector += rng.normal(scale=0.05, size=DIM).astype(np.float32)
        make_vector(session, image, space, vector, commit=False)
    session.commit()
    return space


def test_evaluate_space_scores_the_archive_and_records_a_done_run(
    session: Session, settings: Settings
) -> None:
    """Vectors come from image_embeddings; the run row holds metrics, classes and counts."""
    space = seed_archive(session)
    result = evaluate_space(
        session, settings, space, label="birads-coarse", protocol="patient-excluded",
        metric="cosine", ks=(1, 5),
    )  # fmt: skip
    # Coarse classes: 1 (P0: 2 images), 2-3 (P1: 2 images), 4-6 (P2: 2, P3: 1); P3's
    # second image has no BI-RADS. Only the 4-6 images have a relevant other patient.
    assert result.archive_size == 8
    assert result.excluded == {"no_label": 1, "no_relevant_candidate": 4}
    assert result.queries == 3
    assert result.metrics["precision@1"] == pytest.approx(1.0)
    assert result.embedding_space["backbone"] == "densenet121"
    assert result.embedding_space["untrained"] is True
    assert result.per_query[0]["query_name"].endswith(".jpg")

    run = session.scalars(select(EvaluationRun)).one()
    assert (run.status, run.protocol, run.label, run.metric) == (
        "done", "patient-excluded", "birads-coarse", "cosine",
    )  # fmt: skip
    assert run.id == result.run_id and run.space_id == space.id
    assert run.metrics["precision@1"] == pytest.approx(1.0)
    assert run.per_class["4-6"]["queries"] == 3
    assert (run.queries, run.archive_size) == (3, 8)
    assert run.config["embedding_space"]["id"] == space.id
    assert run.finished_at is not None and run.duration_s >= 0


def test_pathology_label_reads_the_pathology_column(session: Session, settings: Settings) -> None:
    space = seed_archive(session)
    result = evaluate_space(session, settings, space, label="pathology", protocol="self-excluded")
    assert list(result.per_class) == ["normal", "benign", "malignant"]
    assert result.excluded["no_label"] == 2


def test_a_wrong_sized_vector_fails_the_run_with_the_image_named(
    session: Session, settings: Settings
) -> None:
    """A vector of the wrong dimension is reported by image id and the run marked failed."""
    space = seed_archive(session)
    broken = session.scalars(select(ImageEmbedding).limit(1)).one()
    broken.vector = np.zeros(DIM - 1, dtype=np.float32).tobytes()
    session.commit()
    with pytest.raises(EvaluationError, match=f"image {broken.image_id}: vector has 7 values"):
        evaluate_space(session, settings, space)
    run = session.scalars(select(EvaluationRun)).one()
    assert run.status == "failed" and "vector has 7 values" in run.error


def test_resolve_space_by_id_and_by_backbone(session: Session, settings: Settings) -> None:
    space = seed_archive(session)
    make_space(session, backbone="efficientnet-lite0", dim=4)  # newer, but without vectors
    session.commit()
    assert resolve_space(session, settings, space_id=space.id).id == space.id
    assert resolve_space(session, settings, backbone="densenet121").id == space.id
    with pytest.raises(EvaluationError, match="'efficientnet-lite0': no embedding space"):
        resolve_space(session, settings, backbone="efficientnet-lite0")
    with pytest.raises(EvaluationError, match="space id 999"):
        resolve_space(session, settings, space_id=999)


def test_cli_prints_the_space_and_table_and_writes_json(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    """`mammosearch evaluate` names the space, prints metric x k, writes the JSON file."""
    space = seed_archive(session)
    out = tmp_path / "reports" / "eval.json"
    outcome = CliRunner().invoke(
        evaluate_command,
        ["--space-id", str(space.id), "--label", "birads", "--protocol", "self-included",
         "--metric", "l2", "--k", "1,5", "--json", str(out), "--no-progress"],
    )  # fmt: skip
    assert outcome.exit_code == 0, outcome.output
    assert f"evaluating embedding space {space.id} (densenet121, UNTRAINED)" in outcome.output
    assert "SELF-INCLUDED" in outcome.output
    assert "k=1" in outcome.output and "precision" in outcome.output
    document = json.loads(out.read_text())
    assert document["protocol"] == "self-included"
    assert document["embedding_space"]["id"] == space.id
    assert document["metrics"]["precision@1"] == 1.0
    assert set(document) >= {"queries", "per_class", "chance", "metrics"}


def test_cli_reports_an_unknown_backbone_as_a_usage_error(
    session: Session, settings: Settings
) -> None:
    seed_archive(session)
    outcome = CliRunner().invoke(evaluate_command, ["--backbone", "vgg16", "--no-progress"])
    assert outcome.exit_code == 1
    assert "backbone 'vgg16': no embedding space with vectors" in outcome.output


def _seed_wide_archive(session: Session, dim: int = 32) -> EmbeddingSpace:
    """240 images of 60 patients in 4 BIRADS classes, class direction + wide noise."""
    space = make_space(session, backbone="efficientnet-lite0", dim=dim, commit=False)
    rng = np.random.default_rng(11)
    directions = rng.normal(size=(4, dim)).astype(np.float32)
    for position in range(240):
        if position % 4 == 0:
            patient = make_patient(session, f"W{position // 4}", None, commit=False)
        birads = 1 + (position // 4) % 4
        image = make_bare_image(
            session, patient, commit=False, source_file_name=f"W{position}.jpg", birads=birads
        )
        vector = directions[birads - 1] + rng.normal(scale=1.5, size=dim).astype(np.float32)
        make_vector(session, image, space, vector, commit=False)
    session.commit()
    return space


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF8,Flat"])
def test_evaluation_through_the_served_index_ranks_with_that_index(
    session: Session, settings: Settings, factory: str
) -> None:
    """--through-index asks the space's own index (its factory, tuned search) for the
    candidates: exact for Flat, within the recall floor's reach for ANN factories."""
    from mammosearch.pipeline.index_stage import index_space

    served_settings = settings.with_overrides(index_factory=factory, index_segment_size=100)
    space = _seed_wide_archive(session)
    index_space(session, served_settings, space)
    exact = evaluate_space(session, served_settings, space, ks=(1, 5, 10), map_cutoff=10)
    served = evaluate_space(session, served_settings, space, ks=(1, 5, 10), through_index=True)
    assert served.config["through_index"] is True
    assert served.config["served_index"]["factory"] == factory
    assert served.config["served_index"]["vectors"] == 240
    assert set(served.metrics) == set(exact.metrics)  # mAP is AP@10 on both sides
    for key in ("precision@1", "precision@5", "precision@10", "ndcg@10", "map@10"):
        if factory == "Flat":
            assert served.metrics[key] == pytest.approx(exact.metrics[key]), key
        else:
            assert abs(served.metrics[key] - exact.metrics[key]) <= 0.05, key
    run = session.get(EvaluationRun, served.run_id)
    assert run.config["through_index"] is True and run.config["served_index"]["factory"] == factory


def test_a_consensus_run_is_recorded_as_such_and_compared_only_with_its_kind(
    session: Session, settings: Settings
) -> None:
    """The order is part of a run's config; a regression check never pairs the two orders,
    and consensus is refused for a label search does not vote by."""
    from mammosearch.evaluate.regression import previous_run

    space = seed_archive(session)
    first = evaluate_space(session, settings, space, ks=(1, 5))
    voted = evaluate_space(session, settings, space, ks=(1, 5), ranking="consensus")
    again = evaluate_space(session, settings, space, ks=(1, 5))
    runs = {run.id: run for run in session.scalars(select(EvaluationRun))}
    assert runs[voted.run_id].config["order"] == "consensus"
    assert voted.config["order"] == "consensus" and first.config["order"] == "similarity"
    assert previous_run(session, runs[again.run_id]).id == first.run_id
    assert previous_run(session, runs[voted.run_id]) is None
    with pytest.raises(EvaluationError, match="--label birads"):
        evaluate_space(session, settings, space, label="pathology", ranking="consensus")
