"""Evaluation runs: the latest with their metrics, one run in detail with its figures and
the comparison with the run before it, and the admins' regression banner."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response

from mammosearch.access import audit
from mammosearch.config import Settings
from mammosearch.db.models import EvaluationRun
from mammosearch.evaluate.regression import (
    acknowledge_run,
    compare_runs,
    previous_run,
    run_figures,
    unacknowledged_flagged_runs,
)
from mammosearch.evaluate.run_figures import write_run_figures
from mammosearch.evaluate.tables import headline_k, metric_grid, per_class_rows
from mammosearch.jobs.work_queue import WorkQueue
from web.access import ADMIN, RADIOLOGY, restrict_blueprint
from web.configuration import settings, work_queue
from web.db import get_session

log = logging.getLogger(__name__)

bp = restrict_blueprint(Blueprint("evaluation", __name__, url_prefix="/evaluations"), ADMIN)
# Figures are open to radiologists too (they carry no patient data beyond thumbnails of
# archive images, which radiologists see anyway): their own blueprint keeps `bp` admin-only.
figures_bp = restrict_blueprint(
    Blueprint("evaluation_figures", __name__, url_prefix="/evaluations"), RADIOLOGY
)

LIST_LIMIT = 50


def latest_runs(limit: int = LIST_LIMIT) -> list[EvaluationRun]:
    statement = select(EvaluationRun).order_by(
        EvaluationRun.started_at.desc(), EvaluationRun.id.desc()
    )
    return list(get_session().scalars(statement.limit(limit)))


def _run_or_404(run_id: int) -> EvaluationRun:
    run = get_session().get(EvaluationRun, run_id)
    if run is None:
        abort(404, description=f"evaluation run {run_id}: not found")
    return run


def _figure_names(run: EvaluationRun) -> list[str]:
    """Figures as paths relative to the run's report directory (what the figure route takes)."""
    root = run.report_path or ""
    return [path.relative_to(root).as_posix() for path in run_figures(run)]


def headline(run: EvaluationRun) -> dict[str, Any]:
    """The four numbers a list of runs shows: P, R and NDCG at the headline k, and mAP."""
    ks = (run.config or {}).get("ks") or [5]
    k = headline_k(ks)
    metrics = run.metrics or {}
    map_key = next((key for key in metrics if key.startswith("map")), "map")
    return {
        "k": k, "map_key": map_key,
        "values": [metrics.get(f"{name}@{k}") for name in ("precision", "recall", "ndcg")]
        + [metrics.get(map_key)],
    }  # fmt: skip


@bp.get("")
def run_list() -> str:
    runs = latest_runs()
    job_id = request.args.get("job") or None
    return render_template(
        "evaluations.html", runs=runs, headlines={run.id: headline(run) for run in runs},
        job_id=job_id, queue_mode=work_queue().mode,
    )  # fmt: skip


# --- starting an evaluation from the page --------------------------------------------------

_jobs: dict[str, dict[str, Any]] = {}  # in-process runs of this process: id -> state
_jobs_lock = threading.Lock()
_one_evaluation = threading.Lock()  # embedded mode: one evaluation at a time


def _note(job_id: str, **values: Any) -> None:
    with _jobs_lock:
        _jobs.setdefault(job_id, {}).update(values)


def _evaluate_alone(queue: WorkQueue, job_id: str, label: str) -> None:
    """The in-process queue's evaluation, on a thread so that the page returns at once."""
    with _one_evaluation:
        _note(job_id, state="running", stage="loading vectors", fraction=0.0)

        def progress(meta: dict[str, Any]) -> None:
            stage = meta.get("stage", "")
            if stage == "evaluating":
                stage = f"evaluating space {meta['space_id']} ({meta['metric']}): " \
                    f"{meta['queries_done']} of {meta['queries_total']} queries"  # fmt: skip
            elif stage == "figures":
                stage = "drawing the figures"
            _note(job_id, stage=stage, fraction=float(meta.get("fraction", 0.0)),
                  run_ids=meta.get("run_ids"))  # fmt: skip

        try:
            queue.enqueue_evaluation(label=label, trigger="web", task_id=job_id, progress=progress)
        except Exception as exc:  # noqa: BLE001 - the job's state says what failed
            log.exception("evaluation %s failed", job_id)
            _note(job_id, state="failed", error=str(exc))
            return
        _note(job_id, **_outcome(queue, job_id))


def _outcome(queue: WorkQueue, job_id: str) -> dict[str, Any]:
    """Done when a run finished; failed, with the first run's reason, when none did."""
    from mammosearch.db.session import session_scope
    from web.public_names import public_text

    with session_scope(queue.settings.database_url) as session:  # type: ignore[attr-defined]
        runs = list(session.scalars(select(EvaluationRun).where(EvaluationRun.task_id == job_id)))
        if any(run.status == "done" for run in runs):
            return {"state": "done", "stage": "done", "fraction": 1.0}
        reason = next((run.error for run in runs if run.error), None) or (
            "no active embedding space with vectors: embed the archive first"
        )  # fmt: skip
        return {"state": "failed", "stage": "", "fraction": 1.0, "error": public_text(reason)}


