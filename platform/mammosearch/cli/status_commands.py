"""`mammosearch status`: what is registered and how far the pipeline has got."""

from __future__ import annotations

import json
from typing import Any

import click

from mammosearch.config import get_settings
from mammosearch.db import session_scope
from mammosearch.jobs.status import collect_status
from workers.work_queue import work_queue_for


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json: bool) -> None:
    """Count images by pipeline status (pending, embedded, indexed, failed)."""
    from mammosearch.train import auto

    settings = get_settings()
    with session_scope() as session:
        report = collect_status(session, work_queue_for(settings), settings.claim_lease_s)
    record = auto.read_state(settings)
    report["auto_train"] = {
        "enabled": settings.auto_train,
        "state": record.get("state"),
        "summary": auto.summary_line(record),
    }
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    images = report["images"]
    click.echo(f"images: {images['total']}")
    for name, count in images.items():
        if name != "total":
            click.echo(f"  {name}: {count}")
    _echo_pipeline(report)


def _echo_pipeline(report: dict[str, Any]) -> None:
    """Lag, last failures and queue depths (the sections mammosearch.jobs.status adds)."""
    lag = report.get("lag") or {}
    if lag.get("oldest_pending_age_s") is not None:
        click.echo(
            f"ingestion lag: oldest pending image {lag['oldest_pending_image_id']} has waited "
            f"{lag['oldest_pending_age_s']:.0f} s"
        )
    if report.get("abandoned_claims"):
        click.echo(
            f"claimed but held by nobody: {report['abandoned_claims']} (a killed process's;"
            " the next ingest, embed or serve releases them, or `mammosearch reconcile`)"
        )
    failures = report.get("failures") or []
    if failures:
        click.echo("last failures:")
        for failure in failures:
            click.echo(f"  image {failure['image_id']}: {failure['error']}")
    tasks = report.get("tasks") or {}
    if tasks.get("mode") == "broker":
        depths = ", ".join(f"{queue} {depth}" for queue, depth in tasks["queues"].items())
        click.echo(f"queued tasks: {depths or tasks.get('error', 'unknown')}")
    elif tasks:
        click.echo("tasks: in-process (no broker configured)")
    trained = report.get("auto_train") or {}
    if trained.get("state"):
        click.echo(f"archive's own model: {trained['state']}: {trained['summary']}")
    elif trained:
        click.echo(
            "archive's own model: "
            + ("not checked yet" if trained["enabled"] else "off (MAMMOSEARCH_AUTO_TRAIN=0)")
        )


commands = [status]
