"""Evaluation runs: the latest with their metrics, and one run in detail."""

from __future__ import annotations

from flask import Blueprint, abort, render_template
from sqlalchemy import select

from mammosearch.db.models import EvaluationRun
from web.access import ADMIN, restrict_blueprint
from web.db import get_session

bp = restrict_blueprint(Blueprint("evaluation", __name__, url_prefix="/evaluations"), ADMIN)

LIST_LIMIT = 50


def latest_runs(limit: int = LIST_LIMIT) -> list[EvaluationRun]:
    statement = select(EvaluationRun).order_by(
        EvaluationRun.started_at.desc(), EvaluationRun.id.desc()
    )
    return list(get_session().scalars(statement.limit(limit)))


@bp.get("")
def run_list() -> str:
    return render_template("evaluations.html", runs=latest_runs())


@bp.get("/<int:run_id>")
def run_detail(run_id: int) -> str:
    run = get_session().get(EvaluationRun, run_id)
    if run is None:
        abort(404, description=f"evaluation run {run_id}: not found")
    return render_template("evaluation.html", run=run)
