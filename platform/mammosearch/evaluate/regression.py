"""A run against the one before it: comparison, regression flag, webhook, figures, banner.

"The one before" is the newest earlier finished run of the same embedding space, label,
protocol and distance metric: only those numbers are comparable. A watched metric that
drops by more than `settings.regression_threshold` (absolute) flags the run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.access.audit import record_access
from mammosearch.config import Settings
from mammosearch.db.models import AuditEvent, EvaluationRun, User
from mammosearch.evaluate.metrics import TIMING_KEYS

log = logging.getLogger(__name__)

WATCHED_METRICS = ("precision@10", "ndcg@10", "map")
"""The metrics whose drop flags a run (those present in both runs)."""
WEBHOOK_TIMEOUT_S = 5.0
ACKNOWLEDGE_ACTION = "acknowledge_regression"
FLAGGED_LOOKBACK = 200
PREVIOUS_LOOKBACK = 50
"""Earlier runs searched for one of the same result order (the order lives in the config)."""


def run_ranking(run: EvaluationRun) -> str:
    """The result order a run scored (runs before the option existed: similarity)."""
    return str((run.config or {}).get("order") or "similarity")


def run_kind(run: EvaluationRun) -> tuple[str, str, str | None]:
    """What a run's figures are comparable with: its order, unit (runs before the option
    existed: image) and case fusion. A case run is never a regression of an image run."""
    config = run.config or {}
    return run_ranking(run), str(config.get("unit") or "image"), config.get("fusion")


def previous_run(session: Session, run: EvaluationRun) -> EvaluationRun | None:
    """The newest finished run before `run` with the same space, label, protocol, metric,
    result order, unit and fusion (`run_kind`)."""
    earlier = session.scalars(
        select(EvaluationRun)
        .where(
            EvaluationRun.id < run.id,
            EvaluationRun.status == "done",
            EvaluationRun.space_id == run.space_id,
            EvaluationRun.label == run.label,
            EvaluationRun.protocol == run.protocol,
            EvaluationRun.metric == run.metric,
        )
        .order_by(EvaluationRun.id.desc())
        .limit(PREVIOUS_LOOKBACK)
    )
    return next((old for old in earlier if run_kind(old) == run_kind(run)), None)


def compare_runs(
    run: EvaluationRun,
    previous: EvaluationRun | None,
    threshold: float = 0.05,
    watched: tuple[str, ...] = WATCHED_METRICS,
) -> list[dict[str, Any]]:
    """One row per metric of `run`: current, previous, delta (current - previous), regressed.

    `regressed` is True only for watched metrics that dropped by more than `threshold`;
    timings are shown but never flag (they move with the machine's load).
    """
    old = previous.metrics if previous is not None else {}
    rows = []
    for metric, current in (run.metrics or {}).items():
        if not isinstance(current, int | float):
            continue
        before = old.get(metric)
        delta = current - before if isinstance(before, int | float) else None
        rows.append(
            {
                "metric": metric,
                "current": current,
                "previous": before,
                "delta": delta,
                "regressed": bool(
                    delta is not None
                    and metric in watched
                    and metric not in TIMING_KEYS
                    and -delta > threshold
                ),
            }
        )
    return rows


def flag_reason(rows: list[dict[str, Any]], previous: EvaluationRun, threshold: float) -> str:
    drops = ", ".join(
        f"{row['metric']} {row['previous']:.3f} -> {row['current']:.3f} ({row['delta']:+.3f})"
        for row in rows
        if row["regressed"]
    )
    return f"dropped by more than {threshold:g} against run #{previous.id}: {drops}"


def post_webhook(url: str, payload: dict[str, Any]) -> bool:
    """POST the JSON payload; a failure is logged, never raised (the run is already stored)."""
    import requests

    try:
        response = requests.post(url, json=payload, timeout=WEBHOOK_TIMEOUT_S)
        response.raise_for_status()
    except requests.RequestException as exc:
        log.warning("regression webhook %s failed: %s", url, exc)
        return False
    return True


def check_regression(
    session: Session, settings: Settings, run: EvaluationRun
) -> list[dict[str, Any]]:
    """Compare `run` with its previous run; flag it (commits) and call the webhook on a drop.

    Returns the comparison rows (empty when there is no previous run).
    """
    previous = previous_run(session, run)
    if previous is None or run.status != "done":
        return []
    rows = compare_runs(run, previous, settings.regression_threshold)
    if not any(row["regressed"] for row in rows):
        return rows
    run.flagged = True
    run.flag_reason = flag_reason(rows, previous, settings.regression_threshold)
    session.commit()
    log.warning("evaluation run %s flagged: %s", run.id, run.flag_reason)
    if settings.regression_webhook_url:
        post_webhook(
            settings.regression_webhook_url,
            {
                "event": "evaluation_regression",
                "run_id": run.id,
                "previous_run_id": previous.id,
                "embedding_space": run.space.describe() if run.space is not None else None,
                "label": run.label,
                "protocol": run.protocol,
                "metric": run.metric,
                "threshold": settings.regression_threshold,
                "flag_reason": run.flag_reason,
                "regressions": [row for row in rows if row["regressed"]],
            },
        )
    return rows


def run_figures(run: EvaluationRun) -> list[Path]:
    """The PNG files of the run's report directory that concern this run (none without one)."""
    if not run.report_path:
        return []
    root = Path(run.report_path)
    names = (run.config or {}).get("report_figures")
    if names is None:
        candidates = sorted((root / "figures").glob("*.png"))
    else:
        candidates = [root / name for name in names]
    resolved_root = root.resolve()
    return [
        path
        for path in candidates
        if path.is_file() and path.resolve().is_relative_to(resolved_root)
    ]


def acknowledge_run(session: Session, run: EvaluationRun, user: User | None) -> None:
    """Record that someone saw the flag (an audit event); the banner stops showing it."""
    record_access(session, user, ACKNOWLEDGE_ACTION, detail={"evaluation_run_id": run.id})
    session.commit()


def unacknowledged_flagged_runs(session: Session) -> list[EvaluationRun]:
    """Flagged runs (newest first, recent ones) that no one has acknowledged yet."""
    flagged = list(
        session.scalars(
            select(EvaluationRun)
            .where(EvaluationRun.flagged.is_(True))
            .order_by(EvaluationRun.id.desc())
            .limit(FLAGGED_LOOKBACK)
        )
    )
    if not flagged:
        return []
    acknowledged = {
        (detail or {}).get("evaluation_run_id")
        for detail in session.scalars(
            select(AuditEvent.detail).where(AuditEvent.action == ACKNOWLEDGE_ACTION)
        )
    }
    return [run for run in flagged if run.id not in acknowledged]
