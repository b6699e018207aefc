"""`mammosearch status`: what is registered and how far the pipeline has got."""

from __future__ import annotations

import json

import click

from mammosearch.db import session_scope
from mammosearch.status import collect_status


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json: bool) -> None:
    """Count images by pipeline status (pending, embedded, indexed, failed)."""
    with session_scope() as session:
        report = collect_status(session)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    images = report["images"]
    click.echo(f"images: {images['total']}")
    for name, count in images.items():
        if name != "total":
            click.echo(f"  {name}: {count}")


commands = [status]
