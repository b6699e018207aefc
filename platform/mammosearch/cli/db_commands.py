"""`mammosearch db ...`: create and migrate the metadata database."""

from __future__ import annotations

from pathlib import Path

import click

from mammosearch.config import Settings, get_settings
from mammosearch.db.session import redact_url


@click.group("db")
def db() -> None:
    """Create, migrate and check the metadata database (DATABASE_URL)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision.")
def upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (creates the SQLite file when needed)."""
    from mammosearch.db import migrate

    url = get_settings().database_url
    migrate.upgrade(url, revision)
    click.echo(f"database at revision {migrate.current_revision(url)} ({redact_url(url)})")


@db.command("check")
def check() -> None:
    """Fail when the models and the migrations disagree."""
    from mammosearch.db import migrate

    migrate.check()
    click.echo("models and migrations agree")


@db.command("current")
def current() -> None:
    """Print the database's current revision."""
    from mammosearch.db import migrate

    click.echo(migrate.current_revision() or "empty (run `mammosearch db upgrade`)")


def migrate_embedded_database(settings: Settings, quiet: bool = False) -> None:
    """On the embedded SQLite default, create or migrate the database before it is used, so
    a first run needs no `db upgrade`. PostgreSQL is left alone: it is shared by services,
    and migrating it is an operator's step (`mammosearch db upgrade`)."""
    url = settings.database_url
    if not url.startswith("sqlite"):
        return
    from mammosearch.db import migrate  # here: Alembic is slow to import

    path = url.split("///", 1)[-1]
    before = None
    if path and Path(path).exists():
        before = migrate.current_revision(url)
        if before is None and _has_tables(url):  # made without Alembic (create_all): not ours
            return
    migrate.upgrade(url)
    after = migrate.current_revision(url)
    if after != before and not quiet:
        done = "created" if before is None else f"migrated from {before}"
        click.echo(f"database {done} at revision {after} ({redact_url(url)})", err=True)


def _has_tables(url: str) -> bool:
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        return bool(inspect(engine).get_table_names())
    finally:
        engine.dispose()


commands = [db]
