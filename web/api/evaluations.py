"""GET /api/v1/evaluations and /api/v1/evaluations/<id> (admins)."""

from __future__ import annotations

from typing import Any

from flask import abort, jsonify, request
from werkzeug.wrappers import Response

from mammosearch.db.models import EvaluationRun
from web.access import ADMIN, roles_required
from web.api import bp
from web.blueprints.evaluation import latest_runs
from web.db import get_session
from web.public_names import public_json, public_space, public_text


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None


def run_summary(run: EvaluationRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "space_id": run.space_id,
        "embedding_space": public_space(run.space.describe() if run.space else None),
        "trigger": run.trigger,
        "status": run.status,
        "protocol": run.protocol,
        "label": run.label,
        "metric": run.metric,
        "metrics": run.metrics,
        "per_class": run.per_class,
        "config": public_json(run.config),  # it holds the space's description
        "queries": run.queries,
        "archive_size": run.archive_size,
        "duration_s": run.duration_s,
        "progress": run.progress,
        "error": public_text(run.error),
        "flagged": run.flagged,
        "flag_reason": run.flag_reason,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
    }


@bp.get("/evaluations")
@roles_required(*ADMIN)
def evaluations() -> Response:
    limit = min(max(request.args.get("limit", 50, type=int) or 50, 1), 500)
    return jsonify(evaluations=[run_summary(run) for run in latest_runs(limit)])


@bp.get("/evaluations/<int:run_id>")
@roles_required(*ADMIN)
def evaluation(run_id: int) -> Response:
    run = get_session().get(EvaluationRun, run_id)
    if run is None:
        abort(404, description=f"evaluation run {run_id}: not found")
    return jsonify(run_summary(run))
