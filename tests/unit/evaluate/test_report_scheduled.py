"""The scheduled re-evaluation core: every active space, stored runs, regression flags."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace, EvaluationRun, ImageEmbedding
from mammosearch.db.session import make_session_factory
from mammosearch.evaluate.regression import run_figures
from mammosearch.evaluate.scheduled import run_scheduled_evaluations
from tests.factories import make_class_archive, make_space
from tests.unit.evaluate.test_report_regression import WebhookServer

DIM = 8
CLASSES = (1, 2, 4, 5)


def seed_space(session: Session, name: str, active: bool = True) -> EmbeddingSpace:
    """Three patients per class, two images each; a vector points along its class' axis."""
    space = make_space(
        session, name, DIM, commit=False, weights_sha256=name.ljust(64, "0"),
        weights_source="test", pretrained=True, active=active,
    )  # fmt: skip
    make_class_archive(
        session, space, CLASSES, len(CLASSES) * 3, np.random.default_rng(1), prefix=f"{name}-P"
    )
    return space


def scramble(session: Session, space: EmbeddingSpace) -> None:
    """Replace the space's vectors with noise: the next evaluation drops to chance."""
    rng = np.random.default_rng(2)
    for image_id in session.scalars(
        select(ImageEmbedding.image_id).where(ImageEmbedding.space_id == space.id)
    ):
        session.execute(
            update(ImageEmbedding)
            .where(ImageEmbedding.image_id == image_id, ImageEmbedding.space_id == space.id)
            .values(vector=rng.normal(size=DIM).astype(np.float32).tobytes())
        )
    session.commit()


def test_scheduled_runs_cover_active_spaces_report_progress_and_get_figures(
    pg_settings: Settings,
) -> None:
    """Each active space x indexed metric gets a "schedule" run with figures, in both search
    units; inactive ones none."""
    session = make_session_factory(pg_settings.database_url)()
    active = seed_space(session, "efficientnet-lite0")
    seed_space(session, "resnet50", active=False)
    updates: list[dict[str, Any]] = []
    run_ids = run_scheduled_evaluations(
        pg_settings, updates.append, ks=(1, 5, 10), task_id="task-1"
    )
    runs = session.scalars(select(EvaluationRun).order_by(EvaluationRun.id)).all()
    assert [run.id for run in runs] == run_ids
    assert [(run.space_id, run.config["unit"], run.metric) for run in runs] == [
        (active.id, "image", "l2"),
        (active.id, "image", "cosine"),
        (active.id, "case", "l2"),
        (active.id, "case", "cosine"),
    ]
    for run in runs:
        assert (run.trigger, run.status, run.progress, run.task_id) == (
            "schedule",
            "done",
            1.0,
            "task-1",
        )
        assert run.metrics["precision@1"] > 0.9
        assert run.flagged is False
    for run in runs:  # the report's figures for the image runs, the case runs' their own
        assert {path.name for path in run_figures(run)} >= {"curves.png"}
        assert str(pg_settings.reports_dir) in run.report_path
    assert updates[-1] == {"stage": "done", "run_ids": run_ids, "fraction": 1.0}
    assert any(update.get("stage") == "evaluating" for update in updates)
    session.close()


def test_a_drop_against_the_previous_scheduled_run_is_flagged_and_posted(
    pg_settings: Settings,
) -> None:
    """Scrambled vectors make precision fall: both new runs are flagged, the webhook called."""
    server = WebhookServer()
    settings = pg_settings.with_overrides(regression_webhook_url=server.url)
    try:
        session = make_session_factory(settings.database_url)()
        space = seed_space(session, "efficientnet-lite0")
        first = run_scheduled_evaluations(settings, ks=(1, 10), write_report=False)
        scramble(session, space)
        second = run_scheduled_evaluations(settings, ks=(1, 10), write_report=False)
        flagged = session.scalars(select(EvaluationRun).where(EvaluationRun.id.in_(second))).all()
        assert all(run.flagged for run in flagged) and len(flagged) == 4  # images and cases
        assert "precision@10" in flagged[0].flag_reason
        assert sorted(payload["previous_run_id"] for payload in server.received) == sorted(first)
        kinds = {(run.config["unit"], run.metric): run for run in flagged}
        for payload in server.received:  # each run against the last one of its own unit
            previous = session.get(EvaluationRun, payload["previous_run_id"])
            assert kinds[(previous.config["unit"], previous.metric)].id == payload["run_id"]
        session.close()
    finally:
        server.close()


