"""A request-scoped SQLAlchemy session; the app context's teardown closes it."""

from __future__ import annotations

from flask import Flask, current_app, g, has_request_context, request
from sqlalchemy.orm import Session

from mammosearch.db.session import make_session_factory

AUTOCOMMIT_ENDPOINTS = frozenset({"api.search"})
"""Requests whose every write stands alone (the token's last use, the search's audit event,
each atomic by itself) and whose reads need no common snapshot: on PostgreSQL their
statements run outside a transaction, which spares the BEGIN and COMMIT round trips (x0.9
the server CPU of a search by id, bench/bench_http_search.py)."""


def init_app(app: Flask) -> None:
    url = app.config["DATABASE_URL"]
    app.extensions["mammosearch_sessions"] = make_session_factory(url)
    app.extensions["mammosearch_autocommit_sessions"] = make_session_factory(url, autocommit=True)
    app.teardown_appcontext(_close_session)


def get_session() -> Session:
    """The session of this request (opened on first use)."""
    if "db_session" not in g:
        factories = current_app.extensions
        standalone = has_request_context() and request.endpoint in AUTOCOMMIT_ENDPOINTS
        factory = factories[
            "mammosearch_autocommit_sessions" if standalone else "mammosearch_sessions"
        ]
        g.db_session = factory()
    session: Session = g.db_session
    return session


def commit_request(session: Session) -> None:
    """Commit this request's work. On an autocommit session (AUTOCOMMIT_ENDPOINTS, on
    PostgreSQL) every statement already has: SQLAlchemy's commit would only walk its own
    bookkeeping, 2.5% of the CPU of a search by id."""
    transactional = current_app.extensions["mammosearch_sessions"].kw["bind"]
    if session.get_bind() is transactional:  # SQLite has no autocommit engine: the same one
        session.commit()


def _close_session(error: BaseException | None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        if error is not None:
            session.rollback()
        session.close()
