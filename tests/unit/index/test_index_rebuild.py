"""Rebuild: one writer lock with every other index write, one atomic swap, no operator.

Vectors are made up (a small fake space), so these tests need no backbone: what is checked
is the index against the database, the truth.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace, Image, ImageEmbedding, ImageStatus
from mammosearch.db.session import session_scope
from mammosearch.index import IndexBusy, open_index, space_writer_lock
from mammosearch.jobs.reconcile import reconcile
from mammosearch.jobs.work_queue import InProcessQueue
from mammosearch.pipeline.index_stage import index_space, rebuild_indexes, verify_index
from tests.factories import make_bare_image, make_patient, make_space, make_vector

DIM = 8
REPO_ROOT = Path(__file__).resolve().parents[3]
FAULT_POINTS = [
    "rebuild:locked",
    "rebuild:read",
    "index:segment-written",
    "index-replace:segments-written",
    "rebuild:swapped-l2",
    "rebuild:swapped-cosine",
    "rebuild:appended",
]


@pytest.fixture
def small_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Test settings with 4-vector segments, so a rebuild writes many files."""
    monkeypatch.setenv("MAMMOSEARCH_INDEX_SEGMENT_SIZE", "4")
    return settings.with_overrides(index_segment_size=4)


def _space(session: Session) -> EmbeddingSpace:
    return make_space(session, "fake", DIM, weights_sha256="0" * 64, weights_source="test")


def _embedded(database_url: str, space_id: int, count: int, seed: int) -> list[int]:
    """`count` images with a stored (not yet indexed) vector in the space."""
    rng = np.random.default_rng(seed)
    with session_scope(database_url) as session:
        patient = make_patient(session, f"r{seed}-{time.monotonic_ns()}", commit=False)
        space = session.get_one(EmbeddingSpace, space_id)
        images = [
            make_bare_image(session, patient, commit=False, status=ImageStatus.EMBEDDED)
            for _ in range(count)
        ]
        for image in images:
            make_vector(session, image, space, rng.standard_normal(DIM), commit=False)
        return [image.id for image in images]


def _assert_true_to_the_database(
    session: Session, settings: Settings, space: EmbeddingSpace
) -> None:
    session.expire_all()
    indexed = sorted(
        session.scalars(
            select(ImageEmbedding.image_id).where(
                ImageEmbedding.space_id == space.id, ImageEmbedding.indexed.is_(True)
            )
        )
    )
    query = np.ones((1, DIM), dtype=np.float32)
    for metric in settings.index_metrics:
        index = open_index(settings, space, metric)
        assert index.ids().tolist() == indexed, metric
        if indexed:
            assert (index.search(query, 3)[1] >= 0).all(), f"{metric}: search answers nothing"


