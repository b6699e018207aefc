"""Admin pages: ingestion status, users, and the access audit."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from mammosearch import audit
from mammosearch.users import ROLES, UserError, create_user, list_users
from web.access import ADMIN, restrict_blueprint
from web.db import get_session

bp = restrict_blueprint(Blueprint("admin", __name__, url_prefix="/admin"), ADMIN)

# The ingestion and audit pages are routes of this blueprint too, each in its own module:
# admin_ingestion.py and admin_audit.py (web/blueprints/__init__.py imports them).


@bp.get("/users")
def users() -> str:
    return render_template("admin/users.html", users=list_users(get_session()), roles=ROLES)


@bp.post("/users")
def create_user_submit() -> Response | tuple[str, int]:
    session = get_session()
    username = request.form.get("username", "")
    role = request.form.get("role", "")
    try:
        user = create_user(session, username, request.form.get("password", ""), role)
    except UserError as exc:
        session.rollback()
        flash(str(exc), "error")
        page = render_template("admin/users.html", users=list_users(session), roles=ROLES)
        return page, 400
    audit.record_access(
        session, current_user.row, "create_user", detail={"username": user.username, "role": role},
        remote_addr=request.remote_addr,
    )
    session.commit()
    flash(f"Created {role} {user.username}.", "info")
    return redirect(url_for("admin.users"))