@bp.post("/start")
def start_evaluation() -> Response:
    """Evaluate every active space now: a task on the `evaluate` queue with a broker, a
    thread of this process without one. The list page then follows its progress."""
    queue = work_queue()
    label = "birads"
    if queue.mode == "in-process":
        if _one_evaluation.locked():
            running = next((i for i, j in _jobs.items() if j.get("state") == "running"), None)
            flash("An evaluation is running already; its progress is below.", "info")
            return redirect(url_for("evaluation.run_list", job=running))
        job_id = f"web-{uuid.uuid4().hex[:12]}"
        _note(job_id, state="queued", stage="waiting to start", fraction=0.0, mode=queue.mode,
              started_at=datetime.now(UTC).isoformat())  # fmt: skip
        worker = threading.Thread(target=_evaluate_alone, args=(queue, job_id, label), daemon=True)
        worker.start()
    else:
        job_id = queue.enqueue_evaluation(label=label, trigger="web")
    session = get_session()
    audit.record_access(
        session, current_user.row, "start_evaluation",
        detail={"task_id": job_id, "label": label, "mode": queue.mode},
        remote_addr=request.remote_addr,
    )  # fmt: skip
    session.commit()
    flash("Evaluation of the active embedding space started; progress below.", "info")
    return redirect(url_for("evaluation.run_list", job=job_id))


def _broker_state(app_settings: Settings, job_id: str) -> dict[str, Any] | None:
    from workers.enqueue import task_progress

    found = task_progress(app_settings, job_id)
    if found is None:
        return None
    meta = found.get("meta") or {}
    state = {"PENDING": "queued", "RECEIVED": "queued", "STARTED": "running",
             "PROGRESS": "running", "RETRY": "running", "SUCCESS": "done",
             "FAILURE": "failed", "REVOKED": "failed"}.get(found["state"], "unknown")  # fmt: skip
    stage = {"queued": "waiting for an evaluate worker", "done": "done"}.get(state, "")
    if meta.get("stage") == "evaluating":
        stage = f"evaluating space {meta.get('space_id')} ({meta.get('metric')}): " \
            f"{meta.get('queries_done')} of {meta.get('queries_total')} queries"  # fmt: skip
    if meta.get("reason"):
        stage = meta["reason"]
    return {"state": state, "stage": stage, "fraction": meta.get("fraction"),
            "error": found.get("error")}  # fmt: skip


@bp.get("/jobs/<job_id>")
def job_status(job_id: str) -> Response:
    """An evaluation started from the page: state, stage, fraction done, and its runs."""
    runs = list(get_session().scalars(
        select(EvaluationRun).where(EvaluationRun.task_id == job_id).order_by(EvaluationRun.id)
    ))  # fmt: skip
    with _jobs_lock:
        known = dict(_jobs.get(job_id) or {})
    if not known and work_queue().mode == "broker":
        known = _broker_state(settings(), job_id) or {}
    if not known:
        if not runs:
            abort(404, description=f"evaluation job {job_id!r}: not known here")
        running = any(run.status == "running" for run in runs)
        known = {"state": "running" if running else "done", "stage": ""}
    if known.get("fraction") is None and runs:
        known["fraction"] = sum(run.progress or 0.0 for run in runs) / len(runs)
    return jsonify({
        "id": job_id, "state": known.get("state", "unknown"), "stage": known.get("stage", ""),
        "fraction": known.get("fraction") or 0.0, "error": known.get("error"),
        "runs": [{"id": run.id, "status": run.status, "metric": run.metric,
                  "progress": run.progress, "url": url_for("evaluation.run_detail", run_id=run.id)}
                 for run in runs],
    })  # fmt: skip


@bp.get("/<int:run_id>")
def run_detail(run_id: int) -> str:
    run = _run_or_404(run_id)
    figures_error = _draw_missing_figures(run)
    previous = previous_run(get_session(), run)
    threshold = settings().regression_threshold
    ks = (run.config or {}).get("ks") or sorted(
        {int(key.split("@")[1]) for key in (run.metrics or {}) if "@" in key}
    )  # fmt: skip
    return render_template(
        "evaluation.html",
        run=run,
        previous=previous,
        comparison=compare_runs(run, previous, threshold) if previous is not None else [],
        threshold=threshold,
        figures=_figure_names(run),
        figures_error=figures_error,
        grid=metric_grid(run.metrics or {}, (run.config or {}).get("chance") or {}, ks or [5]),
        per_class=per_class_rows(run.per_class or {}, ks or [5]),
    )


def _draw_missing_figures(run: EvaluationRun) -> str | None:
    """A finished run without figures gets them now (once); the reason when it cannot."""
    if run.status != "done" or run_figures(run):
        return None
    try:
        write_run_figures(get_session(), settings(), run)
    except Exception as exc:  # noqa: BLE001 - the page shows the numbers all the same
        get_session().rollback()
        log.exception("figures for evaluation run %s", run.id)
        return f"figures could not be drawn: {exc}"
    return None


@figures_bp.get("/<int:run_id>/figures/<path:name>")
def run_figure(run_id: int, name: str) -> Response:
    """One PNG of the run's report, only those the run lists (never an arbitrary path)."""
    run = _run_or_404(run_id)
    for path, relative in zip(run_figures(run), _figure_names(run), strict=True):
        if relative == name:
            return send_file(path, mimetype="image/png", max_age=0)
    abort(404, description=f"evaluation run {run_id}: no figure {name!r}")


@bp.post("/<int:run_id>/acknowledge")
def acknowledge(run_id: int) -> Response:
    """An admin has seen the regression: the banner stops showing this run."""
    run = _run_or_404(run_id)
    acknowledge_run(get_session(), run, current_user.row)
    flash(f"Regression of evaluation #{run.id} acknowledged.", "info")
    return redirect(url_for("evaluation.run_detail", run_id=run.id))


@bp.app_context_processor
def regression_banner() -> dict[str, Any]:
    """`regression_alerts` on every page: unacknowledged flagged runs, for admins only."""
    if not (current_user and current_user.is_authenticated and current_user.is_admin):
        return {"regression_alerts": []}
    try:
        return {"regression_alerts": unacknowledged_flagged_runs(get_session())}
    except SQLAlchemyError:  # an error page for a broken database must still render
        return {"regression_alerts": []}