def test_rebuild_under_concurrent_appends_ends_verify_clean(
    pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Embeds and index runs go on while rebuilds run: nothing lost, nothing marked unindexed."""
    settings = pg_settings.with_overrides(index_segment_size=4)
    with session_scope(settings.database_url) as session:
        space_id = _space(session).id
    _embedded(settings.database_url, space_id, 40, seed=0)
    errors: list[BaseException] = []
    stop = threading.Event()

    def appender() -> None:
        seed = 1
        try:
            while not stop.is_set():
                _embedded(settings.database_url, space_id, 3, seed=seed)
                seed += 1
                with session_scope(settings.database_url) as session:
                    index_space(session, settings, session.get(EmbeddingSpace, space_id))
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)

    thread = threading.Thread(target=appender)
    thread.start()
    try:
        for _ in range(4):
            with session_scope(settings.database_url) as session:
                rebuild_indexes(
                    session, settings, session.get(EmbeddingSpace, space_id), update_status=True
                )
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    with session_scope(settings.database_url) as session:
        space = session.get(EmbeddingSpace, space_id)
        index_space(session, settings, space)
        report = verify_index(session, settings, space, update_status=True)
        assert report["clean"] and not report["unindexed_rows"], report
        rows = session.scalar(
            select(ImageEmbedding.image_id).where(ImageEmbedding.indexed.is_(False)).limit(1)
        )
        assert rows is None
        assert open_index(settings, space, "l2").ntotal > 40
        statuses = set(session.scalars(select(Image.status)))
        assert statuses == {ImageStatus.INDEXED}


def test_rebuild_marks_nothing_indexed_that_it_did_not_index(
    small_settings: Settings, session: Session
) -> None:
    """Rows embedded before the rebuild end in the index too, and their images indexed."""
    space = _space(session)
    first = _embedded(small_settings.database_url, space.id, 6, seed=0)
    index_space(session, small_settings, space)
    later = _embedded(small_settings.database_url, space.id, 3, seed=1)
    assert rebuild_indexes(session, small_settings, space, update_status=True) == 9
    _assert_true_to_the_database(session, small_settings, space)
    session.expire_all()
    assert {session.get(Image, i).status for i in first + later} == {ImageStatus.INDEXED}


def test_an_index_write_waits_for_the_rebuild_lock(
    small_settings: Settings, session: Session
) -> None:
    """Every writer takes the same lock: an append while a rebuild holds it is told busy."""
    space = _space(session)
    _embedded(small_settings.database_url, space.id, 2, seed=0)
    held = threading.Event()
    release = threading.Event()

    def rebuild_holder() -> None:
        with space_writer_lock(small_settings.index_dir, space.id, "rebuild"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=rebuild_holder)
    thread.start()
    held.wait(5)
    try:
        with pytest.raises(IndexBusy, match="rebuild by pid"):
            index_space(session, small_settings, space, lock_wait_s=0.2)
    finally:
        release.set()
        thread.join()
    assert index_space(session, small_settings, space, lock_wait_s=1) == 2


def _rebuild_in_a_process(settings: Settings, space_id: int, fault_point: str) -> int:
    script = (
        "import sys\n"
        "from mammosearch.config import settings_from_env\n"
        "from mammosearch.db.models import EmbeddingSpace\n"
        "from mammosearch.db.session import session_scope\n"
        "from mammosearch.pipeline.index_stage import rebuild_indexes\n"
        "settings = settings_from_env()\n"
        "with session_scope(settings.database_url) as session:\n"
        "    space = session.get(EmbeddingSpace, int(sys.argv[1]))\n"
        "    rebuild_indexes(session, settings, space, update_status=True)\n"
    )
    env = dict(
        os.environ,
        MAMMOSEARCH_FAULT_POINT=fault_point,
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "platform"), str(REPO_ROOT)]),
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(space_id)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, (fault_point, done.returncode, done.stderr)
    return done.returncode


@pytest.mark.parametrize("fault_point", FAULT_POINTS)
def test_a_rebuild_killed_at_any_step_heals_without_an_operator(
    small_settings: Settings, session: Session, fault_point: str
) -> None:
    """kill -9 at each step: both indexes stay whole and searchable, true to the database;
    the periodic sweep then leaves no stray file and no unindexed row, and a rebuild works."""
    space = _space(session)
    _embedded(small_settings.database_url, space.id, 10, seed=0)
    index_space(session, small_settings, space)
    _embedded(small_settings.database_url, space.id, 3, seed=1)  # for rebuild's append step

    _rebuild_in_a_process(small_settings, space.id, fault_point)

    _assert_true_to_the_database(session, small_settings, space)
    reconcile(small_settings, InProcessQueue(small_settings), grace_s=0)  # beat's sweep
    report = verify_index(session, small_settings, space)
    assert report["clean"] and not report["unindexed_rows"], report
    for metric in small_settings.index_metrics:
        assert open_index(small_settings, space, metric).stray_files() == []
    _assert_true_to_the_database(session, small_settings, space)
    assert rebuild_indexes(session, small_settings, space, update_status=True) == 13


def test_a_killed_rebuilds_files_are_reported_then_removed(
    small_settings: Settings, session: Session
) -> None:
    """verify names what an interrupted rebuild left; --repair (the sweep) removes it."""
    space = _space(session)
    _embedded(small_settings.database_url, space.id, 10, seed=0)
    index_space(session, small_settings, space)
    _rebuild_in_a_process(small_settings, space.id, "index-replace:segments-written")
    report = verify_index(session, small_settings, space)
    assert not report["clean"] and report["metrics"]["l2"]["stray_files"], report
    legacy = small_settings.layout.space_dir(space.id) / "cosine.retired-123"
    legacy.mkdir()
    assert verify_index(session, small_settings, space)["metrics"]["cosine"]["stray_files"]
    verify_index(session, small_settings, space, repair=True, update_status=True)
    assert verify_index(session, small_settings, space)["clean"]
    assert not legacy.exists()
