"""The periodic re-evaluation: every active embedding space, checked against its last run.

Celery beat calls this through the `mammosearch.evaluate_active_space` task
(workers/schedule.py); it needs no broker itself, so it can be run and tested directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace, EvaluationRun, ImageEmbedding
from mammosearch.db.session import session_scope
from mammosearch.evaluate.evaluator import DEFAULT_KS
from mammosearch.evaluate.protocols import DEFAULT_PROTOCOL
from mammosearch.evaluate.regression import check_regression
from mammosearch.evaluate.report import ReportOptions, write_space_report
from mammosearch.evaluate.result import EvaluationResult

log = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, Any]], None]
PROGRESS_EVERY_S = 2.0


def spaces_to_evaluate(
    session: Session, settings: Settings | None = None, unmeasured_only: bool = False
) -> list[EmbeddingSpace]:
    """Active embedding spaces that hold at least one vector, oldest first; with
    `unmeasured_only`, only those whose neighbour vote was never measured (a new space:
    search suggests nothing until it is)."""
    has_vectors = select(ImageEmbedding.image_id).where(
        ImageEmbedding.space_id == EmbeddingSpace.id
    )
    spaces = list(
        session.scalars(
            select(EmbeddingSpace)
            .where(EmbeddingSpace.active.is_(True), has_vectors.exists())
            .order_by(EmbeddingSpace.id)
        )
    )
    if not unmeasured_only or settings is None:
        return spaces

    def last_run_status(space: EmbeddingSpace) -> str | None:
        return session.scalar(
            select(EvaluationRun.status)
            .where(EvaluationRun.space_id == space.id)
            .order_by(EvaluationRun.id.desc())
            .limit(1)
        )

    # A space whose last run failed waits for the daily run: asking again every few
    # minutes would only add failed runs.
    return [
        space
        for space in spaces
        if unmeasured_units(session, settings, space)
        and last_run_status(space) not in ("failed", "running")
    ]


SCHEDULED_UNITS = ("image", "case")
"""The units every scheduled run evaluates (and, in a base space, re-measures the vote of):
search serves both, and a case search reads only a case-level table."""


def measuring_units(space: EmbeddingSpace) -> tuple[str, ...]:
    """The search units whose vote an evaluation run of `space` measures: image and case (by
    the served fusion) for a base space; none for a trained space, whose votes come only
    from its model's cross-validation (evaluate.runs: never from an archive that may have
    trained it)."""
    from mammosearch.embed.trained import TRAINED_PREFIX

    return () if space.backbone.startswith(TRAINED_PREFIX) else SCHEDULED_UNITS


def scheduled_units(space: EmbeddingSpace) -> tuple[str, ...]:
    """What the daily run evaluates in `space`: both units where it measures their votes;
    a trained space's image figures only (its case figures and votes are its CV's)."""
    return measuring_units(space) or ("image",)


def unmeasured_units(
    session: Session, settings: Settings, space: EmbeddingSpace
) -> tuple[str, ...]:
    """The search units (image, case by the served fusion) whose vote `space` has not had
    measured and an evaluation run can measure (`measuring_units`): asking for the others
    would add runs, never a table."""
    from mammosearch.evaluate.runs import measured_vote

    return tuple(
        unit
        for unit in measuring_units(space)
        if not measured_vote(session, settings, space, unit=unit)
    )


class _RunProgress:
    """Feeds the evaluator's (done, total) into EvaluationRun.progress and the callback."""

    def __init__(
        self,
        session: Session,
        space: EmbeddingSpace,
        metric: str,
        step: int,
        steps: int,
        callback: ProgressCallback | None,
        task_id: str | None,
    ) -> None:
        self.session, self.space_id, self.metric = session, space.id, metric
        self.step, self.steps, self.callback, self.task_id = step, steps, callback, task_id
        self.run_id: int | None = None
        self.last_write = 0.0

    def _current_run(self) -> int | None:
        if self.run_id is None:
            self.run_id = self.session.scalar(
                select(EvaluationRun.id)
                .where(
                    EvaluationRun.space_id == self.space_id,
                    EvaluationRun.metric == self.metric,
                    EvaluationRun.status == "running",
                )
                .order_by(EvaluationRun.id.desc())
                .limit(1)
            )
        return self.run_id

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last_write < PROGRESS_EVERY_S:
            return
        self.last_write = now
        fraction = done / total if total else 1.0
        run_id = self._current_run()
        if run_id is not None:
            values: dict[str, Any] = {"progress": fraction}
            if self.task_id:
                values["task_id"] = self.task_id
            self.session.execute(
                update(EvaluationRun).where(EvaluationRun.id == run_id).values(values)
            )
            self.session.commit()
        if self.callback is not None:
            self.callback(
                {
                    "stage": "evaluating",
                    "space_id": self.space_id,
                    "metric": self.metric,
                    "run_id": run_id,
                    "queries_done": done,
                    "queries_total": total,
                    "fraction": (self.step + fraction) / self.steps,
                }
            )


