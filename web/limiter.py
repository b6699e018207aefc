"""Rate limits (sign-in per address); Redis when REDIS_URL is set, else (or while Redis is down)
this process's memory. The per-account backoff lives in the core
(mammosearch.access.users.sign_in)."""

from __future__ import annotations

import math
import time

from flask import Flask, Response, current_app, render_template, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.util import get_remote_address

from mammosearch.access.audit import record_access
from web.db import get_session

limiter = Limiter(key_func=get_remote_address)


def login_rate_limit() -> str:
    limit: str = current_app.config["LOGIN_RATE_LIMIT"]
    return limit


def too_many_sign_ins_page(retry_after_s: int) -> Response:
    """The sign-in page saying, in plain words, how long to wait (429, Retry-After)."""
    minutes = max(1, math.ceil(retry_after_s / 60))
    unit = "minute" if minutes == 1 else "minutes"
    message = f"Too many sign-in attempts; try again in {minutes} {unit}."
    response = current_app.make_response(
        render_template("login.html", next="", rate_limited=message)
    )
    response.status_code = 429
    response.headers["Retry-After"] = str(max(1, retry_after_s))
    return response


def too_many_sign_ins(limit: RequestLimit) -> Response:
    """The address went over the sign-in limit: audit the attempt and answer the page."""
    session = get_session()
    record_access(
        session,
        None,
        "login_rate_limited",
        detail={"username": request.form.get("username", "")[:128], "limit": "address"},
        remote_addr=request.remote_addr,
    )
    session.commit()
    return too_many_sign_ins_page(int(limit.reset_at - time.time()))


def init_app(app: Flask) -> None:
    limiter.init_app(app)
    # One Limiter for every app of the process (the login view's decorator is bound to it):
    # the storage just made is this app's, so a previous app's "Redis is down" no longer holds.
    limiter._storage_dead = False
