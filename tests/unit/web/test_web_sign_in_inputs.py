"""Sign-in's inputs from a hostile tester: `next`, the scheme behind a proxy, CSV cells."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.db.models import AuditEvent, User
from tests.factories import TEST_PASSWORD, make_patient
from tests.unit.web_support import app_config
from web import create_app

OFF_SITE_NEXTS = [
    "//evil.example/x",
    "////evil.example/x",
    "///evil.example/x",
    "/\\evil.example/x",
    "\\\\evil.example/x",
    "/\\/evil.example/x",
    "\\/evil.example/x",
    "/%2F%2Fevil.example/x",
    "%2F%2Fevil.example/x",
    "/%5Cevil.example/x",
    "/%252F%252Fevil.example/x",
    "/\t/evil.example/x",
    "/\n/evil.example/x",
    " //evil.example/x",
    "https://evil.example/x",
    "https:evil.example/x",
    "https:/evil.example/x",
    "HTTPS://evil.example",
    "javascript:alert(1)",
    "evil.example/x",
]


def _stays_on_site(location: str) -> bool:
    """Whether a browser following `location` from this site stays on it."""
    browser_view = location.replace("\\", "/").replace("\t", "").replace("\n", "")
    parts = urlsplit(browser_view.strip())
    return (
        not parts.scheme
        and not parts.netloc
        and browser_view.startswith("/")
        and (not browser_view.startswith("//"))
    )


def test_sign_in_never_redirects_off_site(web_settings, radiologist: User) -> None:  # type: ignore[no-untyped-def]
    """POST /login with a `next` that a browser would read as another host goes to /search
    (one of each kind here: every sign-in checks a password; the GET test tries them all)."""
    client = create_app(app_config(web_settings, LOGIN_RATE_LIMIT="1000 per minute")).test_client()
    for target in (
        "////evil.example/x",
        "/\\evil.example/x",
        "/%2F%2Fevil.example/x",
        "/\t/evil.example/x",
        "https:evil.example/x",
        "javascript:alert(1)",
    ):
        response = client.post(
            "/login", data={"username": "rad", "password": TEST_PASSWORD, "next": target}
        )
        assert response.status_code == 302
        assert response.headers["Location"] == "/search", target


def test_signed_in_login_page_never_redirects_off_site(radiologist_client: FlaskClient) -> None:
    """GET /login when already signed in follows `next` only to a path on this site."""
    for target in OFF_SITE_NEXTS:
        response = radiologist_client.get("/login", query_string={"next": target})
        assert response.status_code == 302
        assert response.headers["Location"] == "/search", target
    response = radiologist_client.get("/login", query_string={"next": "/cases/3?tab=report"})
    assert response.headers["Location"] == "/cases/3?tab=report"


@pytest.mark.parametrize("target", ["/cases/3", "/search?birads=4", "/admin/audit?page=2"])
def test_sign_in_keeps_a_same_site_next(
    client: FlaskClient, radiologist: User, target: str
) -> None:
    """A same-site path survives sign-in as it was."""
    response = client.post(
        "/login", data={"username": "rad", "password": TEST_PASSWORD, "next": target}
    )
    assert response.headers["Location"] == target
    assert _stays_on_site(response.headers["Location"])


def test_audit_export_neutralises_every_cell_a_spreadsheet_would_run(
    admin_client: FlaskClient, db: Session
) -> None:
    """Usernames, patient ids, actions and details starting with = + - @ tab or CR get a
    leading quote (OWASP's CSV injection rule); other cells stay as they were."""
    triggers = [
        '=HYPERLINK("http://evil.example")',
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(A1)",
        "\tTAB",
        "\rCR",
    ]
    for number, trigger in enumerate(triggers):
        patient = make_patient(db, trigger)
        db.add(AuditEvent(
            username=trigger, action=trigger, patient_id=patient.id, remote_addr="10.0.0.1",
            created_at=datetime(2026, 4, 1, 10, number),
        ))  # fmt: skip
    db.commit()
    response = admin_client.get("/admin/audit.csv")
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True), newline="")))
    written = [row for row in rows if row["remote_addr"] == "10.0.0.1"]
    assert len(written) == len(triggers)
    for row in written:
        for column in ("username", "action", "patient"):
            assert row[column][0] == "'", (column, row[column])
            assert row[column][1:] in triggers
        assert row["when_utc"].startswith("2026-04-01")


def _session_cookie(response) -> str:  # type: ignore[no-untyped-def]
    cookies = [value for value in response.headers.getlist("Set-Cookie")
               if value.startswith("session=")]  # fmt: skip
    assert cookies, response.headers
    return cookies[0]


def test_session_cookie_is_secure_behind_a_trusted_https_proxy(
    web_settings,
    radiologist: User,
    db: Session,  # type: ignore[no-untyped-def]
) -> None:
    """With one trusted proxy (MAMMOSEARCH_FLASK_PROXY_FIX_HOPS=1) saying https, the session
    cookie is Secure and the audit records the client's address; over plain HTTP it is not."""
    client = create_app(app_config(web_settings, PROXY_FIX_HOPS=1)).test_client()
    form = {"username": "rad", "password": TEST_PASSWORD}
    behind_tls = client.post("/login", data=form, headers={
        "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7",
    })  # fmt: skip
    assert behind_tls.status_code == 302
    assert "; Secure" in _session_cookie(behind_tls)
    login_event = db.scalars(select(AuditEvent).where(AuditEvent.action == "login")).one()
    assert login_event.remote_addr == "203.0.113.7"
    plain = create_app(app_config(web_settings, PROXY_FIX_HOPS=1)).test_client()
    assert "Secure" not in _session_cookie(plain.post("/login", data=form))


def test_session_cookie_ignores_an_untrusted_forwarded_proto(
    web_settings,
    radiologist: User,  # type: ignore[no-untyped-def]
) -> None:
    """Without a trusted proxy X-Forwarded-Proto is anyone's header: the scheme the server
    itself saw decides (https served directly is Secure)."""
    app = create_app(app_config(web_settings))
    form = {"username": "rad", "password": TEST_PASSWORD}
    spoofed = app.test_client().post("/login", data=form, headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in _session_cookie(spoofed)
    direct = app.test_client().post("/login", data=form, base_url="https://localhost")
    assert "; Secure" in _session_cookie(direct)
