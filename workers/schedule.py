"""Every periodic job, in one place: beat reads this table and nothing else."""

from __future__ import annotations

from typing import Any

from mammosearch.config import Settings

NEW_SPACE_CHECK_S = 300.0
"""How often beat looks for an active space whose neighbour vote was never measured."""


def _every(task: str, seconds: float, **kwargs: Any) -> dict[str, Any]:
    # A run that waited longer than its own period is stale: the next one supersedes it, so
    # a stopped worker does not come back to a pile of identical sweeps.
    return {
        "task": task,
        "schedule": seconds,
        "kwargs": kwargs,
        "options": {"expires": max(1.0, seconds)},
    }


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The periodic jobs for these settings (watch folders and Orthanc only when configured)."""
    schedule = {
        "reconcile": _every("mammosearch.reconcile", settings.reconcile_schedule_s),
        "evaluate-active-space": _every(
            "mammosearch.evaluate_active_space", settings.evaluation_schedule_s
        ),
        # A space whose vote was never measured shows no suggestion: measure it at once.
        "measure-new-space": _every(
            "mammosearch.evaluate_active_space", NEW_SPACE_CHECK_S, unmeasured_only=True
        ),
    }
    if settings.auto_train:
        schedule["auto-train"] = _every("mammosearch.auto_train", settings.auto_train_check_s)
    if settings.watch_dirs:
        schedule["scan-watch-dirs"] = _every(
            "mammosearch.scan_watch_dirs", settings.watch_schedule_s
        )
    if settings.orthanc_url:
        schedule["follow-orthanc"] = _every(
            "mammosearch.follow_orthanc", settings.orthanc_schedule_s
        )
    return schedule
