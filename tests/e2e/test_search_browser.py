"""Searching in a real headless Chromium: the page ranks an upload as the API and the CLI do,
and the chosen file, k and filters stay for the next search."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image as PILImage

from mammosearch.access.users import create_api_token
from mammosearch.config import Settings
from mammosearch.db.session import make_session_factory
from mammosearch.pipeline.process import process_pending
from tests.e2e import test_web_browser as shared
from tests.e2e.serving import REPO_ROOT, server_environment, serving
from tests.e2e.test_web_browser import (
    ARTIFACTS,
    _sign_in,
)
from tests.e2e.waiting import page_wait
from tests.factories import make_image, make_patient, make_user
from tests.unit.web_support import fresh_sqlite, make_settings

pytestmark = shared.pytestmark  # e2e, slow, skipped without Chromium

K = 5
chrome = shared.chrome  # the headless Chromium fixture


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[str, Settings, str]]:
    """`mammosearch serve` over 8 indexed images of 4 patients (both sides, both views);
    yields the base URL, the settings and an API token."""
    root = tmp_path_factory.mktemp("e2e-search")
    settings = make_settings(root / "data", fresh_sqlite(sqlite_template, root / "db"))
    session = make_session_factory(settings.database_url)()
    for number in range(4):
        patient = make_patient(session, f"S-{number}")
        for view_index, view in enumerate(("CC", "MLO")):
            make_image(
                session,
                settings,
                patient,
                seed=30 + 10 * number + view_index,
                view=view,
                birads=1 + number,
                side="LR"[number % 2],
            )
    make_user(session, "rad", "radiologist")
    make_user(session, "boss", "admin")
    token = create_api_token(session, make_user(session, "robot", "radiologist"))
    session.commit()
    session.close()
    assert process_pending(settings).indexed == 8
    with serving(settings, root) as base_url:
        yield base_url, settings, token


def _query_file(directory: Path) -> Path:
    """A 1200x1600 grey JPEG: far larger than the page's 256 px preview."""
    yy, xx = np.mgrid[0:1600, 0:1200] / np.array([1600, 1200])[:, None, None]
    pixels = 150 * np.exp(-((xx - 0.1) ** 2 / 0.3 + (yy - 0.5) ** 2 / 0.4))
    pixels += 100 * np.exp(-((xx - 0.45) ** 2 + (yy - 0.4) ** 2) / 0.003)
    buffer = io.BytesIO()
    PILImage.fromarray(np.clip(pixels + 20, 0, 255).astype(np.uint8)).save(buffer, "JPEG")
    path = directory / "large-query.jpg"
    path.write_bytes(buffer.getvalue())
    return path


def _page_ids(chrome) -> list[int]:  # type: ignore[no-untyped-def]
    return [
        int(text)
        for text in chrome.execute_script(
            "return [...document.querySelectorAll('#results .result .patient')]"
            ".map(p => p.textContent.match(/image (\\d+)/)[1])"
        )
    ]


