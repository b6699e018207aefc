"""CSRF tokens on every form, security headers on every response, and a session cookie
that is Secure whenever the request came over HTTPS."""

from __future__ import annotations

from flask import Flask, g, has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect
from werkzeug.wrappers import Response

csrf = CSRFProtect()

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; "
    "form-action 'self'"
)


class SchemeSecureSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the Secure flag following the request's scheme.

    Behind a TLS proxy the scheme is HTTPS only when the proxy is trusted to say so:
    MAMMOSEARCH_FLASK_PROXY_FIX_HOPS (werkzeug's ProxyFix) or gunicorn's
    forwarded_allow_ips. SESSION_COOKIE_SECURE=True still forces the flag on plain HTTP.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        forced = bool(app.config["SESSION_COOKIE_SECURE"])
        return forced or (has_request_context() and request.is_secure)


def init_app(app: Flask) -> None:
    csrf.init_app(app)
    app.session_interface = SchemeSecureSessionInterface()
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
