"""Queues, locks, sweeps and status against the real Redis and PostgreSQL (no worker process)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from sqlalchemy import select, update

from mammosearch.config import Settings, settings_from_env
from mammosearch.db.models import (
    EmbeddingSpace,
    Image,
    ImageEmbedding,
    ImageStatus,
    utcnow,
)
from mammosearch.db.session import session_scope
from mammosearch.jobs.reconcile import reconcile
from mammosearch.jobs.status import collect_status
from mammosearch.jobs.work_queue import InProcessQueue
from mammosearch.pipeline.embed_stage import claim_for_embedding
from tests.conftest import REDIS_TEST_URL
from tests.factories import make_bare_images, make_patient

if TYPE_CHECKING:  # imported in the fixture: workers.app reads the environment on import
    from workers.enqueue import CeleryWorkQueue

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def broker_settings(pg_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """PostgreSQL settings with the test Redis DB as broker, flushed before and after."""
    monkeypatch.setenv("CELERY_BROKER_URL", REDIS_TEST_URL)
    monkeypatch.setenv("CELERY_RESULT_BACKEND", REDIS_TEST_URL)
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    yield settings_from_env()
    client.flushdb()


@pytest.fixture
def queue(broker_settings: Settings) -> CeleryWorkQueue:
    """The Celery WorkQueue on the test broker."""
    from workers.enqueue import CeleryWorkQueue

    return CeleryWorkQueue(broker_settings)


@pytest.fixture
def broker() -> redis.Redis:
    """A client on the test broker's Redis DB."""
    return redis.Redis.from_url(REDIS_TEST_URL)


def _add_images(settings: Settings, count: int, status: str = ImageStatus.PENDING) -> list[int]:
    """`count` image rows (no files: nothing here embeds them)."""
    with session_scope(settings.database_url) as session:
        patient = make_patient(session, f"p{time.monotonic_ns()}", commit=False)
        return make_bare_images(session, patient, count, width=64, height=64, status=status)


def _age(settings: Settings, image_ids: list[int], seconds: float) -> None:
    then = utcnow() - timedelta(seconds=seconds)
    with session_scope(settings.database_url) as session:
        session.execute(
            update(Image).where(Image.id.in_(image_ids)).values(created_at=then, updated_at=then)
        )


def test_index_runs_are_coalesced_until_one_starts(
    broker_settings: Settings, broker: redis.Redis
) -> None:
    """A flood of requests leaves one waiting run; once it starts, a new request is sent."""
    from workers.enqueue import index_request_key, request_index

    assert request_index(broker_settings, 7) is True
    assert [request_index(broker_settings, 7) for _ in range(20)] == [False] * 20
    assert broker.llen("index") == 1
    broker.delete(index_request_key(7))  # what index_space does first
    assert request_index(broker_settings, 7) is True
    assert broker.llen("index") == 2


def test_images_already_on_their_way_are_not_enqueued_again(
    broker_settings: Settings, broker: redis.Redis, queue: CeleryWorkQueue
) -> None:
    """Repeated dispatches send each pending image once, in batches of embed_batch_size."""
    image_ids = _add_images(broker_settings, 70)
    first = queue.enqueue_embedding()
    assert (first.mode, first.images, first.tasks) == ("broker", 70, 3)  # 32 + 32 + 6
    assert queue.enqueue_embedding().images == 0
    assert broker.llen("embed") == 3

    from workers.enqueue import forget_enqueued

    forget_enqueued(broker_settings, image_ids[:10])  # their task ran (and, say, failed)
    assert queue.enqueue_embedding().images == 10


def test_the_sweep_recovers_work_the_broker_lost(
    broker_settings: Settings, broker: redis.Redis, queue: CeleryWorkQueue
) -> None:
    """Old pending images and unindexed vectors are handed out again; fresh work is not."""
    stale = _add_images(broker_settings, 5)
    _age(broker_settings, stale, 3600)
    _add_images(broker_settings, 3)  # just registered: still on its way
    embedded = _add_images(broker_settings, 1, status=ImageStatus.EMBEDDED)
    with session_scope(broker_settings.database_url) as session:
        space = EmbeddingSpace(
            backbone="test",
            weights_sha256="0" * 64,
            weights_source="test",
            pretrained=False,
            preprocessing_version=1,
            dim=4,
        )
        session.add(space)
        session.flush()
        session.add(
            ImageEmbedding(
                image_id=embedded[0],
                space_id=space.id,
                vector=b"\0" * 16,
                created_at=utcnow() - timedelta(hours=1),
            )
        )
        space_id = space.id

    summary = reconcile(broker_settings, queue, grace_s=600)
    assert summary.mode == "broker"
    assert summary.pending_images == 5 and summary.unindexed_spaces == [space_id]
    assert broker.llen("embed") == 1 and broker.llen("index") == 1
    # The broker loses everything (restart without persistence): the next sweep resends it.
    broker.flushdb()
    assert reconcile(broker_settings, queue, grace_s=600).detail["enqueued_images"] == 5
    assert broker.llen("embed") == 1


