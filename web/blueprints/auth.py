"""Sign in (limited per address and per account), sign out, change one's password; audited."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, logout_user
from werkzeug.wrappers import Response

from mammosearch.access.audit import record_access
from mammosearch.access.users import UserError, change_own_password, end_sessions, sign_in
from web.access import RADIOLOGY, public, restrict_blueprint
from web.auth import start_session
from web.db import get_session
from web.limiter import limiter, login_rate_limit, too_many_sign_ins, too_many_sign_ins_page

bp = restrict_blueprint(Blueprint("auth", __name__), RADIOLOGY)

REFUSALS = {
    "unknown_user": "Wrong username or password.",
    "wrong_password": "Wrong username or password.",
    "disabled": "This account is disabled; ask an admin.",
}


MAX_NEXT_UNQUOTING = 3
"""Percent-decodings tried on `next` before giving up on it (`%252F` is two)."""


def same_site_path(target: str | None) -> str | None:
    """`target` when a browser would read it as a path on this site, else None.

    Checked as browsers read it, not as urlsplit does: they drop tabs and newlines, read a
    backslash as a slash and any run of leading slashes as a host (`////evil.example/x`),
    and a server behind us may percent-decode it once more (`/%2F%2Fevil.example`). So every
    decoded form must be a rooted path with no host, scheme, backslash or control character.
    """
    if not target:
        return None
    form = target
    for _ in range(MAX_NEXT_UNQUOTING + 1):
        if not _plain_path(form):
            return None
        decoded = unquote(form)
        if decoded == form:
            return target
        form = decoded
    return None  # still encoded after several decodings: nobody types that


def _plain_path(form: str) -> bool:
    if any(ord(char) < 0x20 or ord(char) == 0x7F or char == "\\" for char in form):
        return False
    if not form.startswith("/") or form.startswith("//"):
        return False
    parts = urlsplit(form)
    return not parts.scheme and not parts.netloc


def _safe_next(target: str | None) -> str:
    """Where to go after sign-in: `next` when it stays on this site, else the search page."""
    return same_site_path(target) or url_for("search.search_page")


@bp.route("/login", methods=["GET", "POST"])
@public
@limiter.limit(login_rate_limit, methods=["POST"], on_breach=too_many_sign_ins)
def login() -> Response | str | tuple[str, int]:
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(_safe_next(request.args.get("next")))
        return render_template("login.html", next=request.args.get("next", ""))
    session = get_session()
    username = request.form.get("username", "")
    attempt = sign_in(session, username, request.form.get("password", ""))
    if attempt.refused == "blocked":
        record_access(
            session,
            None,
            "login_rate_limited",
            detail={"username": username[:128], "limit": "account"},
            remote_addr=request.remote_addr,
        )
        session.commit()
        return too_many_sign_ins_page(attempt.retry_after_s)
    if attempt.user is None:
        record_access(
            session,
            None,
            "login_failed",
            detail={"username": username[:128], "reason": attempt.refused},
            remote_addr=request.remote_addr,
        )
        session.commit()
        flash(REFUSALS[attempt.refused or "wrong_password"], "error")
        return render_template("login.html", next=request.form.get("next", "")), 401
    record_access(session, attempt.user, "login", remote_addr=request.remote_addr)
    session.commit()
    start_session(attempt.user)
    if attempt.user.must_change_password:
        flash("Choose a new password before going on.", "info")
        return redirect(url_for("auth.change_password"))
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/logout")
def logout() -> Response:
    """Sign out here and everywhere: the user's session version moves on."""
    session = get_session()
    record_access(session, current_user.row, "logout", remote_addr=request.remote_addr)
    end_sessions(current_user.row)
    session.commit()
    logout_user()
    flash("Signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
def change_password() -> Response | str | tuple[str, int]:
    """A signed-in user's own password; required first after a bootstrap or an admin's reset."""
    row = current_user.row
    if request.method == "GET":
        return render_template("change_password.html", required=row.must_change_password)
    new_password = request.form.get("new_password", "")
    session = get_session()
    try:
        if new_password != request.form.get("confirm_password", ""):
            raise UserError(f"{row.username}: the two new passwords differ")
        change_own_password(row, request.form.get("current_password", ""), new_password)
    except UserError as exc:
        session.rollback()
        flash(str(exc), "error")
        page = render_template("change_password.html", required=row.must_change_password)
        return page, 400
    record_access(session, row, "change_password", remote_addr=request.remote_addr)
    session.commit()
    start_session(row)  # every other session of this user has ended; this one goes on
    flash("Password changed; your other sessions were signed out.", "info")
    return redirect(url_for("search.search_page"))
