"""The comparison viewer in headless Chromium on every path to it: Find similar (cases, hung
as mirrored pairs), the search form (results swapped in by search.js) and /launch from a
workstation: zoom and pan move the panes together, window/level is per pane (screenshots)."""

from __future__ import annotations

import time

import pytest

from tests.e2e.test_web_browser import (  # noqa: F401  (fixtures)
    ARTIFACTS,
    E2E_STUDY_PREFIX,
    chrome,
    served,
    server,
)
from tests.e2e.viewer_checks import assert_full_resolution_at_one_scale
from tests.e2e.waiting import page_wait
from tests.factories import TEST_PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

VIEWPORTS = (
    "return window.mammosearchViewers.map(v => {"
    " const c = v.viewport.getCenter(true); return [v.viewport.getZoom(true), c.x, c.y]; })"
)


def _settled(driver) -> list[list[float]]:  # type: ignore[no-untyped-def]
    """Both panes' [zoom, centre x, centre y] once the animations have finished."""
    driver.execute_script(
        "window.mammosearchViewers.forEach(v => v.viewport.applyConstraints(true))"
    )
    return driver.execute_script(VIEWPORTS)


def test_find_similar_hangs_query_and_result_cases_and_moves_them_together(
    server: str, chrome
) -> None:  # type: ignore[no-untyped-def]  # noqa: F811, E501
    """Find similar (cases): the query case (left) beside the first result case (right), CC
    above MLO, mirrored back to back; scroll at the cursor zooms all four panes alike, a drag
    pans them, window/level keys change the pane under the pointer only, reset restores all."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready

    panes = ["compare-query-cc", "compare-result-cc", "compare-query-mlo", "compare-result-mlo"]
    wait = page_wait(chrome, 90)
    chrome.get(f"{server}/login")
    chrome.find_element(By.ID, "username").send_keys("rad")
    chrome.find_element(By.ID, "password").send_keys(TEST_PASSWORD)
    chrome.find_element(By.ID, "sign-in").click()
    wait.until(ready.presence_of_element_located((By.ID, "recent-cases")))
    chrome.find_element(By.CSS_SELECTOR, "#recent-cases form button").click()  # find similar
    wait.until(ready.presence_of_element_located((By.ID, "compare")))
    assert "unit=case" in chrome.current_url
    wait.until(
        lambda driver: driver.execute_script(
            "return arguments[0].every(id => document.getElementById(id).dataset.loaded === '1'"
            " && document.getElementById(id).dataset.analysed === '1')",
            panes,
        )
    )
    assert_full_resolution_at_one_scale(chrome, panes)
    zooms = chrome.execute_script(VIEWPORTS)
    assert all(zoom[0] == pytest.approx(zooms[0][0], rel=1e-3) for zoom in zooms), "one scale"
    flipped = chrome.execute_script(
        "return arguments[0].map(id => document.getElementById(id).dataset.flipped)", panes
    )
    assert set(flipped) <= {"0", "1"} and len(flipped) == 4
    compare = chrome.find_element(By.ID, "compare")
    chrome.execute_script("arguments[0].scrollIntoView()", compare)
    ARTIFACTS.mkdir(exist_ok=True)
    home = _settled(chrome)
    assert chrome.save_screenshot(str(ARTIFACTS / "viewer-cases-home.png"))

    query_pane = chrome.find_element(By.ID, panes[0])
    for _ in range(4):  # four wheel notches, a third of the way across the query
        ActionChains(chrome).scroll_from_origin(
            ScrollOrigin.from_element(query_pane, -60, -60), 0, -120
        ).perform()
        time.sleep(0.2)  # OpenSeadragon ignores wheel events closer than 50 ms apart
    wait.until(lambda driver: _settled(driver)[0][0] > home[0][0] * 1.5)
    zoomed = _settled(chrome)
    for other in zoomed[1:]:
        assert other[0] == pytest.approx(zoomed[0][0], rel=1e-3), "the others follow the zoom"
        assert other[1:] == pytest.approx(zoomed[0][1:], abs=1e-3), "and the centre"
    assert zoomed[0][1:] != pytest.approx(home[0][1:], abs=1e-3), "zoom is anchored at the cursor"
    assert chrome.save_screenshot(str(ARTIFACTS / "viewer-cases-zoomed.png"))

    ActionChains(chrome).drag_and_drop_by_offset(query_pane, 60, 40).perform()
    panned = _settled(chrome)
    assert panned[0][1:] != pytest.approx(zoomed[0][1:], abs=1e-3)
    assert panned[3][1:] == pytest.approx(panned[0][1:], abs=1e-3), "the others follow the pan"

    windows = chrome.execute_script(
        "return arguments[0].map(id => +document.getElementById(id).dataset.window)", panes
    )
    body = chrome.find_element(By.TAG_NAME, "body")
    body.send_keys("i")
    body.send_keys("]", "[", "[", "[", "[")
    group = chrome.find_element(By.ID, "viewer-group")
    assert group.get_attribute("data-invert") == "1"
    after = chrome.execute_script(
        "return arguments[0].map(id => +document.getElementById(id).dataset.window)", panes
    )
    assert after[0] == max(2, min(256, windows[0] + 16) - 64), "the pane under the pointer"
    assert after[1:] == windows[1:], "the other panes keep their own window"
    body.send_keys("5")  # preset 5: contrast x4
    assert group.get_attribute("data-window") == "64"
    assert chrome.save_screenshot(str(ARTIFACTS / "viewer-cases-inverted-window.png"))

    body.send_keys("0")
    wait.until(lambda driver: _settled(driver)[0][0] == pytest.approx(home[0][0], rel=1e-3))
    assert group.get_attribute("data-invert") == "0"
    assert int(group.get_attribute("data-window")) == windows[0]

    body.send_keys("n")  # the next result case
    captions = chrome.find_elements(By.CSS_SELECTOR, "#compare [data-caption]")
    wait.until(lambda driver: captions[1].text.startswith("#2 · patient "))
    wait.until(
        lambda driver: driver.execute_script(
            "return document.getElementById('compare-result-mlo').dataset.loaded === '1'"
        )
    )
    overlay = chrome.find_elements(By.CSS_SELECTOR, "#compare [data-pane-overlay]")[3].text
    assert overlay.startswith("#2 ·") and "MLO" in overlay


def test_a_form_search_shows_the_viewer_and_takes_an_address(server: str, chrome) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """The form (search.js swaps results in): the viewer loads both panes, each with its own
    auto window, overlays and the keys' help; the address bar holds the results' address,
    which back and reload reproduce. The form fits above the fold at 1600x1000."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select

    chrome.set_window_size(1600, 1000)
    wait = page_wait(chrome, 90)
    chrome.get(f"{server}/login?next=/search")
    chrome.find_element(By.ID, "username").send_keys("rad")
    chrome.find_element(By.ID, "password").send_keys(TEST_PASSWORD)
    chrome.find_element(By.ID, "sign-in").click()
    wait.until(ready.presence_of_element_located((By.ID, "search-form")))
    button_bottom = chrome.execute_script(
        "return document.getElementById('search').getBoundingClientRect().bottom"
    )
    assert button_bottom < 1000 - 120, "the form and the start of the results fit the screen"
    dropped = chrome.execute_script(  # two views dropped on the query box
        "const box = document.getElementById('image').closest('fieldset');"
        "const files = new DataTransfer();"
        "['R_CC.png', 'R_MLO.png'].forEach(n => files.items.add(new File(['x'], n)));"
        "box.dispatchEvent(new DragEvent('drop', {dataTransfer: files, bubbles: true}));"
        "const names = [...document.getElementById('image').files].map(f => f.name);"
        "document.getElementById('image').value = ''; return names;"
    )
    assert dropped == ["R_CC.png", "R_MLO.png"]

    Select(chrome.find_element(By.ID, "unit")).select_by_value("image")
    chrome.find_element(By.ID, "image_id").send_keys("3")
    chrome.find_element(By.ID, "search").click()
    wait.until(lambda driver: "image_id=3" in driver.current_url)
    wait.until(
        lambda driver: driver.execute_script(
            "return ['compare-query', 'compare-result'].every(id => {"
            " const pane = document.getElementById(id);"
            " return pane.dataset.loaded === '1' && pane.dataset.analysed === '1'; })"
        )
    )
    assert_full_resolution_at_one_scale(chrome, ["compare-query", "compare-result"])
    overlay_nodes = chrome.find_elements(By.CSS_SELECTOR, "#compare [data-pane-overlay]")
    overlays = [node.text for node in overlay_nodes]
    assert overlays[0].startswith("query ·") and overlays[1].startswith("#1 ·"), overlays
    assert "BIRADS" in overlays[1]
    windows = chrome.execute_script(
        "return ['compare-query', 'compare-result'].map(id =>"
        " document.getElementById(id).dataset.window)"
    )
    assert all(2 <= int(width) <= 256 for width in windows)
    chrome.execute_script("document.getElementById('compare').scrollIntoView()")
    body = chrome.find_element(By.TAG_NAME, "body")
    body.send_keys("?")
    assert chrome.find_element(By.ID, "viewer-help").is_displayed()
    ARTIFACTS.mkdir(exist_ok=True)
    assert chrome.save_screenshot(str(ARTIFACTS / "viewer-after-form-search-help.png"))
    body.send_keys("o")  # Escape would go to chromedriver; "o" hides the overlays
    body.send_keys("h")
    assert not chrome.find_element(By.ID, "viewer-help").is_displayed()
    assert not overlay_nodes[0].is_displayed()
    address = chrome.current_url

    chrome.find_element(By.ID, "image_id").clear()
    chrome.find_element(By.ID, "image_id").send_keys("5")
    chrome.find_element(By.ID, "search").click()
    wait.until(lambda driver: "image_id=5" in driver.current_url)
    chrome.back()
    wait.until(lambda driver: driver.current_url == address)
    wait.until(
        lambda driver: driver.execute_script(
            "return document.getElementById('compare-result')?.dataset.loaded === '1'"
        )
    )
    assert chrome.find_element(By.ID, "image_id").get_attribute("value") == "3"
    assert Select(chrome.find_element(By.ID, "unit")).first_selected_option.text == "single images"
    assert chrome.save_screenshot(str(ARTIFACTS / "viewer-after-back.png"))


