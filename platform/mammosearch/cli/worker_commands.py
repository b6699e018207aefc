"""`mammosearch worker | beat | watch | reconcile`: continuous ingestion from the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from mammosearch.config import get_settings
from mammosearch.jobs.work_queue import QUEUES


def _require_broker() -> None:
    if get_settings().tasks_in_process:
        raise click.UsageError(
            "CELERY_BROKER_URL is not set: there is no queue to serve (without a broker the "
            "pipeline runs in-process; set e.g. CELERY_BROKER_URL=redis://localhost:6379/0)"
        )


def _banner_flag() -> list[str]:
    """`--quiet` under MAMMOSEARCH_LOG_JSON: Celery's start-up banner is not a JSON line."""
    return ["--quiet"] if get_settings().log_json else []


@click.command("worker")
@click.option(
    "--queues",
    "-Q",
    default=",".join(QUEUES),
    show_default=True,
    help="Comma-separated queues to consume. Run `index` in its own worker with "
    "--concurrency 1 (one index writer per space).",
)
@click.option("--concurrency", "-c", type=int, default=None, help="Worker processes (prefork).")
@click.option("--loglevel", "-l", default=None, help="Celery log level (default: settings).")
def worker(queues: str, concurrency: int | None, loglevel: str | None) -> None:
    """Start a Celery worker for the project's app (same as `celery -A workers.app:celery_app`)."""
    _require_broker()
    unknown = sorted(set(q.strip() for q in queues.split(",") if q.strip()) - set(QUEUES))
    if unknown:
        known = ", ".join(QUEUES)
        raise click.BadParameter(f"unknown queue(s) {', '.join(unknown)}; known: {known}")
    from workers.app import celery_app

    argv = [
        *_banner_flag(),
        "worker",
        "--queues",
        queues,
        "--loglevel",
        loglevel or get_settings().log_level,
    ]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    celery_app.worker_main(argv)


@click.command("beat")
@click.option("--loglevel", "-l", default=None, help="Celery log level (default: settings).")
def beat(loglevel: str | None) -> None:
    """Start Celery beat: the periodic jobs of workers/schedule.py (schedule file in data dir)."""
    _require_broker()
    settings = get_settings()
    from workers.app import celery_app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    schedule_file = settings.data_dir / "celerybeat-schedule"
    celery_app.start(
        [
            *_banner_flag(),
            "beat",
            "--schedule",
            str(schedule_file),
            "--loglevel",
            loglevel or settings.log_level,
        ]
    )


@click.command("watch")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--once", is_flag=True, help="Scan once and exit (e.g. from cron).")
@click.option(
    "--interval",
    type=float,
    default=None,
    help="Seconds between scans [default: MAMMOSEARCH_WATCH_SCHEDULE_S].",
)
@click.option(
    "--min-age",
    "min_age_s",
    type=float,
    default=None,
    help="Take a file this many seconds after its last change even if seen only once "
    "[default: 10].",
)
def watch(directory: Path, once: bool, interval: float | None, min_age_s: float | None) -> None:
    """Register new images dropped into DIRECTORY, then embed and index them."""
    from mammosearch.ingest.watch import DEFAULT_MIN_AGE_S, scan_directory
    from workers.work_queue import work_queue_for

    settings = get_settings()
    if not directory.is_dir():
        raise click.BadParameter(f"{directory}: not a folder", param_hint="DIRECTORY")
    interval_s = interval if interval is not None else settings.watch_schedule_s
    while True:
        summary = scan_directory(settings, directory, min_age_s or DEFAULT_MIN_AGE_S)
        line = ", ".join(f"{k} {v}" for k, v in summary.counts().items())
        click.echo(f"{summary.directory}: {line}")
        for reason in summary.rejected:
            click.echo(f"  rejected: {reason}", err=True)
        if summary.registered:
            dispatched = work_queue_for(settings).enqueue_embedding()
            click.echo(f"  {dispatched.mode}: {dispatched.images} images handed on")
        if once:
            return
        time.sleep(interval_s)


@click.command("reconcile")
@click.option(
    "--grace",
    "grace_s",
    type=float,
    default=None,
    help="Only work untouched for this many seconds [default: 15].",
)
def reconcile(grace_s: float | None) -> None:
    """Re-enqueue images left pending or unindexed (in-process: run the pipeline over them)."""
    from mammosearch.jobs.reconcile import DEFAULT_GRACE_S
    from mammosearch.jobs.reconcile import reconcile as sweep
    from workers.work_queue import work_queue_for

    settings = get_settings()
    summary = sweep(
        settings, work_queue_for(settings), DEFAULT_GRACE_S if grace_s is None else grace_s
    )
    click.echo(
        json.dumps(
            {
                "mode": summary.mode,
                "pending_images": summary.pending_images,
                "unindexed_spaces": summary.unindexed_spaces,
                "verified_spaces": summary.verified_spaces,
                **summary.detail,
            },
            indent=2,
            default=str,
        )
    )


commands = [worker, beat, watch, reconcile]
