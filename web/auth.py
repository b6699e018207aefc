"""Sign-in: Flask-Login sessions for pages, bearer tokens for the API, and the access gate."""

from __future__ import annotations

import time

from flask import (
    Flask,
    Request,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    request,
    session,
    url_for,
)
from flask_login import AnonymousUserMixin, LoginManager, UserMixin, current_user, login_user
from werkzeug.wrappers import Response

from mammosearch.access.users import (
    TokenHolder,
    TokenRefused,
    accept_api_token,
    session_is_current,
)
from mammosearch.db.models import User
from web.access import allowed_roles, is_public
from web.configuration import settings
from web.db import get_session

login_manager = LoginManager()

SESSION_VERSION_KEY = "_session_version"
"""The user's session_version when this session signed in; a newer one in the row ends it."""
LAST_SEEN_KEY = "_last_seen"
"""Epoch seconds of this session's last request, for the idle limit."""
PASSWORD_CHANGE_ENDPOINTS = {"auth.change_password", "auth.logout"}
"""All a user who must change the password may reach (API tokens are not held back)."""


class SignedInUser(UserMixin):  # type: ignore[misc]  # flask_login is untyped
    """The signed-in user as Flask-Login sees it; `.row` is the users table row, read on
    first use (an API request by token needs only the id, name and role it was given)."""

    def __init__(self, row: User | None = None, holder: TokenHolder | None = None) -> None:
        self._row = row
        if row is not None:
            self.id, self.username, self.role = row.id, row.username, row.role
        elif holder is not None:
            self.id, self.username, self.role = holder.user_id, holder.username, holder.role
        else:
            raise ValueError("a signed-in user needs a users row or an accepted token")

    @property
    def row(self) -> User:
        if self._row is None:
            self._row = get_session().get(User, self.id)
            if self._row is None:
                raise LookupError(f"user {self.id}: no longer in the database")
        return self._row

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Anonymous(AnonymousUserMixin):  # type: ignore[misc]  # flask_login is untyped
    role = None
    username = None
    is_admin = False
    row = None


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.anonymous_user = Anonymous
    login_manager.session_protection = "basic"
    app.before_request(_gate)


def is_api_request() -> bool:
    return request.path.startswith("/api/")


def start_session(row: User) -> None:
    """Sign `row` in on this browser: a permanent (idle-limited) session at its version."""
    login_user(SignedInUser(row))
    session.permanent = True
    session[SESSION_VERSION_KEY] = row.session_version
    session[LAST_SEEN_KEY] = time.time()


def _end_session(reason: str) -> None:
    session.clear()
    g.session_ended = reason
    if not is_api_request():
        flash(reason, "error")


@login_manager.user_loader  # type: ignore[untyped-decorator]  # flask_login is untyped
def _load_session_user(user_id: str) -> SignedInUser | None:
    row = get_session().get(User, int(user_id))
    if row is None or not row.active:
        _end_session("Your account is disabled; ask an admin.")
        return None
    if not session_is_current(row, session.get(SESSION_VERSION_KEY)):
        _end_session(
            "Your session has ended (signed out, password changed or reset); please sign in again."
        )
        return None
    idle_minutes = settings().session_idle_minutes
    now = time.time()
    if now - float(session.get(LAST_SEEN_KEY) or 0) > idle_minutes * 60:
        _end_session(
            f"Signed out after {idle_minutes:g} minutes without activity; please sign in again."
        )
        return None
    session[LAST_SEEN_KEY] = now
    return SignedInUser(row)


@login_manager.request_loader  # type: ignore[untyped-decorator]  # flask_login is untyped
def _load_token_user(req: Request) -> SignedInUser | None:
    scheme, _, token = req.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    db_session = get_session()
    try:
        holder = accept_api_token(db_session, token.strip())
    except TokenRefused as exc:
        g.token_refused = str(exc)
        return None
    if holder.recorded_use:
        db_session.commit()  # last_used_at
    g.auth_via_token = True
    return SignedInUser(holder=holder)


def _unauthenticated() -> Response:
    if is_api_request():
        message = g.get("token_refused") or g.get("session_ended")
        response = jsonify(
            error=message or "authentication required: send Authorization: Bearer TOKEN"
        )
        response.status_code = 401
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _forbidden() -> Response:
    message = f"forbidden: role {current_user.role!r} may not use {request.path}"
    if is_api_request():
        response = jsonify(error=message)
    else:
        from flask import render_template

        response = current_app.make_response(
            render_template("error.html", code=403, message=message)
        )
    response.status_code = 403
    return response


def _password_change_first() -> Response:
    if is_api_request():
        response = jsonify(
            error="password change required: sign in on the web and change it "
            "(API tokens are not affected)"
        )
        response.status_code = 403
        return response
    return redirect(url_for("auth.change_password"))


def _gate() -> Response | None:
    """Every view needs a signed-in user with an allowed role, unless it is public."""
    endpoint = request.endpoint
    if endpoint is None:  # no such route: the 404/405 handler answers
        return None
    view = current_app.view_functions.get(endpoint)
    if is_public(endpoint, view):
        return None
    if not current_user.is_authenticated:
        return _unauthenticated()
    if (
        not g.get("auth_via_token")
        and current_user.row.must_change_password
        and endpoint not in PASSWORD_CHANGE_ENDPOINTS
    ):
        return _password_change_first()
    blueprint = current_app.blueprints.get(request.blueprint or "")
    if current_user.role not in allowed_roles(view, blueprint):
        return _forbidden()
    return None
