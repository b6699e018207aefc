"""Engines and sessions; one engine per database URL per process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from mammosearch.config import get_settings


def create_private_sqlite_file(url: str) -> None:
    """Create a SQLite database file readable by its owner only (0600), before SQLite does.

    SQLite gives its -wal and -shm files the database file's permissions, so they follow.
    An existing file is left as it is.
    """
    db_path = url.split("///", 1)[-1]
    if not db_path or db_path == ":memory:" or db_path.startswith("file:"):
        return
    path = Path(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


def get_engine(url: str | None = None) -> Engine:
    """The engine for `url` (default: the configured DATABASE_URL), one per URL per process.

    The default is resolved before the cache, so a changed DATABASE_URL gets its own engine.
    """
    return _engine_for(url or get_settings().database_url)


def clear_engines() -> None:
    """Forget every engine (tests that drop or replace databases)."""
    _engine_for.cache_clear()


@lru_cache(maxsize=8)
def _engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        create_private_sqlite_file(url)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def make_session_factory(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = make_session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def redact_url(url: str) -> str:
    """A database URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