def _tag_failed_run(
    session: Session, space: EmbeddingSpace, metric: str, task_id: str | None
) -> None:
    """A run that failed before its first progress tick carries the task id all the same,
    so whoever follows the task learns why it failed."""
    if not task_id:
        return
    run_id = session.scalar(
        select(EvaluationRun.id)
        .where(EvaluationRun.space_id == space.id, EvaluationRun.metric == metric,
               EvaluationRun.status == "failed", EvaluationRun.task_id.is_(None))
        .order_by(EvaluationRun.id.desc())
        .limit(1)
    )  # fmt: skip
    if run_id is not None:
        session.execute(
            update(EvaluationRun).where(EvaluationRun.id == run_id).values(task_id=task_id)
        )
        session.commit()


def run_scheduled_evaluations(
    settings: Settings,
    progress_callback: ProgressCallback | None = None,
    *,
    label: str = "birads",
    protocol: str = DEFAULT_PROTOCOL,
    metrics: Sequence[str] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    task_id: str | None = None,
    write_report: bool = True,
    trigger: str = "schedule",
    unmeasured_only: bool = False,
) -> list[int]:
    """Evaluate every active space for each metric (default: the indexed metrics) and each
    search unit (`scheduled_units`: a base space's image and case votes are re-measured
    every time), store the runs (`trigger`: "schedule", or "web" when an admin started
    them), flag regressions (a case run against the last case run); returns the ids of the
    finished runs.

    With `write_report`, the runs also get figures: a report under
    settings.reports_dir/scheduled-<UTC time>/ (what the web service shows with each run).
    A space whose evaluation fails is logged (its run is stored as failed) and skipped.
    `unmeasured_only`: only the spaces whose neighbour vote was never measured (beat asks
    often, so that a new space's suggestion is measured at once; nothing to do is cheap),
    each in the units it lacks (`unmeasured_units`): an image run and a case run (the served
    fusion), so a new space's image and case searches both suggest. The report's figures
    are the image runs'.
    """
    from mammosearch.evaluate.runs import evaluate_space

    metrics = tuple(metrics or settings.index_metrics)
    done: dict[int, dict[str, EvaluationResult]] = {}
    with session_scope(settings.database_url) as session:
        spaces = spaces_to_evaluate(session, settings, unmeasured_only)
        jobs = [
            (space, unit, metric)
            for space in spaces
            for unit in (
                unmeasured_units(session, settings, space)
                if unmeasured_only
                else scheduled_units(space)
            )
            for metric in metrics
        ]
        run_ids: list[int | None] = []
        case_runs: list[EvaluationRun] = []
        for step, (space, unit, metric) in enumerate(jobs):
            progress = _RunProgress(
                session, space, metric, step, len(jobs), progress_callback, task_id
            )
            try:
                result = evaluate_space(
                    session, settings, space, label=label, protocol=protocol, metric=metric,
                    ks=ks, trigger=trigger, progress=progress, unit=unit,
                )  # fmt: skip
            except Exception:  # the run row says why; the other spaces still get theirs
                log.exception(
                    "scheduled %s evaluation of space %s (%s) failed", unit, space.id, metric
                )
                _tag_failed_run(session, space, metric, task_id)
                continue
            run = session.get(EvaluationRun, result.run_id)
            if run is not None:
                run.task_id = task_id
                session.commit()
                check_regression(session, settings, run)
                run_ids.append(result.run_id)
                if unit == "image":
                    done.setdefault(space.id, {})[metric] = result
                else:
                    case_runs.append(run)
        if write_report and done:
            _report_runs(session, settings, spaces, label, protocol, metrics, ks, done)
        if write_report:
            _draw_case_figures(session, settings, case_runs)
    if progress_callback is not None:
        progress_callback({"stage": "done", "run_ids": run_ids, "fraction": 1.0})
    return [run_id for run_id in run_ids if run_id is not None]


def _draw_case_figures(session: Session, settings: Settings, runs: list[EvaluationRun]) -> None:
    """A case run's own figures (the report compares the image runs): every run stored by a
    scheduled evaluation has figures, as the pages expect; a failure loses no run."""
    from mammosearch.evaluate.run_figures import write_run_figures

    for run in runs:
        try:
            write_run_figures(session, settings, run)
        except Exception:
            log.exception("figures for case run %s could not be drawn", run.id)
            session.rollback()


def _report_runs(
    session: Session,
    settings: Settings,
    spaces: list[EmbeddingSpace],
    label: str,
    protocol: str,
    metrics: tuple[str, ...],
    ks: Sequence[int],
    done: dict[int, dict[str, EvaluationResult]],
) -> None:
    """Figures for the scheduled runs; a failure here never loses the runs themselves."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = settings.reports_dir / f"scheduled-{stamp}"
    options = ReportOptions(label=label, protocol=protocol, metrics=metrics, ks=tuple(ks))
    evaluated = [space for space in spaces if space.id in done]
    try:
        write_space_report(session, settings, out_dir, evaluated, options, done)
    except Exception:
        log.exception("figures for scheduled runs in %s could not be written", out_dir)
        session.rollback()
