"""Pooled PostgreSQL connections: pinged after sitting idle, not on every checkout.

A connection the server dropped while it sat in the pool (a database restart, a firewall's
idle timeout) is replaced before a request uses it; a connection used a moment ago is
handed out without the extra round trip a ping costs every web request.
"""

from __future__ import annotations

import time

import psycopg
from sqlalchemy import text

from mammosearch.db import session as db_session


def _backend_pid(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_dropped_while_idle_is_replaced_before_use(pg_url: str) -> None:
    db_session.clear_engines()
    engine = db_session.get_engine(pg_url)
    killed = _backend_pid(engine)
    admin_url = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (killed,))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the server ends the backend asynchronously
        with psycopg.connect(admin_url, autocommit=True) as admin:
            if admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (killed,)
            ).fetchone() == (0,):
                break
        time.sleep(0.05)
    time.sleep(db_session.PING_AFTER_IDLE_S + 0.1)  # the production default: one second

    # the pooled connection is dead; the checkout's ping finds it and a new one answers
    assert _backend_pid(engine) != killed
    engine.dispose()
    db_session.clear_engines()


def test_a_connection_used_a_moment_ago_is_not_pinged(pg_url: str) -> None:
    db_session.clear_engines()
    engine = db_session.get_engine(pg_url)
    _backend_pid(engine)
    pings: list[int] = []
    original = engine.dialect.do_ping
    engine.dialect.do_ping = lambda connection: pings.append(1) or original(connection)  # type: ignore[method-assign]
    try:
        for _ in range(5):
            _backend_pid(engine)
        assert pings == []
        time.sleep(db_session.PING_AFTER_IDLE_S + 0.1)
        _backend_pid(engine)
        assert pings == [1]
    finally:
        del engine.dialect.do_ping
        engine.dispose()
        db_session.clear_engines()