def test_a_batch_that_keeps_dying_gives_up_after_max_attempts(pg_settings: Settings) -> None:
    """Each delivery counts an attempt; past the limit the image is failed with the reason."""
    from mammosearch.pipeline.embed_stage import MAX_ATTEMPTS

    image_ids = _add_images(pg_settings, 2)
    for _ in range(MAX_ATTEMPTS):
        with session_scope(pg_settings.database_url) as session:
            assert claim_for_embedding(session, image_ids) == image_ids
    with session_scope(pg_settings.database_url) as session:
        assert claim_for_embedding(session, image_ids) == []
        images = session.scalars(select(Image).where(Image.id.in_(image_ids))).all()
        assert {image.status for image in images} == {ImageStatus.FAILED}
        assert all("gave up after" in (image.error or "") for image in images)


def test_status_shows_lag_failures_and_queue_depth(
    broker_settings: Settings, broker: redis.Redis, queue: CeleryWorkQueue
) -> None:
    """The oldest pending image's age, the last failures with reasons, tasks per queue."""
    waiting = _add_images(broker_settings, 2)
    _age(broker_settings, waiting[:1], 300)
    (failed,) = _add_images(broker_settings, 1, status=ImageStatus.FAILED)
    with session_scope(broker_settings.database_url) as session:
        session.get(Image, failed).error = "x.png: corrupt or truncated image"
    queue.enqueue_embedding()

    with session_scope(broker_settings.database_url) as session:
        report = collect_status(session, queue)
    assert report["images"]["pending"] == 2 and report["images"]["failed"] == 1
    assert report["lag"]["oldest_pending_image_id"] == waiting[0]
    assert 290 <= report["lag"]["oldest_pending_age_s"] < 400
    assert report["failures"][0]["error"] == "x.png: corrupt or truncated image"
    assert report["tasks"] == {
        "mode": "broker",
        "queues": {"ingest": 0, "embed": 1, "index": 0, "evaluate": 0, "train": 0},
    }


def test_an_unreachable_broker_is_reported_not_raised(pg_settings: Settings) -> None:
    """Queue depths from a broker nobody listens on: an error that names it, at once."""
    from workers.enqueue import CeleryWorkQueue

    dead = pg_settings.with_overrides(celery_broker_url="redis://127.0.0.1:1/0")
    started = time.monotonic()
    depths = CeleryWorkQueue(dead).depths()
    assert depths["mode"] == "broker" and depths["queues"] == {}
    assert "broker unreachable" in depths["error"]
    assert time.monotonic() - started < 5


def test_status_without_a_broker_reports_in_process_mode(pg_settings: Settings) -> None:
    """No broker: no queues to count, and no error."""
    with session_scope(pg_settings.database_url) as session:
        report = collect_status(session, InProcessQueue(pg_settings))
    assert report["tasks"] == {"mode": "in-process", "queues": {}}
    assert report["lag"]["oldest_pending_age_s"] is None


def test_the_index_lock_admits_one_writer_and_outlives_no_dead_holder(
    broker: redis.Redis,
) -> None:
    """A held lock refuses a second writer; a holder that died frees it after the TTL."""
    from workers.locks import LockBusy, index_lock_name, work_lock

    broker.flushdb()
    name = index_lock_name(3)
    with work_lock(broker, name, ttl_s=1.5):
        with pytest.raises(LockBusy, match="index-space:3"):
            with work_lock(broker, name):
                pass
        time.sleep(2)  # longer than the TTL: the heartbeat kept it
        assert broker.exists(name)
    assert not broker.exists(name)
    broker.lock(name, timeout=1).acquire()  # a holder SIGKILLed while holding it
    with work_lock(broker, name, wait_s=3):
        pass


