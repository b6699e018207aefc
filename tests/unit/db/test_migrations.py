"""Migrations create the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.util.exc import CommandError
from sqlalchemy import inspect

from mammosearch.db import migrate
from mammosearch.db.models import Base
from mammosearch.db.session import get_engine


def test_migrated_database_has_every_model_table(database_url: str) -> None:
    tables = set(inspect(get_engine(database_url)).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= tables


def test_models_and_migrations_do_not_drift_on_postgres(pg_url: str) -> None:
    try:
        migrate.check(pg_url)
    except CommandError as exc:  # pragma: no cover - the failure message is the point
        raise AssertionError(f"alembic check found drift: {exc}") from exc


def test_upgrading_twice_changes_nothing(database_url: str) -> None:
    before = migrate.current_revision(database_url)
    migrate.upgrade(database_url)
    assert migrate.current_revision(database_url) == before is not None
