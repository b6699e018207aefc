"""Case-level search in the core, on real rows (SQLite and PostgreSQL) and every index type.

Forty patients, each breast a case of a CC and an MLO view (every fifth breast only a CC),
the views of a case near their case's own centre. The answers are checked against the
fused scores computed over every case (mammosearch.search.cases), so over-fetching image hits and
regrouping them must find the same nearest cases, each breast once, with all its views.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import insert

from mammosearch.db.models import Image, ImageEmbedding, ImageStatus, Patient
from mammosearch.db.session import make_session_factory
from mammosearch.index import clear_readers, open_index
from mammosearch.search.case_search import MixedSides, QueryUpload, run_search
from mammosearch.search.cases import case_key, fused_scores, group_starts, view_tag
from mammosearch.search.request import parse_search_request
from mammosearch.search.service import SearchError
from tests.factories import make_space
from tests.unit.search.test_search_filtered import FixedSpaceService
from tests.unit.web_support import make_settings

DIM = 16
PATIENTS = 40


def archive_rows(rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
    rows, vectors = [], []
    for patient in range(1, PATIENTS + 1):
        for side in ("L", "R"):
            centre = rng.standard_normal(DIM) * 2
            birads = int(rng.integers(1, 6))
            views = ("CC",) if (patient * 2 + (side == "R")) % 5 == 0 else ("CC", "MLO")
            for view in views:
                image_id = len(rows) + 1
                rows.append(
                    {
                        "id": image_id,
                        "patient_id": patient,
                        "source": "test",
                        "source_file_name": f"P{patient}_{side}_CM_{view}.png",
                        "sha256": f"{image_id:064x}",
                        "stored_path": f"/nowhere/{image_id}.png",
                        "side": side,
                        "view": view,
                        "modality": "subtracted",
                        "width": 10,
                        "height": 10,
                        "birads": birads,
                        "pathology": "Malignant" if birads >= 4 else "Benign",
                        "status": ImageStatus.INDEXED,
                    }
                )
                vectors.append(centre + rng.standard_normal(DIM) * 0.5)
    return rows, np.array(vectors, dtype=np.float32)


@pytest.fixture(params=["Flat", "HNSW32", "IVF8,Flat"])
def archive(request, database_url: str, tmp_path: Path):
    """The synthetic archive in the database and in an index of the factory."""
    yield from _archive(request.param, database_url, tmp_path)


@pytest.fixture
def flat_archive(database_url: str, tmp_path: Path):
    """The synthetic archive with an exact index."""
    yield from _archive("Flat", database_url, tmp_path)


def _archive(factory: str, database_url: str, tmp_path: Path):
    settings = make_settings(
        tmp_path / "data", database_url, index_factory=factory, index_metrics=("cosine",)
    )
    session = make_session_factory(settings.database_url)()
    session.execute(
        insert(Patient),
        [{"id": p, "source": "test", "source_patient_id": f"P{p}"} for p in range(1, PATIENTS + 1)],
    )
    rows, vectors = archive_rows(np.random.default_rng(0))
    session.execute(insert(Image), rows)
    space = make_space(session, "synthetic", DIM, weights_sha256="0" * 64, weights_source="test")
    session.execute(
        insert(ImageEmbedding),
        [
            {
                "image_id": row["id"],
                "space_id": space.id,
                "indexed": True,
                "vector": vectors[row["id"] - 1].astype("<f4").tobytes(),
            }
            for row in rows
        ],
    )
    session.commit()
    clear_readers()
    open_index(settings, space, "cosine").add(np.arange(1, len(rows) + 1), vectors)
    yield FixedSpaceService(settings, space), session, rows, vectors
    session.close()
    clear_readers()


def exact_case_order(rows, vectors, query_ids, fusion, allowed) -> list[str]:
    """Every allowed case scored against the query's views by brute force, nearest first."""
    candidates = sorted(
        (row for row in rows if allowed(row)),
        key=lambda row: (case_key(row["patient_id"], None, row["side"]), row["id"]),
    )
    keys = [case_key(row["patient_id"], None, row["side"]) for row in candidates]
    starts = group_starts(keys)
    query_rows = [rows[i - 1] for i in query_ids]
    scores = fused_scores(
        vectors[[i - 1 for i in query_ids]],
        [view_tag(row["view"], row["modality"]) for row in query_rows],
        [0],
        vectors[[row["id"] - 1 for row in candidates]],
        [view_tag(row["view"], row["modality"]) for row in candidates],
        starts,
        fusion,
        "cosine",
    )[0]
    return [keys[int(starts[i])].case_id for i in np.argsort(-scores, kind="stable")]


def search(service, session, **values):
    request = parse_search_request({"unit": "case", "ranking": "similarity", **values}, ("cosine",))
    return run_search(service, session, request)


