"""An admin's workstation in headless Chromium: an evaluation started from the page runs
to the end (in-process), the audit is filtered by a patient's own ID and exported as CSV,
and each changed page is photographed into test-artifacts/."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from mammosearch.db.session import make_session_factory
from mammosearch.pipeline.process import process_pending
from tests.e2e.serving import serving
from tests.e2e.test_web_browser import (  # noqa: F401 - chrome is a fixture
    ARTIFACTS,
    _sign_in,
    chrome,
    pytestmark,
)
from tests.e2e.waiting import page_wait
from tests.factories import make_image, make_patient, make_user
from tests.unit.web_support import fresh_sqlite, make_settings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[str]:
    """`mammosearch serve` (no broker) over 12 indexed images of 6 patients whose BIRADS
    classes span patients, so that a patient-excluded evaluation has something to find."""
    root = tmp_path_factory.mktemp("e2e-workstation")
    settings = make_settings(root / "data", fresh_sqlite(sqlite_template, root / "db"))
    session = make_session_factory(settings.database_url)()
    for number in range(6):
        patient = make_patient(session, f"E2E-{number}")
        for view_index, view in enumerate(("CC", "MLO")):
            make_image(
                session,
                settings,
                patient,
                seed=10 * number + view_index,
                view=view,
                birads=1 + (number + view_index) % 3,
                side="LR"[number % 2],
            )
    make_user(session, "rad", "radiologist")
    make_user(session, "boss", "admin")
    session.close()
    assert process_pending(settings).indexed == 12
    with serving(settings, root) as base_url:
        yield base_url


def _shot(driver, name: str) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, max(900, min(int(height) + 40, 4000)))
    assert driver.save_screenshot(str(ARTIFACTS / name))
    driver.set_window_size(1400, 1700)


def test_an_evaluation_started_from_the_page_finishes_with_figures(
    server: str,
    chrome,  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready

    wait = page_wait(chrome, 240)
    _sign_in(chrome, server, "boss")
    wait.until(ready.presence_of_element_located((By.ID, "logout")))
    icon = chrome.execute_script("return document.querySelector('link[rel=icon]').href")
    assert icon.endswith("/static/favicon.svg")

    chrome.get(f"{server}/evaluations")
    chrome.find_element(By.ID, "start-evaluation-button").click()
    wait.until(ready.presence_of_element_located((By.ID, "evaluation-job")))
    wait.until(
        lambda driver: (
            driver.find_element(By.ID, "evaluation-job").get_attribute("data-state")
            in ("done", "failed")
        )
    )
    job = chrome.find_element(By.ID, "evaluation-job")
    assert job.get_attribute("data-state") == "done", job.text
    wait.until(lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#runs tbody tr")) >= 2)
    rows = chrome.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    assert all("done" in row.text for row in rows[:2]), [row.text for row in rows]
    assert "(web)" in rows[0].text
    _shot(chrome, "evaluations.png")

    rows[0].find_element(By.TAG_NAME, "a").click()
    wait.until(ready.presence_of_element_located((By.ID, "metrics")))
    wait.until(
        lambda driver: driver.execute_script(
            "const figures = [...document.querySelectorAll('img.run-figure')];"
            "return figures.length >= 3 && figures.every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    assert "chance" in chrome.find_element(By.ID, "metrics").text
    assert chrome.find_elements(By.ID, "per-class")
    _shot(chrome, "evaluation-detail.png")

    chrome.get(f"{server}/admin/ingestion")
    text = chrome.find_element(By.TAG_NAME, "main").text
    assert "Searchable (indexed)" in text and "no broker configured" in text
    assert "efficientnet-lite0" in text and "cosine similarity" in text
    _shot(chrome, "ingestion.png")


def test_the_audit_is_filtered_by_patient_and_exported_as_csv(
    server: str,
    chrome,  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready

    wait = page_wait(chrome, 60)
    _sign_in(chrome, server, "rad")
    wait.until(ready.presence_of_element_located((By.ID, "logout")))
    for image_id in (1, 3):  # patients E2E-0 and E2E-1
        chrome.get(f"{server}/cases/{image_id}")
        wait.until(ready.presence_of_element_located((By.ID, "case-viewer")))
    chrome.get(f"{server}/search")
    wait.until(
        lambda driver: driver.execute_script(
            "return [...document.querySelectorAll('#recent-cases img')]"
            ".every(img => img.classList.contains('loaded'))"
        )
    )
    _shot(chrome, "search-recent.png")
    chrome.execute_cdp_cmd("Network.enable", {})
    chrome.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/thumbnail*"]})
    chrome.get(f"{server}/search")
    _shot(chrome, "search-thumbnails-unavailable.png")
    chrome.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
    chrome.find_element(By.ID, "logout").click()

    _sign_in(chrome, server, "boss")
    wait.until(ready.presence_of_element_located((By.ID, "logout")))
    chrome.get(f"{server}/admin/audit")
    chrome.find_element(By.NAME, "patient").send_keys("E2E-0")
    chrome.find_element(By.NAME, "username").send_keys("rad")
    chrome.find_element(By.CSS_SELECTOR, "#audit-filters button").click()
    wait.until(lambda driver: "patient=E2E-0" in driver.current_url)
    rows = chrome.find_elements(By.CSS_SELECTOR, "#audit tbody tr")
    assert rows and all("rad" in row.text for row in rows)
    # The patient's own events, and the recent-cases pages that showed the patient's images
    # (one event per page, none per thumbnail: mammosearch.access.audit.SHOWN_IMAGE_KEYS).
    assert all("E2E-0" in row.text or "view_recent_cases" in row.text for row in rows)
    assert any("view_recent_cases" in row.text for row in rows)
    assert not any("E2E-1" in row.text or "view_thumbnail" in row.text for row in rows)
    _shot(chrome, "audit-filtered.png")

    href = chrome.find_element(By.ID, "audit-export").get_attribute("href")
    assert "patient=E2E-0" in href and "username=rad" in href
    text = chrome.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.text()).then(done);",
        href,
    )
    exported = list(csv.DictReader(io.StringIO(text)))
    assert len(exported) == len(rows)
    assert {row["patient"] for row in exported} == {"E2E-0", ""}
    assert {row["action"] for row in exported} >= {"view_image", "view_recent_cases"}
    chrome.get(f"{server}/admin/audit?action=export_audit")
    assert "export_audit" in chrome.find_element(By.ID, "audit").text
