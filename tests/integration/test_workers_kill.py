"""A real worker SIGKILLed mid-ingestion: after a restart every image is indexed exactly once.

Real Celery (prefork, concurrency 1) on the real Redis and PostgreSQL, the real
efficientnet-lite0 backbone and the 503 CDD-CESM dev images, ingested through the broker.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from mammosearch.config import Settings, settings_from_env
from mammosearch.db.models import Image, ImageEmbedding, ImageStatus
from mammosearch.db.session import session_scope
from mammosearch.index import open_index
from tests.conftest import REDIS_TEST_URL
from tests.integration.worker_process import (
    flush_redis,
    run_cli,
    start_worker,
    stop_worker,
    wait_until,
    worker_env,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.dataset, pytest.mark.slow]

DEV_IMAGES = 503
VISIBILITY_TIMEOUT_S = "20"  # a killed worker's task comes back after this (default 1 h)


def _counts(settings: Settings) -> dict[str, int]:
    with session_scope(settings.database_url) as session:
        rows = session.execute(select(Image.status, func.count()).group_by(Image.status)).all()
    return {str(status): count for status, count in rows}


@pytest.fixture
def broker_settings(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Settings, dict[str, str]]]:
    """Settings and worker environment on the test PostgreSQL and a flushed Redis DB."""
    flush_redis(REDIS_TEST_URL)
    env = worker_env(
        pg_url,
        tmp_path / "data",
        REDIS_TEST_URL,
        MAMMOSEARCH_TASK_VISIBILITY_TIMEOUT_S=VISIBILITY_TIMEOUT_S,
        MAMMOSEARCH_EMBED_BATCH_SIZE="16",
    )
    for key, value in env.items():
        if key.startswith(("MAMMOSEARCH_", "CELERY_", "DATABASE_URL")):
            monkeypatch.setenv(key, value)
    yield settings_from_env(), env
    flush_redis(REDIS_TEST_URL)


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(
    dev_data: Path, broker_settings: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    """SIGKILL the worker's process group mid-way; restart + reconcile ends at 503 indexed once."""
    from workers.enqueue import enqueue_import

    settings, env = broker_settings
    log_path = tmp_path / "worker.log"
    worker = start_worker(env, log_path)
    try:
        enqueue_import(settings, str(dev_data))
        wait_until(
            lambda: _counts(settings).get(ImageStatus.INDEXED, 0) >= 100,
            timeout_s=600,
            interval_s=0.5,
            what="100 images indexed before the kill",
        )
        stop_worker(worker, signal.SIGKILL)
        at_kill = _counts(settings)
        assert sum(at_kill.values()) == DEV_IMAGES, at_kill  # the import itself finished
        assert at_kill.get(ImageStatus.INDEXED, 0) < DEV_IMAGES, f"too late to kill: {at_kill}"

        time.sleep(1)
        worker = start_worker(env, log_path)
        run_cli(env, "reconcile", "--grace", "0")
        wait_until(
            lambda: _counts(settings).get(ImageStatus.INDEXED, 0) == DEV_IMAGES,
            timeout_s=900,
            interval_s=1,
            what=f"{DEV_IMAGES} images indexed after the restart",
        )
        status_json = run_cli(env, "status", "--json")
    finally:
        stop_worker(worker)

    assert '"indexed": 503' in status_json
    with session_scope(settings.database_url) as session:
        from mammosearch.pipeline import active_space, verify_index

        space = active_space(session, settings)
        report = verify_index(session, settings, space)
        assert report["clean"] and not report["unindexed_rows"], report
        vectors = session.scalar(select(func.count()).select_from(ImageEmbedding))
        assert vectors == DEV_IMAGES  # one vector per image: never two
        assert session.scalar(select(func.max(Image.attempts))) <= 3
        for metric in settings.index_metrics:
            index = open_index(settings, space, metric)
            ids = index.ids()
            assert index.ntotal == DEV_IMAGES, metric
            assert len(np.unique(ids)) == len(ids) == DEV_IMAGES, metric
    print(f"state at kill: {at_kill}")