@pytest.mark.parametrize("fusion", ["mean", "best-pair", "matched-views"])
def test_the_nearest_cases_come_back_each_breast_once_with_all_its_views(
    archive, fusion: str
) -> None:
    service, session, rows, vectors = archive
    query = rows[0]  # P1's left CC; its case also has an MLO (image 2)
    response = search(service, session, image_id=query["id"], k=8, fusion=fusion)
    found = [hit.case_id for hit in response.results]
    assert len(found) == 8 and len(set(found)) == 8
    assert [view["image_id"] for view in response.query["views"]] == [1, 2]
    expected = exact_case_order(rows, vectors, [1, 2], fusion, lambda row: row["patient_id"] != 1)
    overlap = len(set(found) & set(expected[:8])) / 8
    assert overlap >= (1.0 if service.settings.index_factory == "Flat" else 0.75), (
        found,
        expected[:8],
    )
    for hit in response.results:
        assert hit.patient_id != "P1"
        members = [
            r["id"]
            for r in rows
            if case_key(r["patient_id"], None, r["side"]).case_id == hit.case_id
        ]
        assert [view.image_id for view in hit.views] == members
        assert hit.best_view_image_id in members
    similarities = [hit.similarity for hit in response.results]
    assert similarities == sorted(similarities, reverse=True)


def test_filters_make_cases_of_the_views_that_pass_and_never_come_back_short(archive) -> None:
    service, session, rows, _ = archive
    cc_only = search(service, session, image_id=1, k=10, view="CC")
    assert len(cc_only.results) == 10
    assert {view.view for hit in cc_only.results for view in hit.views} == {"CC"}
    rare = search(service, session, image_id=1, k=50, birads_min=5, side="R")
    wanted = {
        case_key(r["patient_id"], None, r["side"]).case_id
        for r in rows
        if r["birads"] >= 5 and r["side"] == "R" and r["patient_id"] != 1
    }
    assert {hit.case_id for hit in rare.results} == wanted  # fewer than k: all of them


def test_the_query_patient_stays_out_unless_asked_and_its_own_case_never_comes_back(
    archive,
) -> None:
    service, session, _, _ = archive
    kept = search(service, session, image_id=1, k=79, exclude_same_patient=False)
    found = [hit.case_id for hit in kept.results]
    assert "1-R" in found and "1-L" not in found
    assert kept.query["excluded_patient_ids"] == []


def test_a_case_by_patient_and_breast_and_a_single_view_case(flat_archive) -> None:
    """Same answer by image id and by patient + breast; a one-view case asks and answers."""
    service, session, rows, _ = flat_archive
    by_image = search(service, session, image_id=1, k=5)
    by_patient = search(service, session, patient_id="P1", breast="L", k=5)
    assert [h.case_id for h in by_image.results] == [h.case_id for h in by_patient.results]
    single = next(r for r in rows if (r["patient_id"] * 2 + (r["side"] == "R")) % 5 == 0)
    response = search(service, session, image_id=single["id"], k=5, fusion="matched-views")
    assert len(response.query["views"]) == 1 and len(response.results) == 5
    assert any(len(hit.views) == 1 for hit in search(service, session, image_id=1, k=79).results)


def test_two_studies_of_one_breast_are_two_cases_and_a_patient_query_asks_which(
    flat_archive,
) -> None:
    service, session, _, _ = flat_archive
    session.execute(
        Image.__table__.update()
        .where(Image.patient_id == 3, Image.side == "L", Image.view == "MLO")
        .values(study_instance_uid="1.2.3.2")
    )
    session.execute(
        Image.__table__.update()
        .where(Image.patient_id == 3, Image.side == "L", Image.view == "CC")
        .values(study_instance_uid="1.2.3.1")
    )
    session.commit()
    with pytest.raises(SearchError, match=r"names 2 cases \(3-L-1.2.3.1, 3-L-1.2.3.2\)"):
        search(service, session, patient_id="P3", breast="L")
    chosen = search(service, session, patient_id="P3", breast="L", study_uid="1.2.3.2", k=3)
    assert chosen.query["case"]["case_id"] == "3-L-1.2.3.2"
    assert [view["view"] for view in chosen.query["views"]] == ["MLO"]


def test_files_of_both_breasts_are_refused_naming_them(flat_archive) -> None:
    service, session, _, _ = flat_archive
    uploads = [QueryUpload("P9_L_CM_CC.png", b"left"), QueryUpload("P9_R_CM_CC.png", b"right")]
    request = parse_search_request({"unit": "case"}, ("cosine",))
    with pytest.raises(MixedSides, match="L: P9_L_CM_CC.png; R: P9_R_CM_CC.png"):
        run_search(service, session, request, uploads)
