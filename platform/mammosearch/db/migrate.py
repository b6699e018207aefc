"""Apply and check Alembic migrations from code (the CLI, tests and the web start-up use it)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from mammosearch.config import get_settings

REPO_ROOT = Path(__file__).resolve().parents[3]
ALEMBIC_INI = REPO_ROOT / "alembic.ini"


class MigrationRefused(RuntimeError):
    """A migration that cannot go on with the rows as they are; the message says which rows
    and what to do, and nothing was changed."""


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic config pointing at migrations/ and at `database_url` (default: settings)."""
    if not ALEMBIC_INI.exists():
        raise FileNotFoundError(f"{ALEMBIC_INI}: alembic.ini not found; run from a source checkout")
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("sqlalchemy.url", database_url or get_settings().database_url)
    return config


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    """Bring the database to `revision`; running it twice changes nothing."""
    url = database_url or get_settings().database_url
    if url.startswith("sqlite"):
        from mammosearch.db.session import create_private_sqlite_file

        create_private_sqlite_file(url)
    command.upgrade(alembic_config(url), revision)


def check(database_url: str | None = None) -> None:
    """Raise if the models and the migrations disagree (alembic check)."""
    command.check(alembic_config(database_url))


def current_revision(database_url: str | None = None) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(database_url or get_settings().database_url)
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
