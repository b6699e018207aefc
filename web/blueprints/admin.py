"""Admin pages: ingestion status, users, and the access audit."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from mammosearch import audit
from mammosearch.status import collect_status
from mammosearch.users import ROLES, UserError, create_user, list_users
from web.access import ADMIN, restrict_blueprint
from web.configuration import work_queue
from web.db import get_session
from web.public_names import public_json

bp = restrict_blueprint(Blueprint("admin", __name__, url_prefix="/admin"), ADMIN)

AUDIT_PAGE_SIZE = 100


@bp.get("/ingestion")
def ingestion() -> str:
    status = public_json(collect_status(get_session(), work_queue()))  # no server paths
    return render_template("admin/ingestion.html", status=status)


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


@bp.get("/audit")
def audit_log() -> str:
    session = get_session()
    page = max(1, request.args.get("page", 1, type=int) or 1)
    username = request.args.get("username") or None
    action = request.args.get("action") or None
    patient_id = request.args.get("patient_id", type=int)
    events = audit.list_events(
        session, limit=AUDIT_PAGE_SIZE, offset=(page - 1) * AUDIT_PAGE_SIZE,
        username=username, action=action, patient_id=patient_id,
    )
    total = audit.count_events(session, username=username, action=action, patient_id=patient_id)
    return render_template(
        "admin/audit.html", events=events, total=total, page=page, page_size=AUDIT_PAGE_SIZE,
        actions=audit.ACTIONS, filters={"username": username or "", "action": action or "",
                                        "patient_id": patient_id or ""},
    )
