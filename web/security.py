"""CSRF tokens on every form and security headers on every response."""

from __future__ import annotations

from flask import Flask, g, request
from flask_wtf.csrf import CSRFProtect
from werkzeug.wrappers import Response

csrf = CSRFProtect()

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; "
    "form-action 'self'"
)


def init_app(app: Flask) -> None:
    csrf.init_app(app)
    app.after_request(_security_headers)


def protect_unless_token() -> None:
    """For API views exempt from CSRF: still check it when a browser session is the caller."""
    if request.method not in {"GET", "HEAD", "OPTIONS"} and not g.get("auth_via_token"):
        csrf.protect()


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "static":
        response.headers.setdefault("Cache-Control", "no-store")  # patient data stays off disks
    return response
