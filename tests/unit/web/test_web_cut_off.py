"""Users can be cut off: disabled users, ended sessions, expiring tokens, forced password changes,
sign-in limits per address and per account, and the admin Users page that does it."""

from __future__ import annotations

import re
import time
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.access.users import FREE_SIGN_IN_FAILURES, create_api_token
from mammosearch.db.models import ApiToken, AuditEvent, User, utcnow
from tests.conftest import REDIS_TEST_URL
from tests.factories import TEST_PASSWORD
from tests.unit.web_support import app_config, login
from web import create_app
from web.auth import LAST_SEEN_KEY

NEW_PASSWORD = "a brand new passphrase 7"
DOWN_REDIS = "redis://127.0.0.1:1/0"  # nothing listens there
API_URL = "/api/v1/openapi.json"  # any radiologist API view


def _signed_in(app: Flask, username: str, password: str = TEST_PASSWORD) -> FlaskClient:
    browser = app.test_client()
    assert login(browser, username, password).status_code == 302
    return browser


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _api(app: Flask, token: str) -> int:
    return app.test_client().get(API_URL, headers=_bearer(token)).status_code


def _actions(db: Session) -> list[str]:
    db.expire_all()
    return list(db.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_an_admin_disables_a_user_whose_session_and_token_are_refused_at_once(
    app: Flask, admin_client: FlaskClient, radiologist: User, db: Session
) -> None:
    """Disabled on the Users page: the session goes to sign-in, the token gets 401 saying why."""
    browser = _signed_in(app, "rad")
    token = create_api_token(db, radiologist, name="script")
    db.commit()
    assert browser.get("/search").status_code == 200
    assert _api(app, token) == 200

    response = admin_client.post(f"/admin/users/{radiologist.id}/disable")
    assert response.status_code == 302

    refused = browser.get("/search")
    assert refused.status_code == 302 and refused.headers["Location"].startswith("/login")
    assert b"account is disabled" in browser.get("/login").data
    api = app.test_client().get(API_URL, headers=_bearer(token))
    assert api.status_code == 401
    assert "user rad is disabled" in api.get_json()["error"]
    assert login(app.test_client(), "rad").status_code == 401
    assert "disable_user" in _actions(db)

    assert admin_client.post(f"/admin/users/{radiologist.id}/enable").status_code == 302
    assert _signed_in(app, "rad").get("/search").status_code == 200


def test_an_admin_cannot_disable_their_own_account(admin_client: FlaskClient, admin: User) -> None:
    """The last way back in stays open: 400 and a message, the account still active."""
    response = admin_client.post(f"/admin/users/{admin.id}/disable")
    assert response.status_code == 400 and b"cannot disable your own account" in response.data
    assert admin_client.get("/admin/users").status_code == 200


def test_signing_out_ends_every_session_and_a_replayed_cookie_is_refused(
    app: Flask, radiologist: User
) -> None:
    """Logout moves the user's session version on: the other browser and a copied cookie fail."""
    here, there = _signed_in(app, "rad"), _signed_in(app, "rad")
    cookie = here.get_cookie("session").value
    assert here.post("/logout").status_code == 302

    assert there.get("/search").status_code == 302
    replay = app.test_client()
    replay.set_cookie("session", cookie)
    refused = replay.get("/search")
    assert refused.status_code == 302 and refused.headers["Location"].startswith("/login")
    api_replay = app.test_client()
    api_replay.set_cookie("session", cookie)
    answer = api_replay.get(API_URL)
    assert answer.status_code == 401 and "session has ended" in answer.get_json()["error"]


def test_changing_the_password_ends_other_sessions_and_keeps_tokens(
    app: Flask, radiologist: User, db: Session
) -> None:
    """This browser goes on, the other is signed out; the API token still works."""
    here, there = _signed_in(app, "rad"), _signed_in(app, "rad")
    token = create_api_token(db, radiologist)
    db.commit()
    form = {
        "current_password": TEST_PASSWORD,
        "new_password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD,
    }
    assert here.post("/account/password", data=form).status_code == 302
    assert here.get("/search").status_code == 200
    assert there.get("/search").status_code == 302
    assert _api(app, token) == 200
    assert login(app.test_client(), "rad", TEST_PASSWORD).status_code == 401
    assert login(app.test_client(), "rad", NEW_PASSWORD).status_code == 302
    assert "change_password" in _actions(db)


def test_a_password_change_says_what_is_wrong(app: Flask, radiologist: User) -> None:
    """Wrong current password, a mismatch, too short, too common: 400 naming the problem."""
    browser = _signed_in(app, "rad")
    cases = [
        ("not it", NEW_PASSWORD, NEW_PASSWORD, "current password is wrong"),
        (TEST_PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "x", "two new passwords differ"),
        (TEST_PASSWORD, "short-one", "short-one", "password too short (9 characters, at least 12)"),
        (TEST_PASSWORD, "password1234", "password1234", "too easy to guess: this is a very common"),
    ]
    for current, new, confirm, message in cases:
        response = browser.post(
            "/account/password",
            data={"current_password": current, "new_password": new, "confirm_password": confirm},
        )
        assert response.status_code == 400, message
        assert message in response.get_data(as_text=True), message
    assert login(app.test_client(), "rad").status_code == 302  # unchanged


def test_an_idle_session_ends_after_the_configured_minutes(web_settings, radiologist) -> None:  # type: ignore[no-untyped-def]
    """MAMMOSEARCH_SESSION_IDLE_MINUTES: past it the next request signs in again, and says so."""
    app = create_app(app_config(web_settings.with_overrides(session_idle_minutes=5)))
    assert app.permanent_session_lifetime == timedelta(minutes=5)  # no longer 31 days
    browser = _signed_in(app, "rad")
    with browser.session_transaction() as cookie_session:
        cookie_session[LAST_SEEN_KEY] = time.time() - 4 * 60
    assert browser.get("/search").status_code == 200  # 4 minutes idle: still open
    with browser.session_transaction() as cookie_session:
        cookie_session[LAST_SEEN_KEY] = time.time() - 6 * 60
    assert browser.get("/search").status_code == 302
    assert b"Signed out after 5 minutes without activity" in browser.get("/login").data


def test_a_reset_password_must_be_changed_before_any_page(
    app: Flask, admin_client: FlaskClient, radiologist: User, db: Session
) -> None:
    """Admin reset: a temporary password shown once, every page leads to the change, tokens work."""
    token = create_api_token(db, radiologist)
    db.commit()
    page = admin_client.post(f"/admin/users/{radiologist.id}/reset-password")
    assert page.status_code == 200
    temporary = re.search(r'id="temporary-password">([^<]+)<', page.get_data(as_text=True))[1]
    assert login(app.test_client(), "rad").status_code == 401  # the old password is gone

    browser = app.test_client()
    signed_in = login(browser, "rad", temporary)
    assert signed_in.headers["Location"] == "/account/password"
    for path in ("/search", "/cases/1", "/evaluations"):
        response = browser.get(path)
        assert response.status_code == 302 and response.headers["Location"] == "/account/password"
    assert browser.get(API_URL).status_code == 403  # the session, not a token
    assert browser.get("/account/password").status_code == 200
    assert _api(app, token) == 200

    form = {
        "current_password": temporary,
        "new_password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD,
    }
    assert browser.post("/account/password", data=form).status_code == 302
    assert browser.get("/search").status_code == 200
    assert "reset_password" in _actions(db)


def test_expired_and_revoked_tokens_get_401_saying_so(
    app: Flask, admin_client: FlaskClient, radiologist: User, db: Session
) -> None:
    """A token past its expiry and one revoked on the Users page are refused with the reason."""
    expiring = create_api_token(db, radiologist, name="nightly", expires_days=1)
    kept = create_api_token(db, radiologist, name="pacs")
    db.commit()
    api = app.test_client()
    assert api.get(API_URL, headers=_bearer(expiring)).status_code == 200
    stored = db.scalar(select(ApiToken).where(ApiToken.name == "nightly"))
    stored.expires_at = utcnow() - timedelta(minutes=1)
    db.commit()
    expired = api.get(API_URL, headers=_bearer(expiring))
    assert expired.status_code == 401
    assert re.search(r"API token \d+ \(nightly\) expired at \d{4}-", expired.get_json()["error"])

    kept_id = db.scalar(select(ApiToken.id).where(ApiToken.name == "pacs"))
    assert admin_client.post(f"/admin/tokens/{kept_id}/revoke").status_code == 302
    revoked = api.get(API_URL, headers=_bearer(kept))
    assert revoked.status_code == 401 and "(pacs) was revoked" in revoked.get_json()["error"]
    unknown = api.get(API_URL, headers=_bearer("ms_nope"))
    assert unknown.status_code == 401 and unknown.get_json()["error"] == "unknown API token"
    assert "revoke_token" in _actions(db)


def test_the_users_page_lists_tokens_and_issues_one_shown_once(
    app: Flask, admin_client: FlaskClient, radiologist: User, db: Session
) -> None:
    """Tokens listed with name, expiry and state; a new one works; least privilege first."""
    page = admin_client.get("/admin/users").get_data(as_text=True)
    assert re.search(r'<option value="radiologist" selected>', page)
    assert "must_change_password" in page and 'minlength="12"' in page
    issued = admin_client.post(
        "/admin/tokens",
        data={"user_id": radiologist.id, "name": "PACS bridge", "expires_days": "30"},
    )
    assert issued.status_code == 200
    text = issued.get_data(as_text=True)
    token = re.search(r'id="new-token">([^<]+)<', text)[1]
    expires = (utcnow() + timedelta(days=30)).strftime("%Y-%m-%d")
    assert "PACS bridge" in text and expires in text and ">active<" in text
    assert _api(app, token) == 200
    assert token not in admin_client.get("/admin/users").get_data(as_text=True)  # shown once
    bad = admin_client.post("/admin/tokens", data={"user_id": radiologist.id, "expires_days": "0"})
    assert bad.status_code == 400 and b"at least 1 day" in bad.data


def test_created_users_must_change_the_password_an_admin_chose(
    app: Flask, admin_client: FlaskClient
) -> None:
    """Ticked by default: the admin knows the first password, so the user replaces it."""
    form = {
        "username": "newrad",
        "password": "a-long-passphrase-42",
        "role": "radiologist",
        "must_change_password": "1",
    }
    assert admin_client.post("/admin/users", data=form).status_code == 302
    browser = app.test_client()
    assert login(browser, "newrad", "a-long-passphrase-42").headers["Location"] == (
        "/account/password"
    )
    weak = admin_client.post(
        "/admin/users",
        data={"username": "weak", "password": "qwertyuiop123", "role": "radiologist"},
    )
    assert weak.status_code == 400 and b"weak: password too easy to guess" in weak.data


def test_an_account_backs_off_after_repeated_wrong_passwords(
    app: Flask, radiologist: User, db: Session
) -> None:
    """Past the free failures even the right password waits, from any address; audited."""
    for attempt in range(FREE_SIGN_IN_FAILURES):
        browser = app.test_client()  # each attempt as if from elsewhere: the account counts
        assert login(browser, "rad", f"wrong {attempt}").status_code == 401
    blocked = login(app.test_client(), "rad", TEST_PASSWORD)
    assert blocked.status_code == 429
    assert "Too many sign-in attempts; try again in 1 minute." in blocked.get_data(as_text=True)
    assert int(blocked.headers["Retry-After"]) <= 60
    events = db.scalars(select(AuditEvent).where(AuditEvent.action == "login_rate_limited")).all()
    assert [event.detail["limit"] for event in events] == ["account"]

    user = db.scalar(select(User).where(User.username == "rad"))
    user.sign_in_blocked_until = utcnow() - timedelta(seconds=1)  # the wait is over
    db.commit()
    assert login(app.test_client(), "rad").status_code == 302
    db.expire_all()
    assert db.get(User, radiologist.id).failed_sign_ins == 0


def test_the_address_limit_page_says_how_long_and_is_audited(web_settings, radiologist, db) -> None:  # type: ignore[no-untyped-def]
    """Over LOGIN_RATE_LIMIT: 429 in plain words, and the attempt is in the audit log."""
    app = create_app(app_config(web_settings, LOGIN_RATE_LIMIT="2 per minute"))
    browser = app.test_client()
    codes = [login(browser, "rad", "wrong").status_code for _ in range(3)]
    assert codes == [401, 401, 429]
    page = login(browser, "rad").get_data(as_text=True)
    assert "Too many sign-in attempts; try again in 1 minute." in page
    events = db.scalars(select(AuditEvent).where(AuditEvent.action == "login_rate_limited")).all()
    assert [event.detail for event in events] == [{"username": "rad", "limit": "address"}] * 2
    assert _actions(db).count("login_failed") == 2


def test_sign_in_works_and_is_still_limited_while_redis_is_down(web_settings, radiologist) -> None:  # type: ignore[no-untyped-def]
    """The limiter's Redis unreachable: memory counts instead of a 500."""
    app = create_app(
        app_config(
            web_settings,
            RATELIMIT_STORAGE_URI=DOWN_REDIS,
            LOGIN_RATE_LIMIT="2 per minute",
            RATELIMIT_STORAGE_OPTIONS={"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        )
    )
    browser = app.test_client()
    assert login(browser, "rad").status_code == 302
    assert login(browser, "rad", "wrong").status_code == 401
    assert login(browser, "rad", "wrong").status_code == 429


def test_readyz_is_degraded_but_200_when_only_the_broker_is_down(web_settings) -> None:  # type: ignore[no-untyped-def]
    """Search needs the database and the index, not the broker: degraded, still ready."""
    app = create_app(app_config(web_settings.with_overrides(celery_broker_url=DOWN_REDIS)))
    response = app.test_client().get("/readyz")
    body = response.get_json()
    assert response.status_code == 200 and body["status"] == "degraded"
    assert not body["checks"]["broker"]["ok"] and body["checks"]["database"]["ok"]
    healthy = create_app(app_config(web_settings.with_overrides(celery_broker_url=REDIS_TEST_URL)))
    assert healthy.test_client().get("/readyz").get_json()["status"] == "ready"
