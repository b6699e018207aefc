"""Filtered search through the product (real rows in SQLite, HNSW and IVF indexes) is full.

The search service's filter table decides the allowed images from numpy arrays; these tests
check that it agrees with the SQL filters, that the index fills k from them with any
factory, and that a label changed or an image added afterwards is seen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

import mammosearch.index as index_module
from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace, Image, ImageEmbedding, ImageStatus, Patient
from mammosearch.db.session import make_session_factory
from mammosearch.index import clear_readers, open_index
from mammosearch.index import filtered as filtered_module
from mammosearch.search.request import SearchFilters
from mammosearch.search.service import SearchService
from tests.factories import make_space
from tests.unit.index.test_index_filtered import clustered_vectors
from tests.unit.web_support import fresh_sqlite, make_settings

DIM = 32
COUNT = 3000
PATIENTS = 150
K = 10


class FixedSpaceService(SearchService):
    """The product's search service, its embedding space given (no backbone to load)."""

    def __init__(self, settings: Settings, space: EmbeddingSpace) -> None:
        super().__init__(settings)
        self._fixed_space = space

    def space(self, session: Session) -> EmbeddingSpace:
        return session.get(EmbeddingSpace, self._fixed_space.id)

    def vote_reliability(
        self, session: Session, space: EmbeddingSpace, metric: str = "", unit: str = "image",
        fusion: str | None = None,
    ) -> dict:  # fmt: skip
        return {}


def image_rows(first_id: int, count: int, rng: np.random.Generator) -> list[dict]:
    views = ["CC"] * 8 + ["MLO"] * 8 + ["ML"]  # ML: about 6%
    pathologies = ["Benign"] * 10 + ["Malignant"] * 6 + ["Normal"] * 3 + [None]
    rows = []
    for image_id in range(first_id, first_id + count):
        birads = int(rng.integers(1, 7))
        rows.append(
            {
                "id": image_id,
                "patient_id": int(rng.integers(1, PATIENTS + 1)),
                "source": "test",
                "source_file_name": f"img{image_id}.png",
                "sha256": f"{image_id:064x}",
                "stored_path": f"/nowhere/{image_id}.png",
                "side": "L" if rng.random() < 0.5 else "R",
                "view": views[int(rng.integers(len(views)))],
                "modality": "subtracted" if rng.random() < 0.99 else "low-energy",
                "width": 10,
                "height": 10,
                "birads": birads if rng.random() < 0.95 else None,
                "pathology": pathologies[int(rng.integers(len(pathologies)))],
                "status": ImageStatus.INDEXED,
            }
        )
    return rows


@pytest.fixture(params=["HNSW32", "IVF32,Flat"])
def archive(request, tmp_path: Path, sqlite_template: Path, monkeypatch):
    """3000 indexed images in SQLite with clustered vectors in an index of the factory."""
    monkeypatch.setattr(filtered_module, "EXACT_MAX_ROWS", 50)  # the selector path runs too
    settings = make_settings(
        tmp_path / "data",
        fresh_sqlite(sqlite_template, tmp_path / "db"),
        index_factory=request.param,
        index_segment_size=1000,
        index_metrics=("l2",),
    )
    session = make_session_factory(settings.database_url)()
    session.execute(
        insert(Patient),
        [{"id": p, "source": "test", "source_patient_id": f"P{p}"} for p in range(1, PATIENTS + 1)],
    )
    session.execute(insert(Image), image_rows(1, COUNT, np.random.default_rng(0)))
    space = make_space(session, "synthetic", DIM, weights_sha256="0" * 64, weights_source="test")
    vectors = clustered_vectors(COUNT + 200)
    session.execute(
        insert(ImageEmbedding),
        [
            {
                "image_id": i,
                "space_id": space.id,
                "vector": vectors[i - 1].astype("<f4").tobytes(),
                "indexed": True,
            }
            for i in range(1, COUNT + 1)
        ],
    )
    session.commit()
    clear_readers()
    open_index(settings, space, "l2").add(np.arange(1, COUNT + 1), vectors[:COUNT])
    yield settings, session, space, vectors
    session.close()
    clear_readers()


def sql_allowed(session: Session, filters: SearchFilters, exclude: set[int]) -> np.ndarray:
    query = filters.apply(select(Image.id).where(Image.status == ImageStatus.INDEXED))
    return np.array([i for i in session.scalars(query) if i not in exclude], dtype=np.int64)


def exact_ids(vectors: np.ndarray, query: np.ndarray, allowed: np.ndarray, k: int) -> set[int]:
    distances = ((vectors[allowed - 1] - query) ** 2).sum(axis=1)
    return set(allowed[np.argsort(distances, kind="stable")[:k]].tolist())


