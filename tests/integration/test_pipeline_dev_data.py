"""The real dev archive end to end: imported, embedded, indexed, searched, verified."""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, select

from mammosearch.config import Settings
from mammosearch.db.models import Image, ImageEmbedding, ImageStatus
from mammosearch.db.session import session_scope
from mammosearch.embed.serving import open_serving_space
from mammosearch.index import open_index
from mammosearch.pipeline.index_stage import verify_index
from mammosearch.pipeline.process import process_pending
from mammosearch.search.request import SearchFilters
from mammosearch.search.service import SearchService


def test_every_dev_image_is_indexed_exactly_once(dev_archive: Settings) -> None:
    with session_scope(dev_archive.database_url) as session:
        statuses = dict(
            session.execute(select(Image.status, func.count()).group_by(Image.status)).all()
        )
        space = open_serving_space(session, dev_archive)
        assert statuses == {ImageStatus.INDEXED: 503}
        assert space.backbone == "efficientnet-lite0" and space.pretrained
        for metric in dev_archive.index_metrics:
            ids = open_index(dev_archive, space, metric).ids()
            assert len(ids) == 503 == len(np.unique(ids))
        assert verify_index(session, dev_archive, space)["clean"]


def test_running_the_pipeline_again_changes_nothing(dev_archive: Settings) -> None:
    summary = process_pending(dev_archive)
    assert (summary.embedded, summary.indexed) == (0, 0)
    with session_scope(dev_archive.database_url) as session:
        assert session.scalar(select(func.count()).select_from(ImageEmbedding)) == 503


def test_search_by_archived_image_excludes_itself_and_joins_metadata(
    dev_archive: Settings,
) -> None:
    service = SearchService(dev_archive)
    with session_scope(dev_archive.database_url) as session:
        response = service.search_image_id(session, 1, k=10, metric="cosine", ranking="similarity")
        voted = service.search_image_id(session, 1, k=10, metric="cosine", ranking="consensus")
    # The served default order shows the same ten, those agreeing with the vote first.
    assert {h.image_id for h in voted.results} == {h.image_id for h in response.results}
    assert voted.suggested_birads == response.suggested_birads
    assert len(response.results) == 10
    assert all(hit.image_id != 1 for hit in response.results)
    assert all(hit.patient_id and hit.modality == "subtracted" for hit in response.results)
    similarities = [hit.similarity for hit in response.results]
    assert similarities == sorted(similarities, reverse=True)
    assert response.suggested_birads["leading"] in {1, 2, 3, 4, 5, 6}
    assert response.suggested_birads["status"] == "unmeasured"  # no evaluation run yet
    assert abs(sum(response.suggested_birads["distribution"].values()) - 1) < 1e-3
    assert {"index", "join", "total"} <= response.timing_ms.keys()


def test_filters_do_not_shorten_the_result_list(dev_archive: Settings) -> None:
    service = SearchService(dev_archive)
    with session_scope(dev_archive.database_url) as session:
        query = session.get(Image, 1)
        filters = SearchFilters(
            side="R",
            view="MLO",
            birads_min=4,
            birads_max=6,
            exclude_patient_id=query.patient_id,
        )
        response = service.search_image_id(
            session, 1, k=20, metric="l2", filters=filters, ranking="similarity"
        )
        hits = response.results
        voted = service.search_image_id(session, 1, k=20, metric="l2", filters=filters).results
        assert {h.image_id for h in voted} == {h.image_id for h in hits}
        assert [h.image_id for h in voted[10:]] == [h.image_id for h in hits[10:]]
        assert len(hits) == 20
        rows = {
            i.id: i
            for i in session.scalars(select(Image).where(Image.id.in_([h.image_id for h in hits])))
        }
    for hit in hits:
        row = rows[hit.image_id]
        assert (row.side, row.view) == ("R", "MLO") and 4 <= row.birads <= 6
        assert row.patient_id != query.patient_id
    distances = [hit.distance for hit in hits]
    assert distances == sorted(distances)


def test_search_by_uploaded_file_finds_the_archived_copy_first(dev_archive: Settings) -> None:
    from PIL import Image as PILImage

    from tests.conftest import DEV_DATA

    service = SearchService(dev_archive)
    with session_scope(dev_archive.database_url) as session:
        archived = session.scalars(select(Image).order_by(Image.id).limit(1)).one()
        path = DEV_DATA / "Subtracted images" / archived.source_file_name
        with PILImage.open(path) as upload:
            response = service.search_image(session, upload, k=5, metric="cosine")
    assert response.results[0].image_id == archived.id
    assert response.results[0].similarity > 0.999
    assert response.timing_ms["embed"] > 0
