"""Admin pages: ingestion status, users (accounts, passwords, API tokens), and the access audit."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from mammosearch.access import audit
from mammosearch.access.users import (
    MIN_PASSWORD_LENGTH,
    ROLES,
    UserError,
    create_user,
    issue_api_token,
    list_api_tokens,
    list_users,
    reset_password,
    revoke_api_token,
    set_active,
    token_state,
)
from mammosearch.db.models import User
from web.access import ADMIN, restrict_blueprint
from web.db import get_session

bp = restrict_blueprint(Blueprint("admin", __name__, url_prefix="/admin"), ADMIN)

# The ingestion and audit pages are routes of this blueprint too, each in its own module:
# admin_ingestion.py and admin_audit.py (web/blueprints/__init__.py imports them).


def _users_page(status: int = 200, **shown_once: Any) -> tuple[str, int]:
    """The Users page; `shown_once` carries a new token or temporary password to show once."""
    session = get_session()
    users = list_users(session)
    tokens: dict[int, list[Any]] = {user.id: [] for user in users}
    for api_token in list_api_tokens(session):
        tokens.setdefault(api_token.user_id, []).append(api_token)
    page = render_template(
        "admin/users.html",
        users=users,
        tokens=tokens,
        roles=ROLES,
        token_state=token_state,
        min_password_length=MIN_PASSWORD_LENGTH,
        **shown_once,
    )
    return page, status


def _audit(action: str, **detail: Any) -> None:
    audit.record_access(
        get_session(), current_user.row, action, detail=detail, remote_addr=request.remote_addr
    )


def _user_or_404(user_id: int) -> User:
    from flask import abort

    user = get_session().get(User, user_id)
    if user is None:
        abort(404, description=f"user {user_id}: no such user")
    return user


@bp.get("/users")
def users() -> tuple[str, int]:
    return _users_page()


@bp.post("/users")
def create_user_submit() -> Response | tuple[str, int]:
    session = get_session()
    username = request.form.get("username", "")
    role = request.form.get("role", "")
    try:
        user = create_user(
            session,
            username,
            request.form.get("password", ""),
            role,
            must_change_password=bool(request.form.get("must_change_password")),
        )
    except UserError as exc:
        session.rollback()
        flash(str(exc), "error")
        return _users_page(400)
    _audit("create_user", username=user.username, role=role)
    session.commit()
    flash(f"Created {role} {user.username}.", "info")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>/disable")
def disable_user(user_id: int) -> Response | tuple[str, int]:
    """Disable: the user's sessions end at once and its tokens are refused while disabled."""
    return _set_active(user_id, False)


@bp.post("/users/<int:user_id>/enable")
def enable_user(user_id: int) -> Response | tuple[str, int]:
    return _set_active(user_id, True)


def _set_active(user_id: int, active: bool) -> Response | tuple[str, int]:
    session = get_session()
    user = _user_or_404(user_id)
    if not active and user.id == current_user.id:
        flash(f"{user.username}: you cannot disable your own account.", "error")
        return _users_page(400)
    try:
        changed = set_active(session, user, active)
    except UserError as exc:
        session.rollback()
        flash(str(exc), "error")
        return _users_page(400)
    if changed:
        _audit("enable_user" if active else "disable_user", username=user.username)
        session.commit()
    flash(f"{user.username} {'enabled' if active else 'disabled'}.", "info")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>/reset-password")
def reset_password_submit(user_id: int) -> tuple[str, int]:
    """A temporary password, shown once; the user must change it at the next sign-in."""
    session = get_session()
    user = _user_or_404(user_id)
    password = reset_password(user)
    _audit("reset_password", username=user.username)
    session.commit()
    return _users_page(new_password={"username": user.username, "password": password})


@bp.post("/tokens")
def create_token_submit() -> tuple[str, int]:
    """A new API token for the chosen user, shown once (only its hash is kept)."""
    session = get_session()
    user = _user_or_404(request.form.get("user_id", 0, type=int) or 0)
    expires_days = request.form.get("expires_days", "").strip()
    try:
        days = float(expires_days) if expires_days else None
        api_token, token = issue_api_token(session, user, request.form.get("name"), days)
    except ValueError as exc:  # UserError included
        session.rollback()
        message = (
            str(exc)
            if isinstance(exc, UserError)
            else (f"{user.username}: expiry {expires_days!r} is not a number of days")
        )
        flash(message, "error")
        return _users_page(400)
    _audit("create_token", username=user.username, token_id=api_token.id, name=api_token.name)
    session.commit()
    return _users_page(new_token={"username": user.username, "token": token, "id": api_token.id})


@bp.post("/tokens/<int:token_id>/revoke")
def revoke_token_submit(token_id: int) -> Response | tuple[str, int]:
    session = get_session()
    try:
        api_token = revoke_api_token(session, token_id)
    except UserError as exc:
        flash(str(exc), "error")
        return _users_page(404)
    _audit("revoke_token", username=api_token.user.username, token_id=api_token.id)
    session.commit()
    flash(f"Token {api_token.id} of {api_token.user.username} revoked.", "info")
    return redirect(url_for("admin.users"))