def test_a_new_space_has_its_vote_measured_once_and_only_while_unmeasured(
    pg_settings: Settings,
) -> None:
    """Beat's frequent "measure-new-space" run evaluates an active space whose vote was never
    measured, in both search units (an image run, a case run by the served fusion), stores
    the reliability tables search reads, then has nothing left to do."""
    from mammosearch.evaluate.runs import measured_vote

    session = make_session_factory(pg_settings.database_url)()
    space = seed_space(session, "efficientnet-lite0")
    assert measured_vote(session, pg_settings, space) == {}
    first = run_scheduled_evaluations(
        pg_settings, metrics=["cosine"], ks=(1, 5), write_report=False, unmeasured_only=True
    )
    assert len(first) == 2
    measured = measured_vote(session, pg_settings, space)
    assert measured["birads"]["accuracy"] > 0.9 and measured["run_id"] == first[0]
    assert measured["birads"]["floor"] >= 0.5 and measured["birads"]["bins"]
    by_case = measured_vote(session, pg_settings, space, unit="case")
    assert by_case["run_id"] == first[1] and by_case["birads"]["unit"] == "case"
    assert by_case["birads"]["suggestions"] == len(CLASSES) * 3  # one case per patient
    assert not any(run.flagged for run in session.scalars(select(EvaluationRun)))
    again = run_scheduled_evaluations(
        pg_settings, metrics=["cosine"], ks=(1, 5), write_report=False, unmeasured_only=True
    )
    assert again == []
    session.close()


def test_the_embedded_server_measures_a_new_space_without_beat(web_settings: Settings) -> None:
    """No broker, no beat: `serve`'s own sweep measures an unmeasured active space's vote
    (images and cases), so a first run's suggestion does not wait for `mammosearch evaluate`."""
    import time

    from mammosearch.cli.serve_commands import _start_embedded_sweep
    from mammosearch.evaluate.runs import measured_vote
    from tests.unit.web_support import app_config
    from web import create_app

    session = make_session_factory(web_settings.database_url)()
    space = seed_space(session, "efficientnet-lite0")
    session.commit()
    assert measured_vote(session, web_settings, space) == {}
    _start_embedded_sweep(create_app(app_config(web_settings)))
    deadline = time.monotonic() + 120

    def measured_case_vote() -> dict:
        return measured_vote(session, web_settings, space, unit="case")

    while not measured_case_vote() and time.monotonic() < deadline:
        session.expire_all()
        time.sleep(0.2)
    assert measured_vote(session, web_settings, space)["birads"]["bins"]
    assert measured_case_vote()["birads"]["bins"]
    session.close()


def test_the_daily_run_re_measures_the_case_vote_as_well_as_the_image_one(
    pg_settings: Settings,
) -> None:
    """The scheduled (daily) evaluation stores a fresh image table and a fresh case table
    (the served fusion) each time, so both suggestions follow the archive as it grows; a
    trained space gets its image figures only, its votes staying its model's CV's."""
    from mammosearch.evaluate.runs import measured_vote

    session = make_session_factory(pg_settings.database_url)()
    space = seed_space(session, "efficientnet-lite0")
    trained = seed_space(session, "trained:0123456789ab")
    first = run_scheduled_evaluations(
        pg_settings, metrics=["cosine"], ks=(1, 5), write_report=False
    )
    by_image = measured_vote(session, pg_settings, space)
    by_case = measured_vote(session, pg_settings, space, unit="case")
    assert {by_image["run_id"], by_case["run_id"]} <= set(first)
    assert by_case["birads"]["unit"] == "case"
    runs = session.scalars(select(EvaluationRun).where(EvaluationRun.space_id == trained.id))
    assert [run.config["unit"] for run in runs] == ["image"]
    assert measured_vote(session, pg_settings, trained, unit="case") == {}

    again = run_scheduled_evaluations(
        pg_settings, metrics=["cosine"], ks=(1, 5), write_report=False
    )
    assert measured_vote(session, pg_settings, space)["run_id"] in again
    assert measured_vote(session, pg_settings, space, unit="case")["run_id"] in again
    assert measured_vote(session, pg_settings, space, unit="case")["run_id"] not in first
    session.close()


def test_a_trained_space_without_tables_is_not_evaluated_again_and_again(
    pg_settings: Settings,
) -> None:
    """measure-new-space asks only for what an evaluation can measure: a trained space's
    votes come from its model's CV, so an evaluation would add runs every few minutes,
    never a table; a new base space beside it gets both units at once."""
    session = make_session_factory(pg_settings.database_url)()
    seed_space(session, "trained:0123456789ab")
    base = seed_space(session, "efficientnet-lite0")
    measured = run_scheduled_evaluations(
        pg_settings, metrics=["cosine"], ks=(1, 5), write_report=False, unmeasured_only=True
    )
    runs = session.scalars(select(EvaluationRun).where(EvaluationRun.id.in_(measured))).all()
    assert sorted((run.space_id, run.config["unit"]) for run in runs) == [
        (base.id, "case"),
        (base.id, "image"),
    ]
    session.close()
