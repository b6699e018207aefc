"""Evaluation runs: the latest with their metrics, one run in detail with its figures and
the comparison with the run before it, and the admins' regression banner."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, send_file, url_for
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response

from mammosearch.db.models import EvaluationRun
from mammosearch.evaluate.regression import (
    acknowledge_run,
    compare_runs,
    previous_run,
    run_figures,
    unacknowledged_flagged_runs,
)
from web.access import ADMIN, RADIOLOGY, restrict_blueprint
from web.configuration import settings
from web.db import get_session

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


@bp.get("")
def run_list() -> str:
    return render_template("evaluations.html", runs=latest_runs())


@bp.get("/<int:run_id>")
def run_detail(run_id: int) -> str:
    run = _run_or_404(run_id)
    previous = previous_run(get_session(), run)
    threshold = settings().regression_threshold
    return render_template(
        "evaluation.html",
        run=run,
        previous=previous,
        comparison=compare_runs(run, previous, threshold) if previous is not None else [],
        threshold=threshold,
        figures=_figure_names(run),
    )


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
