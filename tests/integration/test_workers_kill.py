"""A real worker SIGKILLed mid-ingestion: after a restart every image is indexed exactly once.

Real Celery (prefork, concurrency 1) and beat, as in the compose stack, on the real Redis and
PostgreSQL, the real efficientnet-lite0 backbone and the 503 CDD-CESM dev images, ingested
through the broker. Production defaults throughout: the broker's visibility timeout (1 h),
the claim lease and the sweep's schedule are not shortened, and nobody runs reconcile by
hand; recovery comes from the claims' leases in the database.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from bench.processes import (
    flush_redis,
    run_cli,
    start_beat,
    start_worker,
    stop_worker,
    wait_until,
    worker_env,
)
from mammosearch.config import Settings, settings_from_env
from mammosearch.db.models import Image, ImageEmbedding, ImageStatus
from mammosearch.db.session import session_scope
from mammosearch.index import open_index
from tests.conftest import REDIS_TEST_URL

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.dataset, pytest.mark.slow]

DEV_IMAGES = 503
RECOVERY_BUDGET_S = 120  # from the restart to every image indexed once


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
    env = worker_env(pg_url, tmp_path / "data", REDIS_TEST_URL)  # production defaults
    for key, value in env.items():
        if key.startswith(("MAMMOSEARCH_", "CELERY_", "DATABASE_URL")):
            monkeypatch.setenv(key, value)
    yield settings_from_env(), env
    flush_redis(REDIS_TEST_URL)


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(
    dev_data: Path, broker_settings: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    """SIGKILL the worker's process group mid-batch and restart it, beat running: within
    two minutes every image is indexed exactly once, with no reconcile run by hand."""
    from workers.enqueue import enqueue_import

    settings, env = broker_settings
    log_path = tmp_path / "worker.log"
    beat = start_beat(env, tmp_path / "beat.log")
    worker = start_worker(env, log_path)
    try:
        enqueue_import(settings, str(dev_data))
        wait_until(  # mid-batch: some indexed, and a batch claimed right now
            lambda: (
                _counts(settings).get(ImageStatus.INDEXED, 0) >= 100
                and _counts(settings).get(ImageStatus.CLAIMED, 0) > 0
            ),
            timeout_s=600,
            interval_s=0.2,
            what="100 images indexed and a batch in flight before the kill",
        )
        stop_worker(worker, signal.SIGKILL)
        at_kill = _counts(settings)
        assert sum(at_kill.values()) == DEV_IMAGES, at_kill  # the import itself finished
        assert at_kill.get(ImageStatus.INDEXED, 0) < DEV_IMAGES, f"too late to kill: {at_kill}"

        assert at_kill.get(ImageStatus.CLAIMED, 0) > 0, f"no batch was in flight: {at_kill}"

        time.sleep(1)
        restarted_at = time.monotonic()
        worker = start_worker(env, log_path)
        wait_until(
            lambda: _counts(settings).get(ImageStatus.INDEXED, 0) == DEV_IMAGES,
            timeout_s=RECOVERY_BUDGET_S,
            interval_s=1,
            what=f"{DEV_IMAGES} images indexed after the restart (state at kill {at_kill})",
        )
        recovered_s = time.monotonic() - restarted_at
        status_json = run_cli(env, "status", "--json")
    finally:
        stop_worker(worker)
        stop_worker(beat)

    assert '"indexed": 503' in status_json
    with session_scope(settings.database_url) as session:
        from mammosearch.embed.serving import open_serving_space
        from mammosearch.pipeline.index_stage import verify_index

        space = open_serving_space(session, settings)
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
    print(f"state at kill: {at_kill}; all indexed {recovered_s:.0f} s after the restart")