def test_launch_from_a_workstation_signs_in_and_shows_the_study_s_cases(
    server: str, chrome
) -> None:  # type: ignore[no-untyped-def]  # noqa: F811, E501
    """/launch?study_uid=: the sign-in page, then back to the study's case results per breast
    with the comparison viewer loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready

    chrome.set_window_size(1600, 1000)
    wait = page_wait(chrome, 90)
    chrome.get(f"{server}/launch?study_uid={E2E_STUDY_PREFIX}0&k=3")
    assert "/login" in chrome.current_url
    chrome.find_element(By.ID, "username").send_keys("rad")
    chrome.find_element(By.ID, "password").send_keys(TEST_PASSWORD)
    chrome.find_element(By.ID, "sign-in").click()
    wait.until(ready.presence_of_element_located((By.ID, "breast-L")))
    assert "/launch?study_uid=" in chrome.current_url
    assert len(chrome.find_elements(By.CSS_SELECTOR, "#L-results .case-result")) == 3
    panes = [
        "L-compare-query-cc",
        "L-compare-result-cc",
        "L-compare-query-mlo",
        "L-compare-result-mlo",
    ]
    wait.until(
        lambda driver: driver.execute_script(
            "return arguments[0].every(id => document.getElementById(id).dataset.loaded === '1')",
            panes,
        )
    )
    assert_full_resolution_at_one_scale(chrome, panes)
    ARTIFACTS.mkdir(exist_ok=True)
    assert chrome.save_screenshot(str(ARTIFACTS / "launch-results.png"))
    chrome.execute_script("document.getElementById('L-compare').scrollIntoView()")
    assert chrome.save_screenshot(str(ARTIFACTS / "launch-viewer.png"))


def _register_deep_study(settings) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """A 12-bit DICOM study (left CC and MLO, 0.1 mm pixels) registered in the served
    archive, not indexed: its case page is what is looked at, not its search."""
    import numpy as np

    from mammosearch.db.session import make_session_factory
    from mammosearch.ingest.dicom_register import register_dicom
    from tests.dicom_samples import dicom_bytes, make_dataset

    rows, columns = np.mgrid[0:640, 0:400]
    breast = (columns - 400) ** 2 / 380**2 + (rows - 320) ** 2 / 300**2 < 1  # chest wall right
    pixels = np.where(breast, 600 + 2800 * (400 - columns) / 400 + 40 * np.sin(rows / 9), 0)
    study = f"{E2E_STUDY_PREFIX}999"
    session = make_session_factory(settings.database_url)()
    ids = {}
    for shift, view in enumerate(("CC", "MLO")):
        content = dicom_bytes(
            make_dataset(
                (pixels + 100 * shift * breast).astype("uint16"),
                PatientID="E2E-DEEP", ViewPosition=view,
                StudyInstanceUID=study, BitsStored=12, WindowCenter=1500, WindowWidth=1500,
                PixelSpacing=[0.1, 0.1],
            )
        )  # fmt: skip
        ids[view] = register_dicom(session, content, f"deep-{view}.dcm", settings).image_id
    session.commit()
    session.close()
    return ids


def test_the_case_page_hangs_the_whole_case_at_one_physical_scale_on_all_bits(
    served, chrome
) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """A 12-bit DICOM case: the study hung R CC | L CC over R MLO | L MLO (the views the
    study lacks say so), full-resolution pixels, a mm scale bar, the case's BIRADS and
    pathology; widening the window re-renders the pane on all 12 bits; and from a case
    page "Find similar cases" opens the comparison viewer."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready

    server, settings = served
    ids = _register_deep_study(settings)
    chrome.set_window_size(1600, 1000)
    wait = page_wait(chrome, 90)
    chrome.get(f"{server}/login?next=/cases/{ids['CC']}")
    chrome.find_element(By.ID, "username").send_keys("rad")
    chrome.find_element(By.ID, "password").send_keys(TEST_PASSWORD)
    chrome.find_element(By.ID, "sign-in").click()
    wait.until(ready.presence_of_element_located((By.ID, "case-summary")))
    shown = ["case-viewer", "case-l-mlo"]
    wait.until(
        lambda driver: driver.execute_script(
            "return arguments[0].every(id => document.getElementById(id).dataset.loaded === '1'"
            " && document.getElementById(id).dataset.analysed === '1')",
            shown,
        )
    )
    assert_full_resolution_at_one_scale(chrome, shown, mode="mm")
    assert chrome.find_element(By.ID, "case-r-cc").get_attribute("class").count("empty-pane")
    readouts = [node.text for node in chrome.find_elements(By.CSS_SELECTOR, "[data-zoom-readout]")]
    assert "this case has no CC view" in readouts[0], readouts
    assert "L CC" in chrome.find_element(By.ID, "case-views").text
    zooms = chrome.execute_script(VIEWPORTS)
    assert zooms[1][0] == pytest.approx(zooms[3][0], rel=1e-3), "one physical scale"
    ARTIFACTS.mkdir(exist_ok=True)
    assert chrome.save_screenshot(str(ARTIFACTS / "case-page-deep.png"))

    wait.until(  # the auto window, re-rendered on all bits once it settled
        lambda driver: (
            driver.find_element(By.ID, "case-viewer").get_attribute("data-rewindowed")
            not in (None, "0")
        )
    )
    pane = chrome.find_element(By.ID, "case-viewer")
    before = pane.get_attribute("data-depth-window")
    ActionChains(chrome).move_to_element(pane).click().perform()  # the pane the keys act on
    body = chrome.find_element(By.TAG_NAME, "body")
    body.send_keys("]", "]", "]", "]", "]", "]")  # a wider window than the rendering holds
    wait.until(lambda driver: pane.get_attribute("data-depth-window") != before)
    center, width = (float(part) for part in pane.get_attribute("data-depth-window").split(","))
    assert width > float(before.split(",")[1]), (before, center, width)
    wait.until(lambda driver: pane.get_attribute("data-loaded") == "1")
    readout = chrome.find_element(By.CSS_SELECTOR, "#viewer-group [data-control='wl-readout']")
    assert "12-bit" in readout.text
    assert chrome.save_screenshot(str(ARTIFACTS / "case-page-deep-wide-window.png"))

    chrome.get(f"{server}/cases/1")
    wait.until(ready.presence_of_element_located((By.ID, "case-summary")))
    wait.until(
        lambda driver: driver.execute_script(
            "return document.getElementById('case-viewer').dataset.loaded === '1'"
        )
    )
    assert_full_resolution_at_one_scale(chrome, ["case-viewer"])
    assert chrome.save_screenshot(str(ARTIFACTS / "case-page.png"))
    chrome.find_element(By.ID, "find-similar-case").click()
    wait.until(ready.presence_of_element_located((By.ID, "compare")))
    panes = ["compare-query-cc", "compare-result-cc", "compare-query-mlo", "compare-result-mlo"]
    wait.until(
        lambda driver: driver.execute_script(
            "return arguments[0].every(id => document.getElementById(id).dataset.loaded === '1')",
            panes,
        )
    )
    assert_full_resolution_at_one_scale(chrome, panes)
