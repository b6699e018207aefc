"""`mammosearch db ...`: create and migrate the metadata database."""

from __future__ import annotations

import click

from mammosearch.config import get_settings
from mammosearch.db import migrate
from mammosearch.db.session import redact_url


@click.group("db")
def db() -> None:
    """Create, migrate and check the metadata database (DATABASE_URL)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision.")
def upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (creates the SQLite file when needed)."""
    url = get_settings().database_url
    migrate.upgrade(url, revision)
    click.echo(f"database at revision {migrate.current_revision(url)} ({redact_url(url)})")


@db.command("check")
def check() -> None:
    """Fail when the models and the migrations disagree."""
    migrate.check()
    click.echo("models and migrations agree")


@db.command("current")
def current() -> None:
    """Print the database's current revision."""
    click.echo(migrate.current_revision() or "empty (run `mammosearch db upgrade`)")


commands = [db]
