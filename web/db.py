"""A request-scoped SQLAlchemy session; the app context's teardown closes it."""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from mammosearch.db.session import make_session_factory


def init_app(app: Flask) -> None:
    app.extensions["mammosearch_sessions"] = make_session_factory(app.config["DATABASE_URL"])
    app.teardown_appcontext(_close_session)


def get_session() -> Session:
    """The session of this request (opened on first use)."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["mammosearch_sessions"]()
    return g.db_session


def _close_session(error: BaseException | None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        if error is not None:
            session.rollback()
        session.close()