def test_without_a_broker_the_pipeline_runs_in_process(
    pg_settings: Settings, dev_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-process queue embeds and indexes right here; the sweep then finds nothing to do."""
    from mammosearch.ingest.watch import register_loose_image

    monkeypatch.setenv("MAMMOSEARCH_BACKBONE", "efficientnet-lite0")
    settings = settings_from_env()
    with session_scope(settings.database_url) as session:
        for path in sorted((dev_data / "Subtracted images").rglob("*.jpg"))[:3]:
            register_loose_image(session, settings, path.read_bytes(), path.name)
    queue = InProcessQueue(settings)
    summary = queue.enqueue_embedding()
    assert summary.mode == "in-process" and summary.images == 3
    with session_scope(settings.database_url) as session:
        statuses = set(session.scalars(select(Image.status)))
    assert statuses == {ImageStatus.INDEXED}
    assert reconcile(settings, queue, grace_s=0).pending_images == 0


def test_the_app_is_configured_for_at_least_once_delivery() -> None:
    """acks_late + reject on worker loss + prefetch 1; every task has a declared queue."""
    from mammosearch.jobs.work_queue import QUEUES
    from workers.app import TASK_ROUTES, celery_app

    conf = celery_app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert {route["queue"] for route in TASK_ROUTES.values()} == set(QUEUES)
    celery_app.loader.import_default_modules()
    registered = {name for name in celery_app.tasks if name.startswith("mammosearch.")}
    assert registered == set(TASK_ROUTES)
    from workers import enqueue

    sent_by_name = {enqueue.EMBED_BATCH_TASK, enqueue.INDEX_SPACE_TASK, enqueue.IMPORT_FOLDER_TASK}
    assert sent_by_name <= registered


def test_beat_declares_watch_and_orthanc_jobs_only_when_configured(pg_settings: Settings) -> None:
    """One schedule table; optional sources appear when their setting is set."""
    from workers.schedule import beat_schedule

    assert set(beat_schedule(pg_settings)) == {
        "reconcile", "evaluate-active-space", "measure-new-space", "auto-train",
    }  # fmt: skip
    off = beat_schedule(pg_settings.with_overrides(auto_train=False))
    assert set(off) == {
        "reconcile",
        "evaluate-active-space",
        "measure-new-space",
    }  # MAMMOSEARCH_AUTO_TRAIN=0; fmt: skip
    from workers.app import TASK_ROUTES

    assert TASK_ROUTES["mammosearch.auto_train"] == {"queue": "train"}
    configured = pg_settings.with_overrides(
        watch_dirs=(Path("/inbox"),), orthanc_url="http://orthanc:8042"
    )
    schedule = beat_schedule(configured)
    assert {"scan-watch-dirs", "follow-orthanc"} <= set(schedule)
    assert schedule["reconcile"]["schedule"] == pg_settings.reconcile_schedule_s


def test_claims_of_a_dead_worker_are_sent_again_without_the_visibility_timeout(
    broker_settings: Settings, broker: redis.Redis, queue: CeleryWorkQueue
) -> None:
    """A batch claimed by a worker that died (its task unacked for an hour, its marks still
    set) is released by the sweep once its lease ran out, and enqueued again at once."""
    from mammosearch.pipeline import claims

    image_ids = _add_images(broker_settings, 4)
    queue.enqueue_embedding(image_ids)
    broker.delete("embed")  # the task sits in the dead worker's unacked set, not the queue
    with session_scope(broker_settings.database_url) as session:
        claims.claim(session, image_ids, "celery@gone#run1/7")
    assert reconcile(broker_settings, queue).detail["released_claims"] == 0  # lease still fresh
    with session_scope(broker_settings.database_url) as session:
        session.execute(
            update(Image)
            .where(Image.id.in_(image_ids))
            .values(updated_at=utcnow() - timedelta(seconds=broker_settings.claim_lease_s + 1))
        )
    summary = reconcile(broker_settings, queue)
    assert summary.expired_claims == image_ids
    assert broker.llen("embed") == 1  # sent again although their marks were still set
    with session_scope(broker_settings.database_url) as session:
        statuses = set(session.scalars(select(Image.status).where(Image.id.in_(image_ids))))
    assert statuses == {ImageStatus.PENDING}


def test_work_lost_with_an_unpersisted_redis_is_resent_within_a_minute() -> None:
    """Defaults: a sweep every schedule, work older than the grace: under 60 s in all."""
    from mammosearch.jobs.reconcile import DEFAULT_GRACE_S

    settings = settings_from_env()
    assert settings.reconcile_schedule_s + DEFAULT_GRACE_S < 60
    assert settings.claim_lease_s + settings.reconcile_schedule_s <= 60
