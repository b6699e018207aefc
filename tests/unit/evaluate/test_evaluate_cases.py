"""Case-level evaluation: cases as queries, fused scores, patient-excluded, from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session

from mammosearch.cli.evaluate_commands import evaluate_command
from mammosearch.config import Settings
from mammosearch.db.models import Image, ImageEmbedding, Patient
from mammosearch.evaluate.case_units import evaluate_cases, group_cases
from tests.unit.evaluate.test_evaluate_space import make_space

DIM = 8


def case_rows(rng: np.random.Generator, patients: int = 12) -> tuple[list[dict], np.ndarray]:
    """Each patient: a left breast (CC + MLO) and a right one (CC only); the BIRADS of a breast
    sets its direction; the MLO of every case also carries a shared nuisance direction."""
    rows, vectors = [], []
    for patient in range(patients):
        for side, views in (("L", ("CC", "MLO")), ("R", ("CC",))):
            birads = 1 + (patient + (side == "R")) % 3
            for view in views:
                vector = rng.normal(scale=0.05, size=DIM)
                vector[birads] += 1.0
                if view == "MLO":
                    vector[0] += 0.6
                rows.append(
                    {
                        "patient_id": patient,
                        "study_instance_uid": None,
                        "side": side,
                        "view": view,
                        "modality": "subtracted",
                        "birads": birads,
                        "pathology": None,
                        "findings": None,
                    }
                )
                vectors.append(vector)
    return rows, np.array(vectors, dtype=np.float32)


@pytest.mark.parametrize("fusion", ["mean", "best-pair", "matched-views"])
def test_every_case_queries_the_other_patients_cases(fusion: str) -> None:
    rows, vectors = case_rows(np.random.default_rng(0))
    result = evaluate_cases(vectors, list(range(1, len(rows) + 1)), rows, fusion=fusion, ks=(1, 5))
    assert result.queries == 24 and result.archive_size == 24
    assert result.config["unit"] == "case" and result.config["fusion"] == fusion
    assert result.config["views_per_case"] == {"1": 12, "2": 12}
    assert result.metrics["precision@1"] == 1.0  # the label sets the direction
    for row in result.per_query:
        assert all(n["patient_id"] != row["patient_id"] for n in row["neighbours"])
        assert row["query_name"].split("-")[1] in ("L", "R")


def test_a_case_is_labelled_by_its_most_suspicious_view() -> None:
    rows, vectors = case_rows(np.random.default_rng(1), patients=2)
    rows[0]["birads"] = 5  # patient 0's left CC; its MLO says 2
    groups = group_cases(rows)
    assert [key.case_id for key in groups.keys] == ["0-L", "0-R", "1-L", "1-R"]
    result = evaluate_cases(
        vectors, list(range(len(rows))), rows, protocol="self-included", ks=(1,)
    )
    assert result.per_class["5"]["images"] == 1  # one case, though one view says 2


def test_the_cli_scores_cases_and_says_how_many(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    rows, vectors = case_rows(np.random.default_rng(2), patients=6)
    space = make_space(session, dim=DIM)
    patients = {}
    for position, (row, vector) in enumerate(zip(rows, vectors, strict=True)):
        if row["patient_id"] not in patients:
            patients[row["patient_id"]] = Patient(
                source="test", source_patient_id=f"P{row['patient_id']}"
            )
            session.add(patients[row["patient_id"]])
            session.flush()
        image = Image(
            patient_id=patients[row["patient_id"]].id, source="test",
            source_file_name=f"{position}.png", sha256=f"{position:064d}",
            stored_path=f"/nowhere/{position}.png", side=row["side"], view=row["view"],
            modality="subtracted", width=8, height=8, birads=row["birads"],
        )  # fmt: skip
        session.add(image)
        session.flush()
        session.add(
            ImageEmbedding(
                image_id=image.id, space_id=space.id, vector=vector.astype("<f4").tobytes()
            )
        )
    session.commit()
    out = tmp_path / "case.json"
    outcome = CliRunner().invoke(
        evaluate_command,
        ["--space-id", str(space.id), "--unit", "case", "--fusion", "best-pair", "--k", "1,5",
         "--json", str(out), "--no-progress"],
    )  # fmt: skip
    assert outcome.exit_code == 0, outcome.output
    assert "unit case, fusion best-pair: 12 cases of 18 images" in outcome.output
    document = json.loads(out.read_text())
    assert document["queries"] == 12 and "precision@5" in document["metrics"]
    assert document["config"]["unit"] == "case"
    refused = CliRunner().invoke(
        evaluate_command, ["--space-id", str(space.id), "--fusion", "mean", "--no-progress"]
    )
    assert refused.exit_code == 2 and "--fusion is for --unit case" in refused.output
