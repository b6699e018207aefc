"""The case search's suggestion: as sure as the space's case-level measurement, never an image one.

Thirty patients, each breast a case (CC and MLO) of one BIRADS class whose views lie near
that class's axis, so the nearest cases agree and a measured vote is sure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import insert

from mammosearch.db.models import Image, ImageEmbedding, ImageStatus, Patient
from mammosearch.db.session import make_session_factory
from mammosearch.evaluate.runs import evaluate_space, measured_vote
from mammosearch.index import clear_readers, open_index
from mammosearch.search.case_search import run_search
from mammosearch.search.request import parse_search_request
from mammosearch.search.service import SearchService
from mammosearch.search.vote import SUGGESTED, UNMEASURED, Reliability
from tests.factories import make_space
from tests.unit.search.test_search_filtered import FixedSpaceService
from tests.unit.web_support import make_settings

DIM = 8
PATIENTS = 30
CLASSES = (1, 2, 4)


class MeasuredSpaceService(FixedSpaceService):
    """A fixed space whose vote is read as the product reads it (measured_vote)."""

    vote_reliability = SearchService.vote_reliability


@pytest.fixture
def archive(pg_database_url: str, tmp_path: Path):
    """The class-clustered case archive in PostgreSQL and an exact cosine index."""
    from tests.conftest import _truncate_all

    _truncate_all(pg_database_url)
    settings = make_settings(tmp_path / "data", pg_database_url, index_metrics=("cosine",))
    session = make_session_factory(settings.database_url)()
    session.execute(
        insert(Patient),
        [{"id": p, "source": "test", "source_patient_id": f"P{p}"} for p in range(1, PATIENTS + 1)],
    )
    rng = np.random.default_rng(3)
    rows, vectors = [], []
    for patient in range(1, PATIENTS + 1):
        for side_number, side in enumerate(("L", "R")):
            birads = CLASSES[(patient + side_number) % len(CLASSES)]
            for view in ("CC", "MLO"):
                image_id = len(rows) + 1
                rows.append({
                    "id": image_id, "patient_id": patient, "source": "test",
                    "source_file_name": f"P{patient}_{side}_CM_{view}.png",
                    "sha256": f"{image_id:064x}", "stored_path": f"/nowhere/{image_id}.png",
                    "side": side, "view": view, "modality": "subtracted", "width": 10,
                    "height": 10, "birads": birads,
                    "pathology": "Malignant" if birads >= 4 else "Benign",
                    "status": ImageStatus.INDEXED,
                })  # fmt: skip
                vector = rng.normal(scale=0.1, size=DIM)
                vector[CLASSES.index(birads)] += 1.0
                vectors.append(vector)
    matrix = np.array(vectors, dtype=np.float32)
    session.execute(insert(Image), rows)
    space = make_space(session, "synthetic", DIM, weights_sha256="0" * 64, weights_source="test")
    session.execute(insert(ImageEmbedding), [
        {"image_id": row["id"], "space_id": space.id, "indexed": True,
         "vector": matrix[row["id"] - 1].astype("<f4").tobytes()}
        for row in rows
    ])  # fmt: skip
    session.commit()
    clear_readers()
    open_index(settings, space, "cosine").add(np.arange(1, len(rows) + 1), matrix)
    yield MeasuredSpaceService(settings, space), session, space
    session.close()
    clear_readers()


def case_panel(service, session) -> dict:
    request = parse_search_request(
        {"unit": "case", "image_id": 1, "k": 5, "ranking": "similarity"}, ("cosine",)
    )
    service._reliability.clear()  # measured just now: no waiting for the cache's time-out
    return run_search(service, session, request).suggested_birads


def test_a_case_search_suggests_only_with_a_case_level_measurement(archive) -> None:
    """Unmeasured: the neighbour cases' labels are listed, nothing suggested. An image-level
    run does not change that; `evaluate --unit case` does, with the precision it measured."""
    service, session, space = archive
    panel = case_panel(service, session)
    assert panel["status"] == UNMEASURED and panel["birads"] is None
    assert panel["votes"] == {"2": 10} and panel["pathology"]["status"] == UNMEASURED

    evaluate_space(session, service.settings, space, ks=(1, 5))  # image unit
    assert measured_vote(session, service.settings, space)["birads"]["bins"]
    assert measured_vote(session, service.settings, space, unit="case") == {}
    assert case_panel(service, session)["status"] == UNMEASURED

    run = evaluate_space(session, service.settings, space, ks=(1, 5), unit="case")
    measured = measured_vote(session, service.settings, space, unit="case")
    assert measured["run_id"] == run.run_id
    table = measured["birads"]
    assert table["unit"] == "case" and table["fusion"] == "mean"
    assert table["suggestions"] == 2 * PATIENTS  # cases, not images
    panel = case_panel(service, session)
    assert panel["status"] == SUGGESTED and panel["birads"] == 2
    assert panel["precision"] == Reliability.from_dict(table).precision_at(panel["share"])
    assert panel["measured"]["source"] == table["source"] and "cases by mean" in table["source"]
    assert panel["pathology"]["status"] == SUGGESTED
    assert panel["pathology"]["suggested"] == "benign"
    # The image search still reads the image run's table, and another fusion is unmeasured.
    assert measured_vote(session, service.settings, space)["birads"].get("unit") is None
    assert measured_vote(session, service.settings, space, unit="case", fusion="best-pair") == {}
