"""Sign-in: Flask-Login sessions for pages, bearer tokens for the API, and the access gate."""

from __future__ import annotations

from flask import Flask, current_app, g, jsonify, redirect, request, url_for
from flask_login import AnonymousUserMixin, LoginManager, UserMixin, current_user
from werkzeug.wrappers import Response

from mammosearch.db.models import User
from mammosearch.users import verify_api_token
from web.access import allowed_roles, is_public
from web.db import get_session

login_manager = LoginManager()


class SignedInUser(UserMixin):
    """The signed-in user as Flask-Login sees it; `.row` is the users table row."""

    def __init__(self, row: User) -> None:
        self.row = row
        self.id = row.id
        self.username = row.username
        self.role = row.role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Anonymous(AnonymousUserMixin):
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


@login_manager.user_loader
def _load_session_user(user_id: str) -> SignedInUser | None:
    row = get_session().get(User, int(user_id))
    return SignedInUser(row) if row is not None and row.active else None


@login_manager.request_loader
def _load_token_user(req) -> SignedInUser | None:  # type: ignore[no-untyped-def]
    scheme, _, token = req.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    session = get_session()
    row = verify_api_token(session, token.strip())
    if row is None:
        return None
    if session.dirty:
        session.commit()  # last_used_at
    g.auth_via_token = True
    return SignedInUser(row)


def _unauthenticated() -> Response:
    if is_api_request():
        response = jsonify(error="authentication required: send Authorization: Bearer TOKEN")
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
    blueprint = current_app.blueprints.get(request.blueprint or "")
    if current_user.role not in allowed_roles(view, blueprint):
        return _forbidden()
    return None
