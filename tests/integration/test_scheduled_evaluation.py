"""Scheduled re-evaluation end to end: real `celery beat` + worker on Redis and PostgreSQL.

Beat fires `mammosearch.evaluate_active_space` from workers/schedule.py every 2 s here; the
worker evaluates the active space; the stored run (trigger "schedule") appears in the web
service. The archive is synthetic vectors in efficientnet-lite0's real embedding space (the
evaluation reads vectors, not image files), so the test needs no dataset.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from bench.processes import (
    MAMMOSEARCH,
    REPO_ROOT,
    flush_redis,
    start_worker,
    stop_worker,
    wait_until,
    worker_env,
)
from mammosearch.access.users import create_user
from mammosearch.config import Settings
from mammosearch.db import migrate
from mammosearch.db.models import EvaluationRun
from mammosearch.db.session import session_scope
from mammosearch.embed import load_embedder
from mammosearch.embed.spaces import get_or_create_space
from tests.conftest import create_pg_database, drop_pg_database
from tests.factories import make_class_archive

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

REDIS_URL = os.environ.get("MAMMOSEARCH_TEST_REDIS_SCHEDULE", "redis://127.0.0.1:6379/12")
CLASSES = (1, 2, 4, 5)
PASSWORD = "correct horse battery"


@pytest.fixture
def database_url() -> Iterator[str]:
    """A throw-away migrated PostgreSQL database, dropped afterwards."""
    name, url = create_pg_database("mssched")
    migrate.upgrade(url)
    yield url
    drop_pg_database(name)


def seed_archive(url: str) -> int:
    """24 images (12 patients) with class-shaped vectors in lite0's space; returns its id."""
    rng = np.random.default_rng(0)
    embedder = load_embedder("efficientnet-lite0")
    with session_scope(url) as session:
        space = get_or_create_space(session, embedder)
        session.flush()
        make_class_archive(session, space, CLASSES, 12, rng)
        create_user(session, "boss", PASSWORD, "admin")
        return space.id


def start_beat(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`mammosearch beat` (the real schedule of workers/schedule.py) in its own process group."""
    return subprocess.Popen(
        [str(MAMMOSEARCH), "beat", "--loglevel", "INFO"], env=env, cwd=REPO_ROOT,
        stdout=log_path.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def scheduled_runs(url: str) -> list[EvaluationRun]:
    with session_scope(url) as session:
        runs = session.scalars(
            select(EvaluationRun)
            .where(EvaluationRun.trigger == "schedule", EvaluationRun.status == "done")
            .order_by(EvaluationRun.id)  # an image run first: each space's units in turn
        ).all()
        session.expunge_all()
        return list(runs)


def test_beat_and_a_worker_store_a_scheduled_run_that_the_web_service_shows(
    database_url: str, tmp_path: Path
) -> None:
    """Within a minute of starting beat + worker, a "schedule" run exists and its page shows."""
    space_id = seed_archive(database_url)
    flush_redis(REDIS_URL)
    env = worker_env(
        database_url, tmp_path / "data", REDIS_URL,
        MAMMOSEARCH_EVALUATION_SCHEDULE_S="2", MAMMOSEARCH_RECONCILE_SCHEDULE_S="3600",
        MAMMOSEARCH_INDEX_METRICS="cosine",
    )  # fmt: skip
    worker = start_worker(env, tmp_path / "worker.log", queues="evaluate")
    beat = start_beat(env, tmp_path / "beat.log")
    try:
        wait_until(
            lambda: bool(scheduled_runs(database_url)), timeout_s=240, interval_s=1,
            what="an EvaluationRun with trigger 'schedule' (see worker.log / beat.log)",
        )  # fmt: skip
    except AssertionError:
        for log_name in ("beat.log", "worker.log"):
            print(f"--- {log_name}\n" + (tmp_path / log_name).read_text()[-4000:])
        raise
    finally:
        stop_worker(beat, signal.SIGTERM)
        stop_worker(worker, signal.SIGTERM)
        flush_redis(REDIS_URL)

    run = scheduled_runs(database_url)[0]
    assert run.space_id == space_id and run.label == "birads"
    assert run.metrics["precision@1"] > 0.9 and run.queries == 24

    from web import create_app

    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, secret_key="t")
    app = create_app({"TESTING": True, "SETTINGS": settings, "WTF_CSRF_ENABLED": False,
                      "RATELIMIT_STORAGE_URI": "memory://"})  # fmt: skip
    client = app.test_client()
    assert client.post("/login", data={"username": "boss", "password": PASSWORD}).status_code == 302
    listing = client.get("/evaluations").get_data(as_text=True)
    assert f'href="/evaluations/{run.id}"' in listing
    detail = client.get(f"/evaluations/{run.id}").get_data(as_text=True)
    assert f"Evaluation #{run.id}" in detail and "schedule" in detail
    assert "efficientnet-lite0" in detail
