"""Redis restarted without persistence mid-ingestion: the work is back within a minute.

A private redis-server (no RDB, no AOF) as broker for a real worker and beat with the
production defaults; it is stopped and started empty while images are being embedded.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bench.processes import (
    free_port,
    start_beat,
    start_worker,
    stop_worker,
    wait_until,
    worker_env,
)
from mammosearch.config import settings_from_env
from mammosearch.db.models import Image, ImageStatus
from mammosearch.db.session import session_scope
from tests.integration.test_workers_kill import DEV_IMAGES

pytestmark = [pytest.mark.postgres, pytest.mark.dataset, pytest.mark.slow]

REDIS_SERVER = shutil.which("redis-server")
RESUME_BUDGET_S = 60  # from the empty Redis to the next image indexed


def _redis(port: int, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(log.parent),
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    time.sleep(0.5)
    return process


def _indexed(database_url: str) -> int:
    with session_scope(database_url) as session:
        return session.scalar(
            select(func.count()).select_from(Image).where(Image.status == ImageStatus.INDEXED)
        )


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed")
def test_an_empty_redis_after_a_restart_costs_under_a_minute(
    dev_data: Path, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queues, marks and unacked tasks all lost: the sweep re-sends the work, every image
    ends indexed once, and indexing resumes within a minute of Redis coming back."""
    from workers.enqueue import enqueue_import

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = worker_env(pg_url, tmp_path / "data", url)
    for key, value in env.items():
        # Not CELERY_*: Celery reads those from the environment itself, and the process's
        # one app would keep the private Redis this test kills (later tests use that app).
        if key.startswith(("MAMMOSEARCH_", "DATABASE_URL")):
            monkeypatch.setenv(key, value)
    settings = replace(settings_from_env(), celery_broker_url=url, celery_result_backend=url)
    redis_server = _redis(port, tmp_path / "redis.log")
    beat = start_beat(env, tmp_path / "beat.log")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        enqueue_import(settings, str(dev_data))
        wait_until(
            lambda: _indexed(settings.database_url) >= 100,
            timeout_s=600,
            what="100 images indexed before the Redis restart",
        )
        redis_server.send_signal(signal.SIGKILL)
        redis_server.wait(timeout=10)
        redis_server = _redis(port, tmp_path / "redis.log")
        restarted_at = time.monotonic()
        before = _indexed(settings.database_url)
        wait_until(
            lambda: _indexed(settings.database_url) > before + 32,
            timeout_s=RESUME_BUDGET_S,
            interval_s=0.5,
            what="indexing to resume after the empty Redis",
        )
        resumed_s = time.monotonic() - restarted_at
        wait_until(
            lambda: _indexed(settings.database_url) == DEV_IMAGES,
            timeout_s=300,
            interval_s=1,
            what=f"{DEV_IMAGES} images indexed",
        )
        done_s = time.monotonic() - restarted_at
    finally:
        stop_worker(worker)
        stop_worker(beat)
        redis_server.terminate()
        redis_server.wait(timeout=10)
    print(f"resumed {resumed_s:.0f} s, all indexed {done_s:.0f} s after the empty Redis")
