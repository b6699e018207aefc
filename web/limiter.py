"""Rate limits (sign-in); memory storage by default, Redis when REDIS_URL is set."""

from __future__ import annotations

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

limiter = Limiter(key_func=get_remote_address)


def login_rate_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


def init_app(app: Flask) -> None:
    limiter.init_app(app)
