"""Who may reach what: sign-in, roles, tokens, CSRF, rate limits, cookies."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from mammosearch.access.users import create_api_token
from mammosearch.db.models import ApiToken, AuditEvent
from tests.factories import TEST_PASSWORD, make_user
from tests.unit.web_support import app_config, login
from web import create_app

OPEN_ENDPOINTS = {"static", "auth.login", "health.healthz", "health.readyz", "metrics.scrape"}
ADMIN_ONLY_PREFIXES = ("admin.", "evaluation.", "api.status", "api.evaluation")


def _routes(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) for every registered route, with placeholder arguments."""
    routes = []
    for rule in app.url_map.iter_rules():
        url = re.sub(r"<(?:int:)?[^>]+>", "1", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((rule.endpoint, method, url))
    return routes


def test_every_route_sends_anonymous_callers_to_sign_in(app: Flask, client: FlaskClient) -> None:
    """Pages redirect to /login, the API answers 401 JSON; only login/health/metrics/static open."""
    checked = 0
    for endpoint, method, url in _routes(app):
        if endpoint in OPEN_ENDPOINTS:
            continue
        response = client.open(url, method=method)
        if url.startswith("/api/"):
            assert response.status_code == 401, (method, url)
            assert "error" in response.get_json()
        else:
            assert response.status_code == 302, (method, url)
            assert response.headers["Location"].startswith("/login"), (method, url)
        checked += 1
    assert checked >= 20


def test_radiologists_are_refused_every_admin_route(
    app: Flask, radiologist_client: FlaskClient
) -> None:
    """Users, ingestion, evaluations, audit and their API need the admin role: 403."""
    admin_routes = [r for r in _routes(app) if r[0].startswith(ADMIN_ONLY_PREFIXES)]
    assert len(admin_routes) >= 8
    for _endpoint, method, url in admin_routes:
        response = radiologist_client.open(url, method=method)
        assert response.status_code == 403, (method, url)


def test_open_routes_answer_without_sign_in(client: FlaskClient) -> None:
    """Login page, health checks, metrics and static files need no user."""
    for url in ("/login", "/healthz", "/readyz", "/metrics", "/static/style.css"):
        assert client.get(url).status_code == 200, url


def test_sign_in_then_out(client: FlaskClient, radiologist, db) -> None:  # type: ignore[no-untyped-def]
    """A good password opens the search page; signing out closes it again; both audited."""
    response = login(client, "rad")
    assert response.status_code == 302
    assert client.get("/search").status_code == 200
    assert client.post("/logout").status_code == 302
    assert client.get("/search").status_code == 302
    actions = db.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions == ["login", "logout"]


def test_wrong_password_is_refused_and_audited(client: FlaskClient, radiologist, db) -> None:  # type: ignore[no-untyped-def]
    """401 with a message on the page, and a login_failed event naming the username."""
    response = login(client, "rad", "not the password")
    assert response.status_code == 401
    assert b"Wrong username or password" in response.data
    event = db.scalar(select(AuditEvent))
    assert event.action == "login_failed"
    assert event.detail == {"username": "rad", "reason": "wrong_password"}


def test_sign_in_redirects_only_to_local_next(client: FlaskClient, radiologist) -> None:  # type: ignore[no-untyped-def]
    """`next` may name a path on this site, never another host."""
    response = client.post(
        "/login", data={"username": "rad", "password": TEST_PASSWORD, "next": "//evil.example/x"}
    )
    assert response.headers["Location"] == "/search"
    client.post("/logout")
    response = client.post(
        "/login", data={"username": "rad", "password": TEST_PASSWORD, "next": "/cases/3"}
    )
    assert response.headers["Location"] == "/cases/3"


def test_sign_in_is_rate_limited(web_settings, radiologist) -> None:  # type: ignore[no-untyped-def]
    """The 4th attempt within the limit's window answers 429."""
    app = create_app(app_config(web_settings, LOGIN_RATE_LIMIT="3 per minute"))
    limited = app.test_client()
    codes = [login(limited, "rad", "wrong password").status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]


def test_session_cookie_is_httponly_and_samesite_lax(client: FlaskClient, radiologist) -> None:  # type: ignore[no-untyped-def]
    """The session cookie cannot be read by scripts nor sent by other sites' forms."""
    cookie = login(client, "rad").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_forms_need_a_csrf_token(web_settings, radiologist) -> None:  # type: ignore[no-untyped-def]
    """With CSRF on, a POST without the page's token is refused; with it, it works."""
    app = create_app(app_config(web_settings, WTF_CSRF_ENABLED=True))
    browser = app.test_client()
    refused = login(browser, "rad")
    assert refused.status_code == 400 and b"CSRF" in refused.data
    page = browser.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    accepted = browser.post(
        "/login", data={"username": "rad", "password": TEST_PASSWORD, "csrf_token": token}
    )
    assert accepted.status_code == 302


def test_api_accepts_a_bearer_token_without_csrf(web_settings, db) -> None:  # type: ignore[no-untyped-def]
    """API clients send `Authorization: Bearer`; the token's sha256, not the token, is stored."""
    app = create_app(app_config(web_settings, WTF_CSRF_ENABLED=True))
    user = make_user(db, "apiuser", "admin")
    token = create_api_token(db, user)
    db.commit()
    api = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/status", headers=headers).status_code == 200
    assert api.post("/api/v1/search", headers=headers, json={}).status_code == 400  # not CSRF
    stored = db.scalar(select(ApiToken))
    assert stored.token_sha256 != token and token not in stored.token_sha256
    bad = api.get("/api/v1/status", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.headers["WWW-Authenticate"] == "Bearer"


def test_api_post_from_a_browser_session_needs_csrf(web_settings, radiologist) -> None:  # type: ignore[no-untyped-def]
    """A signed-in browser cannot be tricked into an API POST: no token, no search."""
    app = create_app(app_config(web_settings, WTF_CSRF_ENABLED=True))
    browser = app.test_client()
    page = browser.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    browser.post("/login", data={"username": "rad", "password": TEST_PASSWORD, "csrf_token": token})
    response = browser.post("/api/v1/search", json={"image_id": 1})
    assert response.status_code == 400
    assert "CSRF" in response.get_json()["error"]


@pytest.mark.parametrize("role", ["radiologist", "admin"])
def test_both_roles_may_search(app: Flask, db, role: str) -> None:  # type: ignore[no-untyped-def]
    """The search page is for radiologists, and admins may check what they see."""
    make_user(db, "someone", role)
    browser = app.test_client()
    login(browser, "someone")
    assert browser.get("/search").status_code == 200
