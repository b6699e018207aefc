"""Sign in and out (rate-limited, audited)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user
from werkzeug.wrappers import Response

from mammosearch.audit import record_access
from mammosearch.users import authenticate
from web.access import RADIOLOGY, public, restrict_blueprint
from web.auth import SignedInUser
from web.db import get_session
from web.limiter import limiter, login_rate_limit

bp = restrict_blueprint(Blueprint("auth", __name__), RADIOLOGY)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: `next` must not send people to another host."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/") and "\\" not in target:
            return target
    return url_for("search.search_page")


@bp.route("/login", methods=["GET", "POST"])
@public
@limiter.limit(login_rate_limit, methods=["POST"])
def login() -> Response | str | tuple[str, int]:
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(_safe_next(request.args.get("next")))
        return render_template("login.html", next=request.args.get("next", ""))
    session = get_session()
    username = request.form.get("username", "")
    user = authenticate(session, username, request.form.get("password", ""))
    if user is None:
        record_access(
            session, None, "login_failed", detail={"username": username[:128]},
            remote_addr=request.remote_addr,
        )
        session.commit()
        flash("Wrong username or password.", "error")
        return render_template("login.html", next=request.form.get("next", "")), 401
    record_access(session, user, "login", remote_addr=request.remote_addr)
    session.commit()
    login_user(SignedInUser(user))
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/logout")
def logout() -> Response:
    session = get_session()
    record_access(session, current_user.row, "logout", remote_addr=request.remote_addr)
    session.commit()
    logout_user()
    flash("Signed out.", "info")
    return redirect(url_for("auth.login"))