FILTERS = [
    SearchFilters(view="ML", pathology="malignant", birads_min=5),  # ~0.3%
    SearchFilters(view="ml", side="r"),  # ~3%
    SearchFilters(modality="low-energy"),  # ~1%
    SearchFilters(pathology="Malignant", birads_max=3),  # ~15%
    SearchFilters(side="L"),  # ~50%
    SearchFilters(side="R", view="ML", pathology="normal", birads_min=6),  # fewer than k
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: repr(f)[14:60])
def test_filtered_search_returns_min_k_matches_close_to_exact(archive, filters):
    """Every filter, from a handful of matches to half the archive: full and right."""
    settings, session, space, vectors = archive
    service = FixedSpaceService(settings, space)
    found, expected = 0, 0
    for query_id in (7, 700, 1500, 2999):
        response = service.search_image_id(session, query_id, k=K, metric="l2", filters=filters)
        allowed = sql_allowed(session, filters, {query_id})
        result_ids = [hit.image_id for hit in response.results]
        assert len(result_ids) == min(K, len(allowed))
        assert set(result_ids) <= set(allowed.tolist())
        truth = exact_ids(vectors, vectors[query_id - 1], allowed, K)
        found += len(set(result_ids) & truth)
        expected += len(truth)
    assert found / expected >= 0.95


@pytest.mark.parametrize("ranking", ["similarity", "consensus"])
def test_a_short_list_is_full_in_either_order(archive, ranking):
    """k below the vote's ten: both orders fill k from the allowed images, consensus from
    the ten nearest allowed ones, whatever the index."""
    settings, session, space, vectors = archive
    service = FixedSpaceService(settings, space)
    for filters in FILTERS:
        allowed = sql_allowed(session, filters, {700})
        response = service.search_image_id(
            session, 700, k=3, metric="l2", filters=filters, ranking=ranking
        )
        result_ids = [hit.image_id for hit in response.results]
        assert len(result_ids) == min(3, len(allowed)), filters
        assert set(result_ids) <= set(allowed.tolist())
        nearest = exact_ids(vectors, vectors[699], allowed, 10)
        assert len(set(result_ids) & nearest) >= len(result_ids) - 1, filters  # ANN: one miss
        assert response.ranking == ranking


def test_the_filter_table_agrees_with_the_sql_filters(archive):
    """The numpy table allows exactly the ids the SQL filters select, for every filter."""
    settings, session, space, _ = archive
    table = FixedSpaceService(settings, space).filter_table
    for filters in [*FILTERS, SearchFilters(exclude_patient_id=3, birads_min=2, birads_max=4)]:
        mask = table.allowed(session, filters, {5, 6})
        np.testing.assert_array_equal(
            np.flatnonzero(mask), np.sort(sql_allowed(session, filters, {5, 6}))
        )


def test_changed_labels_and_new_images_are_seen_by_the_next_search(archive, monkeypatch):
    """A relabelled image and newly indexed ones pass the filter, a relabelled-away one no
    longer does: the table re-reads what changed (checked every second in production, as
    the index readers reload; at every search here)."""
    settings, session, space, vectors = archive
    monkeypatch.setattr(index_module, "READER_RELOAD_INTERVAL_S", 0.0)
    service = FixedSpaceService(settings, space)
    service.filter_table.check_interval_s = 0.0
    rare = SearchFilters(view="xccl")
    assert service.search_image_id(session, 10, k=K, metric="l2", filters=rare).results == []
    session.execute(update(Image).where(Image.id.in_([11, 12])).values(view="XCCL"))
    session.execute(insert(Image), image_rows(COUNT + 1, 3, np.random.default_rng(5)))
    session.execute(update(Image).where(Image.id > COUNT).values(view="xccl"))
    session.commit()
    open_index(settings, space, "l2").add(
        np.arange(COUNT + 1, COUNT + 4), vectors[COUNT : COUNT + 3]
    )
    response = service.search_image_id(session, 10, k=K, metric="l2", filters=rare)
    assert {hit.image_id for hit in response.results} == {11, 12, COUNT + 1, COUNT + 2, COUNT + 3}
    session.execute(update(Image).where(Image.id == 11).values(view="CC"))
    session.commit()
    response = service.search_image_id(session, 10, k=K, metric="l2", filters=rare)
    assert {hit.image_id for hit in response.results} == {12, COUNT + 1, COUNT + 2, COUNT + 3}


def test_a_table_behind_the_database_does_not_return_wrong_images(archive):
    """Even before the table's next check, a hit whose row no longer passes is dropped and
    the search is redone on a fresh table: the answer is the database's."""
    settings, session, space, _ = archive
    service = FixedSpaceService(settings, space)
    service.filter_table.check_interval_s = 3600.0
    filters = SearchFilters(side="L")
    first = service.search_image_id(session, 10, k=K, metric="l2", filters=filters)
    moved = [hit.image_id for hit in first.results[:3]]
    session.execute(update(Image).where(Image.id.in_(moved)).values(side="R"))
    session.commit()
    again = service.search_image_id(session, 10, k=K, metric="l2", filters=filters)
    assert len(again.results) == K
    assert not set(moved) & {hit.image_id for hit in again.results}
