"""Engines and sessions; one engine per database URL per process."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
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


def get_engine(url: str | None = None, autocommit: bool = False) -> Engine:
    """The engine for `url` (default: the configured DATABASE_URL), one per URL per process.

    The default is resolved before the cache, so a changed DATABASE_URL gets its own engine.
    `autocommit` (PostgreSQL only; elsewhere the one engine): an engine, with its own pool,
    whose every statement commits on its own (no BEGIN and COMMIT round trips). Its own pool,
    not `execution_options(isolation_level=...)` on the shared one: switching a pooled
    connection's mode on every checkout and back on return cost what it saved (measured).
    """
    url = url or get_settings().database_url
    return _engine_for(url, autocommit and not url.startswith("sqlite"))


def clear_engines() -> None:
    """Forget every engine (tests that drop or replace databases)."""
    _engine_for.cache_clear()


@lru_cache(maxsize=8)
def _engine_for(url: str, autocommit: bool = False) -> Engine:
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
    engine = create_engine(url, **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}))
    _ping_after_idle(engine)
    return engine


PING_AFTER_IDLE_S = 1.0
"""A pooled connection left unused this long is tested (SELECT 1) before it is handed out."""


def _ping_after_idle(engine: Engine) -> None:
    """Test a pooled connection before use only when it has sat idle for PING_AFTER_IDLE_S.

    `pool_pre_ping` pings on every checkout: one more round trip per web request, about a
    tenth of a search by id's server time, for connections used a millisecond earlier. Dead
    connections are found where they appear: ones left idle while the database restarted or
    a firewall dropped them. A dead one is replaced before the request sees it (the pool
    retries on DisconnectionError); one that dies mid-use fails that request, and SQLAlchemy
    then invalidates the rest of the pool, as with pre-ping.
    """

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_connection, record) -> None:  # type: ignore[no-untyped-def]
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _idle(_dbapi_connection, record) -> None:  # type: ignore[no-untyped-def]
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        if time.monotonic() - record.info.get("idle_since", 0.0) < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError(f"idle connection failed its ping: {error}") from error


def make_session_factory(url: str | None = None, autocommit: bool = False) -> sessionmaker[Session]:
    """Sessions on the database at `url`; with `autocommit`, on get_engine's autocommit
    engine (PostgreSQL), for work whose every write stands alone."""
    return sessionmaker(bind=get_engine(url, autocommit), expire_on_commit=False)


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


DAMAGE_MARKERS = ("file is not a database", "database disk image is malformed")
"""SQLite's words for a database file that is not (or no longer) one: garbage, truncated."""


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for another database or an in-memory one)."""
    if not url.startswith("sqlite"):
        return None
    db_path = url.split("///", 1)[-1]
    if not db_path or db_path == ":memory:" or db_path.startswith("file:"):
        return None
    return Path(db_path)


def damaged_database_message(url: str, error: BaseException, full_path: bool = True) -> str | None:
    """What to tell the operator when the embedded default's SQLite file is damaged (None when
    `error` is not that): the file, SQLite's words, and the way back. `full_path=False` for
    answers that leave the machine (the file's name only)."""
    path = sqlite_file(url)
    reason = str(getattr(error, "orig", error)).splitlines()[0] if str(error) else ""
    if path is None or not any(marker in reason for marker in DAMAGE_MARKERS):
        return None
    named = str(path) if full_path else f"{path.name} (in MAMMOSEARCH_DATA_DIR)"
    return (
        f"the database file {named} is damaged ({reason}): stop every mammosearch process, then"
        " restore it from a backup, or move it aside and run `mammosearch db upgrade` to start"
        " an empty archive (docs/operations.md, fault table)"
    )