def _search_in_browser(chrome, server: str, query: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select

    _sign_in(chrome, server, "rad")
    wait = page_wait(chrome, 90)
    wait.until(ready.presence_of_element_located((By.ID, "image")))
    Select(chrome.find_element(By.ID, "unit")).select_by_value("image")  # as the API's default
    chrome.find_element(By.ID, "image").send_keys(str(query))
    k_field = chrome.find_element(By.ID, "k")
    k_field.clear()
    k_field.send_keys(str(K))
    chrome.find_element(By.ID, "search").click()
    wait.until(ready.presence_of_element_located((By.ID, "results")))
    wait.until(
        lambda driver: driver.execute_script(
            "return [...document.querySelectorAll('#results img')]"
            ".every(img => img.complete && img.naturalWidth > 0)"
        )
    )


def test_the_page_ranks_an_upload_as_the_api_and_the_cli_do(
    served: tuple[str, Settings, str],
    chrome,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """One large grey JPEG through Chromium, the API and `mammosearch search`: same ids."""
    server, settings, token = served
    query = _query_file(tmp_path)
    _search_in_browser(chrome, server, query)
    page = _page_ids(chrome)
    ARTIFACTS.mkdir(exist_ok=True)
    assert chrome.save_screenshot(str(ARTIFACTS / "search-upload-same-ranking.png"))

    with query.open("rb") as handle:
        api = requests.post(
            f"{server}/api/v1/search",
            headers={"Authorization": f"Bearer {token}"},
            files={"image": (query.name, handle, "image/jpeg")},
            data={"k": str(K)},
            timeout=60,
        )
    assert api.status_code == 200, api.text
    cli = subprocess.run(
        [
            sys.executable,
            "-c",
            "from mammosearch.cli import main; main()",
            "search",
            str(query),
            "-k",
            str(K),
            "--json",
        ],
        env=server_environment(settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    api_ids = [hit["image_id"] for hit in api.json()["results"]]
    cli_ids = [hit["image_id"] for hit in json.loads(cli.stdout)["results"]]
    assert len(page) == K
    assert page == api_ids == cli_ids


def test_file_k_and_filters_stay_and_a_changed_filter_searches_again(
    served: tuple[str, Settings, str],
    chrome,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """After a search the file, k and filters stay; side=R re-runs it with the same file;
    an image id as well is refused in words, with the recent cases still below."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    server, _, _ = served
    _search_in_browser(chrome, server, _query_file(tmp_path))
    wait = page_wait(chrome, 90)
    first = _page_ids(chrome)
    Select(chrome.find_element(By.ID, "side")).select_by_value("R")
    wait.until(lambda driver: _page_ids(driver) != first)
    sides = chrome.execute_script(
        "return [...document.querySelectorAll('#results .result dl.labels dd:nth-of-type(3)')]"
        ".map(dd => dd.textContent.trim().split(' ')[0])"
    )
    assert sides == ["R"] * 4, sides
    assert chrome.execute_script("return document.getElementById('image').files.length") == 1
    assert chrome.find_element(By.ID, "k").get_attribute("value") == str(K)
    assert Select(chrome.find_element(By.ID, "side")).first_selected_option.text == "right"
    wait.until(
        lambda driver: driver.execute_script(
            "return [...document.querySelectorAll('#results img')]"
            ".every(img => img.complete && img.naturalWidth > 0)"
        )
    )
    assert chrome.save_screenshot(str(ARTIFACTS / "search-filters-kept.png"))

    chrome.find_element(By.ID, "image_id").send_keys("1")
    chrome.find_element(By.ID, "search").click()
    wait.until(
        lambda driver: "give one query, not both" in driver.find_element(By.TAG_NAME, "main").text
    )
    main = chrome.find_element(By.TAG_NAME, "main").text
    assert "no searchable case yet" not in main
    assert chrome.find_elements(By.ID, "recent-cases")
    assert chrome.execute_script("return document.getElementById('image').files.length") == 1
    assert chrome.save_screenshot(str(ARTIFACTS / "search-refused-two-queries.png"))


def test_similarity_reads_as_rank_and_distance_and_no_page_shows_a_server_path(
    served: tuple[str, Settings, str],
    chrome,  # type: ignore[no-untyped-def]
) -> None:
    """L2 results read '#n of k · distance'; search, ingestion and evaluations pages name the
    weights by package, never by a directory of the server."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select

    server, settings, _ = served
    wait = page_wait(chrome, 90)
    _sign_in(chrome, server, "boss")
    wait.until(ready.presence_of_element_located((By.ID, "logout")))
    chrome.get(f"{server}/search")
    chrome.find_element(By.ID, "image_id").send_keys("1")
    Select(chrome.find_element(By.ID, "unit")).select_by_value("image")
    Select(chrome.find_element(By.ID, "metric")).select_by_value("l2")
    chrome.find_element(By.ID, "search").click()
    wait.until(ready.presence_of_element_located((By.ID, "results")))
    labels = [p.text for p in chrome.find_elements(By.CSS_SELECTOR, "#results .similarity")]
    assert labels and labels[0].startswith("#1 of ") and "distance" in labels[0], labels
    assert "package" in chrome.find_element(By.ID, "embedding-space").text
    wait.until(
        lambda driver: driver.execute_script(
            "return [...document.querySelectorAll('#results img')]"
            ".every(img => img.complete && img.naturalWidth > 0)"
        )
    )
    assert chrome.save_screenshot(str(ARTIFACTS / "search-l2-rank-distance.png"))
    for page in ("/search", "/admin/ingestion", "/evaluations", "/admin/models"):
        chrome.get(f"{server}{page}")
        source = chrome.page_source
        for path in (str(settings.data_dir), sys.prefix, "site-packages", str(REPO_ROOT)):
            assert path not in source, (page, path)
    chrome.get(f"{server}/admin/ingestion")
    assert chrome.save_screenshot(str(ARTIFACTS / "ingestion-no-paths.png"))


def test_every_filter_keeps_its_value_and_the_form_fits_above_the_fold(
    served: tuple[str, Settings, str],
    chrome,  # type: ignore[no-untyped-def]
) -> None:
    """The filters (one per FILTER_FIELDS row) keep their chosen values after a search, and
    the whole form, Search button included, shows on a 1600x1000 screen without scrolling."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready

    from mammosearch.search.filters import FILTER_NAMES

    server, _, _ = served
    _sign_in(chrome, server, "rad")
    chosen = {"side": "R", "view": "MLO", "birads_min": "1", "birads_max": "4"}
    chrome.set_window_size(1600, 1000)
    try:
        query = "&".join(f"{name}={value}" for name, value in chosen.items())
        chrome.get(f"{server}/search?image_id=1&unit=image&k=3&{query}")
        page_wait(chrome, 90).until(ready.presence_of_element_located((By.ID, "results")))
        kept = {
            name: chrome.find_element(By.CSS_SELECTOR, f"#search-form [name={name}]").get_attribute(
                "value"
            )
            for name in FILTER_NAMES
        }
        assert kept == {"modality": "", "pathology": "", **chosen}
        form_bottom, fold = chrome.execute_script(
            "return [document.getElementById('search').getBoundingClientRect().bottom,"
            " window.innerHeight]"
        )
        assert form_bottom <= fold, (form_bottom, fold)
        ARTIFACTS.mkdir(exist_ok=True)
        assert chrome.save_screenshot(str(ARTIFACTS / "search-filters-1600x1000.png"))
    finally:
        chrome.set_window_size(1400, 1700)
