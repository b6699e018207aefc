"""Liveness (/healthz: the process answers) and readiness (/readyz: its dependencies answer)."""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from werkzeug.wrappers import Response

from web.access import public
from web.configuration import settings, work_queue
from web.db import get_session
from web.index_repair import request_repair

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@public
def healthz() -> Response:
    """No database, no broker: only that this process serves requests."""
    return jsonify(status="ok")


def _check_database() -> dict[str, Any]:
    try:
        get_session().execute(text("SELECT 1"))
        return {"ok": True}
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        damaged = _damaged_database(error)
        if damaged is not None:
            return damaged
        # /readyz is public: the driver's text names hosts and ports; it goes to the log only.
        log.warning("readyz: database check failed", exc_info=True)
        return {"ok": False, "error": "database: not reachable (the server log has why)"}


def _damaged_database(error: Exception) -> dict[str, Any] | None:
    """The check's answer when `error` says the embedded database file is damaged (its name
    only: /readyz is public; the log has the path)."""
    from mammosearch.db.session import damaged_database_message

    url = settings().database_url
    damaged = damaged_database_message(url, error, full_path=False)
    if damaged is None:
        return None
    log.error("readyz: %s", damaged_database_message(url, error))
    return {"ok": False, "error": f"database: {damaged}"}


def _check_broker(url: str) -> dict[str, Any]:
    if not url.startswith(("redis://", "rediss://")):
        return {"ok": True, "detail": "not a Redis broker; not pinged"}
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping()
        return {"ok": True}
    except Exception:  # noqa: BLE001
        log.warning("readyz: broker check failed", exc_info=True)
        return {"ok": False, "error": "broker: not reachable (the server log has why)"}


def _check_index_dir() -> dict[str, Any]:
    index_dir = settings().index_dir
    if not index_dir.exists():
        # No path in the answer: /readyz is public.
        return {"ok": True, "detail": "index directory not created yet (nothing indexed)"}
    if not os.access(index_dir, os.R_OK | os.X_OK):
        return {
            "ok": False,
            "error": "index directory (MAMMOSEARCH_DATA_DIR/index): not readable by this process",
        }
    return {"ok": True}


def _check_indexes() -> dict[str, Any]:
    """Every active space's index serves all the database lists as indexed; one that does
    not is named (space and metric, no path: /readyz is public) and its repair requested."""
    from mammosearch.pipeline.index_health import serving_health

    try:
        unwhole = [h for h in serving_health(get_session(), settings()) if not h.whole]
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        damaged = _damaged_database(error)
        if damaged is not None:
            return damaged
        log.warning("readyz: index check failed", exc_info=True)
        return {"ok": False, "error": "indexes: could not be checked (the server log has why)"}
    if not unwhole:
        return {"ok": True}
    for health in unwhole:
        log.error("readyz: %s", health.message())
    for space_id in sorted({health.space_id for health in unwhole}):
        request_repair(work_queue(), space_id)
    return {
        "ok": False,
        "error": "; ".join(health.summary() for health in unwhole),
        "spaces": sorted({health.space_id for health in unwhole}),
    }


@bp.get("/readyz")
@public
def readyz() -> tuple[Response, int]:
    checks = {"database": _check_database(), "index_dir": _check_index_dir()}
    if checks["database"]["ok"]:
        checks["indexes"] = _check_indexes()
    broker_url = current_app.config.get("CELERY_BROKER_URL")
    if broker_url:
        checks["broker"] = _check_broker(broker_url)
    # The broker only carries new work: with it down, search and pages still serve (degraded).
    ready = all(check["ok"] for name, check in checks.items() if name != "broker")
    if not ready:
        return jsonify(status="not ready", checks=checks), 503
    degraded = not checks.get("broker", {"ok": True})["ok"]
    return jsonify(status="degraded" if degraded else "ready", checks=checks), 200
