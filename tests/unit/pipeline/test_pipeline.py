"""The pipeline: embed once, index once, fail clearly, verify and repair against the DB."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import Image, ImageEmbedding, ImageStatus
from mammosearch.embed.serving import open_serving_space, serving_embedder
from mammosearch.index import open_index
from mammosearch.pipeline.embed_stage import embed_images
from mammosearch.pipeline.index_stage import (
    index_space,
    rebuild_indexes,
    remove_images,
    verify_index,
)
from mammosearch.pipeline.process import process_pending
from tests.factories import make_image, make_patient


@pytest.fixture
def lite_settings(settings: Settings) -> Settings:
    """Test settings with the real offline backbone and small index segments."""
    return settings.with_overrides(backbone="efficientnet-lite0", index_segment_size=4)


def _add_images(session: Session, settings: Settings, count: int, seed: int = 0) -> list[int]:
    """`count` stored noise PNGs (64x48) of one patient, pending; returns their ids."""
    rng = np.random.default_rng(seed)
    patient = make_patient(session, f"T{seed}", None, commit=False)
    ids = []
    for number in range(count):
        pixels = (rng.random((64, 48)) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        PILImage.fromarray(pixels).save(buffer, format="PNG")
        image = make_image(
            session, settings, patient, content=buffer.getvalue(), commit=False,
            file_name=f"synthetic-{number}.png", birads=1 + number % 5, pathology=None,
            findings=None,
        )  # fmt: skip
        ids.append(image.id)
    session.commit()
    return ids


def test_pending_images_end_indexed_once_and_a_rerun_changes_nothing(
    session: Session, lite_settings: Settings
) -> None:
    ids = _add_images(session, lite_settings, 6)
    first = process_pending(lite_settings)
    assert (first.embedded, first.indexed, first.failed) == (6, 6, 0)
    again = process_pending(lite_settings)
    assert (again.embedded, again.indexed) == (0, 0)
    space = open_serving_space(session, lite_settings)
    for metric in lite_settings.index_metrics:
        assert sorted(open_index(lite_settings, space, metric).ids().tolist()) == ids
    statuses = session.scalars(select(Image.status)).all()
    assert set(statuses) == {ImageStatus.INDEXED}


def test_a_duplicate_delivery_of_an_embed_batch_stores_one_vector(
    session: Session, lite_settings: Settings
) -> None:
    ids = _add_images(session, lite_settings, 3)
    embedder = serving_embedder(lite_settings)
    space = open_serving_space(session, lite_settings)
    embed_images(session, ids, embedder, space)
    second = embed_images(session, ids, embedder, space)
    assert second.embedded == [] and second.skipped == ids
    assert session.scalar(select(func.count()).select_from(ImageEmbedding)) == 3
    assert index_space(session, lite_settings, space) == 3
    assert index_space(session, lite_settings, space) == 0


def test_a_crash_between_index_write_and_db_commit_is_healed_by_the_next_run(
    session: Session, lite_settings: Settings
) -> None:
    ids = _add_images(session, lite_settings, 4)
    embedder = serving_embedder(lite_settings)
    space = open_serving_space(session, lite_settings)
    embed_images(session, ids, embedder, space)
    vectors = np.stack(
        [
            np.frombuffer(v, dtype="<f4")
            for v in session.scalars(
                select(ImageEmbedding.vector).order_by(ImageEmbedding.image_id)
            )
        ]
    )
    for metric in lite_settings.index_metrics:  # the index got them; the DB never heard
        open_index(lite_settings, space, metric).add(np.array(ids), vectors)
    assert not verify_index(session, lite_settings, space)["clean"]
    assert index_space(session, lite_settings, space) == 4
    report = verify_index(session, lite_settings, space)
    assert report["clean"]
    for metric in lite_settings.index_metrics:
        assert len(open_index(lite_settings, space, metric).ids()) == 4


def test_an_unreadable_stored_file_marks_the_image_failed_with_its_name(
    session: Session, lite_settings: Settings
) -> None:
    ids = _add_images(session, lite_settings, 2)
    broken = session.get(Image, ids[0])
    Path(broken.stored_path).unlink()
    summary = process_pending(lite_settings)
    assert summary.failed == 1 and summary.indexed == 1
    session.expire_all()
    broken = session.get(Image, ids[0])
    assert broken.status == ImageStatus.FAILED
    assert "synthetic-0.png" in broken.error and "missing" in broken.error
    assert broken.attempts == 1  # one try, counted once


@pytest.mark.parametrize("overlap", [True, False], ids=["decoding-overlapped", "sequential"])
def test_a_corrupt_file_mid_batch_fails_alone_and_every_vector_stays_with_its_image(
    session: Session, lite_settings: Settings, overlap: bool
) -> None:
    """Decoding may run a batch ahead on another thread; a failure must not shift the rest."""
    ids = _add_images(session, lite_settings, 5, seed=3)
    corrupt = session.get(Image, ids[2])
    Path(corrupt.stored_path).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    embedder = serving_embedder(lite_settings)
    embedder.batch_size, batch_size = 2, embedder.batch_size
    embedder.overlap_decoding, served_overlap = overlap, embedder.overlap_decoding
    try:
        space = open_serving_space(session, lite_settings)
        result = embed_images(session, ids, embedder, space)
        assert result.embedded == [ids[0], ids[1], ids[3], ids[4]]
        assert list(result.failed) == [ids[2]] and "cannot decode" in result.failed[ids[2]]
        for image_id in result.embedded:
            stored = session.scalar(
                select(ImageEmbedding.vector).where(
                    ImageEmbedding.image_id == image_id, ImageEmbedding.space_id == space.id
                )
            )
            with PILImage.open(session.get(Image, image_id).stored_path) as opened:
                alone = embedder.embed_pil([opened.convert("L")])[0]
            assert np.allclose(np.frombuffer(stored, dtype="<f4"), alone, atol=1e-4)
    finally:
        embedder.batch_size, embedder.overlap_decoding = batch_size, served_overlap


def test_the_in_process_queue_embeds_only_the_images_it_is_given(
    session: Session, lite_settings: Settings
) -> None:
    """enqueue_embedding(ids) runs those images here, indexed; the others stay pending."""
    from mammosearch.jobs.work_queue import InProcessQueue

    ids = _add_images(session, lite_settings, 3)
    summary = InProcessQueue(lite_settings).enqueue_embedding(ids[:2])
    assert (summary.mode, summary.images, summary.detail["indexed"]) == ("in-process", 2, 2)
    session.expire_all()
    statuses = [session.get(Image, image_id).status for image_id in ids]
    assert statuses == [ImageStatus.INDEXED, ImageStatus.INDEXED, ImageStatus.PENDING]
    assert InProcessQueue(lite_settings).enqueue_embedding([]).images == 0


def test_verify_finds_and_repairs_orphan_and_missing_vectors(
    session: Session, lite_settings: Settings
) -> None:
    ids = _add_images(session, lite_settings, 5)
    process_pending(lite_settings)
    space = open_serving_space(session, lite_settings)
    cosine = open_index(lite_settings, space, "cosine")
    cosine.remove(np.array([ids[0]]))  # a row with no vector
    cosine.add(np.array([999_999]), np.ones((1, space.dim), dtype=np.float32))  # no row
    report = verify_index(session, lite_settings, space)
    assert report["metrics"]["cosine"]["rows_without_vector"] == [ids[0]]
    assert report["metrics"]["cosine"]["vectors_without_row"] == [999_999]
    assert report["metrics"]["l2"]["rows_without_vector"] == []
    verify_index(session, lite_settings, space, repair=True)
    assert verify_index(session, lite_settings, space)["clean"]
    assert sorted(open_index(lite_settings, space, "cosine").ids().tolist()) == ids


def test_removed_images_leave_search_and_are_not_brought_back(
    session: Session, lite_settings: Settings
) -> None:
    ids = _add_images(session, lite_settings, 4)
    process_pending(lite_settings)
    space = open_serving_space(session, lite_settings)
    remove_images(session, lite_settings, [ids[1]])
    process_pending(lite_settings)
    for metric in lite_settings.index_metrics:
        assert ids[1] not in open_index(lite_settings, space, metric).ids().tolist()
    assert session.get(Image, ids[1]).status == ImageStatus.REMOVED
    assert verify_index(session, lite_settings, space)["clean"]


def test_rebuild_from_the_database_gives_the_same_index(
    session: Session, lite_settings: Settings
) -> None:
    ids = _add_images(session, lite_settings, 5)
    process_pending(lite_settings)
    space = open_serving_space(session, lite_settings)
    query = np.ones((1, space.dim), dtype=np.float32)
    before = open_index(lite_settings, space, "l2").search(query, 5)
    assert rebuild_indexes(session, lite_settings, space) == 5
    after = open_index(lite_settings, space, "l2").search(query, 5)
    assert after[1].tolist() == before[1].tolist()
    np.testing.assert_allclose(after[0], before[0], rtol=1e-5)
    assert sorted(open_index(lite_settings, space, "cosine").ids().tolist()) == ids
