"""An admin cuts a user off in a real headless Chromium against a real `mammosearch serve`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from mammosearch.access.users import issue_api_token
from mammosearch.db.models import ApiToken, utcnow
from mammosearch.db.session import make_session_factory
from tests.e2e.serving import serving
from tests.e2e.test_web_browser import (  # the browser and server helpers, not its tests
    ARTIFACTS,
    chrome,  # noqa: F401 - a fixture
    pytestmark,  # noqa: F401 - e2e, slow, skipped without Chromium
)
from tests.e2e.waiting import page_wait
from tests.factories import TEST_PASSWORD, make_user
from tests.unit.web_support import fresh_sqlite, make_settings


@pytest.fixture(scope="module")
def cut_off_server(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[str, str]]:
    """`mammosearch serve` with an admin, a radiologist and a token of hers past its expiry."""
    root = tmp_path_factory.mktemp("e2e-users")
    settings = make_settings(root / "data", fresh_sqlite(sqlite_template, root / "db"))
    session = make_session_factory(settings.database_url)()
    make_user(session, "boss", "admin")
    radiologist = make_user(session, "rad", "radiologist")
    api_token, expired_token = issue_api_token(session, radiologist, "old script", expires_days=1)
    api_token.expires_at = utcnow() - timedelta(hours=1)
    session.commit()
    assert session.get(ApiToken, api_token.id) is not None
    session.close()
    with serving(settings, root) as base_url:
        yield base_url, expired_token


def _sign_in(chrome, server: str, username: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811 - the fixture's name
    from selenium.webdriver.common.by import By

    chrome.get(f"{server}/login")
    chrome.find_element(By.ID, "username").send_keys(username)
    chrome.find_element(By.ID, "password").send_keys(TEST_PASSWORD)
    chrome.find_element(By.ID, "sign-in").click()


def _api_error(server: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{server}/api/v1/openapi.json", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, ""
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())["error"]


def test_an_admin_disables_a_signed_in_user_who_is_then_refused(
    cut_off_server: tuple[str, str],
    chrome,  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    """Her open session ends at the next click; her expired token was refused all along."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready

    server, expired_token = cut_off_server
    wait = page_wait(chrome, 60)
    status, error = _api_error(server, expired_token)
    assert status == 401 and "(old script) expired at" in error, error

    _sign_in(chrome, server, "rad")  # her session, kept aside while the admin works
    wait.until(ready.presence_of_element_located((By.ID, "logout")))
    rad_cookies = chrome.get_cookies()
    chrome.delete_all_cookies()

    _sign_in(chrome, server, "boss")
    wait.until(ready.presence_of_element_located((By.ID, "logout")))
    chrome.get(f"{server}/admin/users")
    row = chrome.find_element(By.CSS_SELECTOR, "tr[data-username='rad']")
    row.find_element(By.CSS_SELECTOR, "button.disable-user").click()
    wait.until(
        lambda driver: driver.find_element(
            By.CSS_SELECTOR, "tr[data-username='rad'] td.state"
        ).text.startswith("disabled")
    )
    tokens = chrome.find_element(By.ID, "tokens").text
    assert "old script" in tokens and "expired" in tokens
    ARTIFACTS.mkdir(exist_ok=True)
    assert chrome.save_screenshot(str(ARTIFACTS / "admin-users.png"))

    chrome.delete_all_cookies()  # back to her browser
    for cookie in rad_cookies:
        chrome.add_cookie(cookie)
    chrome.get(f"{server}/search")
    wait.until(ready.presence_of_element_located((By.ID, "sign-in")))
    assert "/login" in chrome.current_url
    assert "account is disabled" in chrome.find_element(By.TAG_NAME, "main").text
    _sign_in(chrome, server, "rad")
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, ".flash-error")))
    assert "This account is disabled" in chrome.find_element(By.TAG_NAME, "main").text
