"""A radiologist's visit in a real headless Chromium against a real `mammosearch serve`."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace
from mammosearch.db.session import make_session_factory
from mammosearch.evaluate.runs import evaluate_space
from mammosearch.pipeline.process import process_pending
from tests.e2e.serving import REPO_ROOT, serving
from tests.e2e.viewer_checks import assert_full_resolution_at_one_scale
from tests.e2e.waiting import page_wait
from tests.factories import (
    TEST_PASSWORD,
    make_image,
    make_patient,
    make_user,
    synthetic_image_bytes,
)
from tests.unit.web_support import fresh_sqlite, make_settings

ARTIFACTS = REPO_ROOT / "test-artifacts"
E2E_STUDY_PREFIX = "1.2.826.0.1.3680043.77."  # + the patient's number: one study each
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None or not Path(CHROMEDRIVER).exists(),
        reason="needs Debian packages chromium and chromium-driver",
    ),
]


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[str, Settings]]:
    """`mammosearch serve` on a free port over 8 indexed synthetic images of 4 patients (two
    per BIRADS, so a patient-excluded evaluation can score them), and its settings."""
    root = tmp_path_factory.mktemp("e2e")
    settings = make_settings(root / "data", fresh_sqlite(sqlite_template, root / "db"))
    session = make_session_factory(settings.database_url)()
    for number in range(4):
        patient = make_patient(session, f"E2E-{number}")
        for view_index, view in enumerate(("CC", "MLO")):
            make_image(
                session,
                settings,
                patient,
                seed=10 * number + view_index,
                view=view,
                birads=1 + number % 2,
                side="LR"[number % 2],
                pathology=("Benign", "Malignant")[number % 2],
                study_instance_uid=f"{E2E_STUDY_PREFIX}{number}",
            )
    make_user(session, "rad", "radiologist")
    make_user(session, "boss", "admin")
    session.close()
    assert process_pending(settings).indexed == 8
    with serving(settings, root) as base_url:
        yield base_url, settings


@pytest.fixture(scope="module")
def server(served: tuple[str, Settings]) -> str:
    """The served base URL."""
    return served[0]


@pytest.fixture
def chrome() -> Iterator[object]:
    """Headless Chromium through chromedriver, with a throw-away profile."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mammosearch-chrome-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1700",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_sign_in_search_by_upload_open_a_case_sign_out(
    server: str,
    chrome,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Log in, upload a query, see k results with BIRADS, open a case, log out."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select

    wait = page_wait(chrome, 90)
    chrome.get(f"{server}/search")
    assert "/login" in chrome.current_url  # anonymous: sent to sign in
    chrome.find_element(By.ID, "username").send_keys("rad")
    chrome.find_element(By.ID, "password").send_keys(TEST_PASSWORD)
    chrome.find_element(By.ID, "sign-in").click()
    wait.until(ready.presence_of_element_located((By.ID, "image")))

    Select(chrome.find_element(By.ID, "unit")).select_by_value("image")  # single images
    query = tmp_path / "query.png"
    query.write_bytes(synthetic_image_bytes(21))
    chrome.find_element(By.ID, "image").send_keys(str(query))
    k_field = chrome.find_element(By.ID, "k")
    k_field.clear()
    k_field.send_keys("5")
    chrome.find_element(By.ID, "search").click()
    wait.until(ready.presence_of_element_located((By.ID, "results")))

    results = chrome.find_elements(By.CSS_SELECTOR, "#results .result")
    assert len(results) == 5
    birads = [r.find_element(By.CSS_SELECTOR, "dd.birads").text for r in results]
    assert all(value in {"1", "2", "3", "4"} for value in birads), birads
    # The server's embedded sweep measured this new space's vote when it started (no one ran
    # `evaluate`): the panel speaks from that measurement, never "No suggestion".
    assert chrome.find_element(By.ID, "birads-suggested").text != "No suggestion"
    assert chrome.find_elements(By.CSS_SELECTOR, "#birads-counts tbody tr")
    ARTIFACTS.mkdir(exist_ok=True)
    chrome.find_element(By.ID, "suggestion").screenshot(
        str(ARTIFACTS / "search-suggestion-measured-at-start.png")
    )
    assert "efficientnet-lite0" in chrome.find_element(By.ID, "embedding-space").text
    wait.until(
        lambda driver: driver.execute_script(
            "return [...document.querySelectorAll('#results img')]"
            ".every(img => img.complete && img.naturalWidth > 0)"
        )
    )
    ARTIFACTS.mkdir(exist_ok=True)
    assert chrome.save_screenshot(str(ARTIFACTS / "search-results.png"))
    wait.until(  # the uploaded query (kept in the page) beside the first result
        lambda driver: driver.execute_script(
            "return ['compare-query', 'compare-result'].every(id =>"
            " document.getElementById(id).dataset.loaded === '1')"
        )
    )
    assert_full_resolution_at_one_scale(chrome, ["compare-query", "compare-result"])
    chrome.execute_script("document.getElementById('compare').scrollIntoView()")
    assert chrome.save_screenshot(str(ARTIFACTS / "viewer-after-upload.png"))

    results[0].find_element(By.TAG_NAME, "a").click()
    wait.until(ready.presence_of_element_located((By.ID, "case-viewer")))
    wait.until(
        lambda driver: driver.execute_script(
            "return document.getElementById('case-viewer').dataset.loaded === '1'"
        )
    )
    assert "Report" in chrome.page_source
    assert "found-at" in chrome.page_source  # opened from the results: rank and distance
    before = float(chrome.find_element(By.ID, "case-viewer").get_attribute("data-zoom"))
    chrome.find_element(By.CSS_SELECTOR, "[data-action='zoom-in']").click()
    wait.until(
        lambda driver: (
            float(driver.find_element(By.ID, "case-viewer").get_attribute("data-zoom"))
            > before * 1.2
        )
    )
    ARTIFACTS.mkdir(exist_ok=True)
    chrome.save_screenshot(str(ARTIFACTS / "case.png"))

    chrome.find_element(By.ID, "logout").click()
    wait.until(ready.presence_of_element_located((By.ID, "sign-in")))
    chrome.get(f"{server}/search")
    assert "/login" in chrome.current_url


def _sign_in(chrome, server: str, username: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    chrome.get(f"{server}/login")
    chrome.find_element(By.ID, "username").send_keys(username)
    chrome.find_element(By.ID, "password").send_keys(TEST_PASSWORD)
    chrome.find_element(By.ID, "sign-in").click()


def test_admin_checks_ingestion_adds_a_user_and_reads_the_audit(
    server: str,
    chrome,  # type: ignore[no-untyped-def]
) -> None:
    """An admin's work: ingestion status, evaluations, a new radiologist, the access audit."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready

    wait = page_wait(chrome, 60)
    _sign_in(chrome, server, "boss")
    wait.until(ready.presence_of_element_located((By.ID, "logout")))

    chrome.get(f"{server}/admin/ingestion")
    page = chrome.find_element(By.TAG_NAME, "main").text
    assert "indexed" in page and "8" in page
    chrome.get(f"{server}/evaluations")
    assert "Evaluation" in chrome.title

    chrome.get(f"{server}/admin/users")
    chrome.find_element(By.NAME, "username").send_keys("newrad")
    chrome.find_element(By.NAME, "password").send_keys("a-long-passphrase-42")
    chrome.find_element(By.CSS_SELECTOR, "form[action$='/admin/users'] button").click()
    wait.until(lambda driver: "newrad" in driver.find_element(By.TAG_NAME, "table").text)

    chrome.get(f"{server}/admin/audit")
    audit = chrome.find_element(By.ID, "audit").text
    assert "boss" in audit and "login" in audit and "create_user" in audit
    chrome.find_element(By.ID, "logout").click()
    wait.until(ready.presence_of_element_located((By.ID, "sign-in")))

    _sign_in(chrome, server, "rad")  # a radiologist is kept out of admin pages
    wait.until(ready.presence_of_element_located((By.ID, "logout")))
    chrome.get(f"{server}/admin/users")
    assert "newrad" not in chrome.page_source
    assert (
        "403" in chrome.title
        or "Forbidden" in chrome.page_source
        or "not allowed" in (chrome.page_source.lower())
    )


def test_a_measured_space_says_how_sure_its_suggestion_is(
    served: tuple[str, Settings],
    chrome,  # type: ignore[no-untyped-def]
) -> None:
    """After the archive's evaluation (l2, so no earlier search cached it unmeasured), the
    panel shows the BIRADS and pathology votes with their measured precision: a class in
    large type only when suggested, "Uncertain" otherwise."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select

    server, settings = served
    session = make_session_factory(settings.database_url)()
    space = session.scalars(select(EmbeddingSpace)).one()
    evaluate_space(session, settings, space, metric="l2", ks=(1, 5))
    session.close()
    wait = page_wait(chrome, 90)
    _sign_in(chrome, server, "rad")
    wait.until(ready.presence_of_element_located((By.ID, "image_id")))
    chrome.find_element(By.ID, "image_id").send_keys("1")
    Select(chrome.find_element(By.ID, "unit")).select_by_value("image")  # the measured vote
    Select(chrome.find_element(By.ID, "metric")).select_by_value("l2")
    chrome.find_element(By.ID, "search").click()
    wait.until(ready.presence_of_element_located((By.ID, "suggestion")))
    panel = chrome.find_element(By.ID, "birads-vote")
    status = panel.get_attribute("data-status")
    assert status in ("suggested", "uncertain")
    sureness = panel.find_element(By.CLASS_NAME, "vote-sureness").text
    assert "were right for" in sureness or "split" in sureness
    large = chrome.find_elements(By.CSS_SELECTOR, "#birads-vote .suggested")
    if status == "suggested":
        assert [e.text for e in large] in (["1"], ["2"])
    else:
        assert not large and chrome.find_element(By.ID, "birads-suggested").text == "Uncertain"
    assert (
        "patient-excluded evaluation of space" in panel.find_element(By.CLASS_NAME, "measured").text
    )
    assert chrome.find_element(By.ID, "pathology-vote").get_attribute("data-status")
    ARTIFACTS.mkdir(exist_ok=True)
    suggestion = chrome.find_element(By.ID, "suggestion")
    chrome.execute_script("arguments[0].scrollIntoView()", suggestion)
    assert suggestion.screenshot(str(ARTIFACTS / "search-suggestion-measured.png"))

    # A case search reads the case table the server's sweep measured at start (both units).
    chrome.get(f"{server}/search")
    wait.until(ready.presence_of_element_located((By.ID, "image_id")))
    chrome.find_element(By.ID, "image_id").send_keys("1")
    Select(chrome.find_element(By.ID, "unit")).select_by_value("case")
    Select(chrome.find_element(By.ID, "metric")).select_by_value("l2")
    chrome.find_element(By.ID, "search").click()
    wait.until(ready.presence_of_element_located((By.ID, "suggestion")))
    panel = chrome.find_element(By.ID, "birads-vote")
    assert panel.get_attribute("data-status") in ("suggested", "uncertain")
    measured = panel.find_element(By.CLASS_NAME, "measured").text
    assert "patient-excluded evaluation of space" in measured and "cases by mean" in measured
    sureness = panel.find_element(By.CLASS_NAME, "vote-sureness").text
    assert "of unseen patients' cases" in sureness or "split" in sureness
    suggestion = chrome.find_element(By.ID, "suggestion")
    chrome.execute_script("arguments[0].scrollIntoView()", suggestion)
    assert suggestion.screenshot(str(ARTIFACTS / "search-suggestion-measured-case.png"))
