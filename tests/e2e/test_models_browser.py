"""The admin Models page and the suggestion panel in a real headless Chromium, against a real
`mammosearch serve` whose serving space is a trained model whose vote was never measured
(a model recorded before the reliability tables), beside a registered model that has them.

An admin reads each space's reliability tables and the spaces side by side, switches to the
measured model from the page, and a radiologist's panel then speaks from its tables, for
image and case searches alike; before the switch it lists the neighbours and suggests
nothing in either unit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mammosearch.config import Settings
from mammosearch.db.session import make_session_factory, session_scope
from mammosearch.embed.loader import registry_dir
from mammosearch.embed.registry import register_model
from mammosearch.pipeline.process import process_pending
from mammosearch.search.vote import reliability_table
from mammosearch.train import auto
from tests.e2e import test_web_browser as shared
from tests.e2e.serving import serving
from tests.e2e.test_web_browser import ARTIFACTS, E2E_STUDY_PREFIX, _sign_in
from tests.e2e.waiting import page_wait
from tests.factories import make_image, make_patient, make_user
from tests.unit.train.test_auto_train import StandInTrainer
from tests.unit.web_support import fresh_sqlite, make_settings

pytestmark = shared.pytestmark  # e2e, slow, skipped without Chromium
chrome = shared.chrome  # the headless Chromium fixture

PATIENTS = 6
MEASURED, UNMEASURED = "auto-12", "old-model"
GPU_SETTING = auto.choose_setting("cuda").to_dict()


def _table(seed: int) -> dict[str, Any]:
    """An out-of-fold reliability table as train's CV writes it (shares near their
    precision: high shares suggested, low ones uncertain)."""
    rng = np.random.default_rng(seed)
    shares = rng.uniform(0.3, 1.0, 240)
    correct = rng.uniform(size=240) < shares
    truth = rng.integers(0, 2, 240)
    table = reliability_table(shares, correct, truth).to_dict()
    recall = {"1": 0.72, "2": 0.41}
    return {**table, "suggestions": 240, "per_class_recall": recall,
            "balanced_accuracy": 0.565, "ece": 0.04, "rule": "similarity", "k": 10}  # fmt: skip


def _cv(with_tables: bool) -> dict[str, Any]:
    """A model's cross-validation record: figures per class, image and case level; the
    reliability tables only `with_tables` (a model from before them has none)."""

    def pooled(p5: float, per_class: dict[str, float], tables: bool) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "metrics": {"precision@5": p5, "ndcg@5": p5 + 0.01, "vote_accuracy": p5 + 0.05,
                        "vote_balanced_accuracy": p5 - 0.1},
            "per_class_precision@5": {"similarity": per_class},
            "vote_per_class_recall": {"1": p5 + 0.2, "2": p5 - 0.2},
        }  # fmt: skip
        if tables:
            figures["vote_reliability"] = _table(int(p5 * 1000))
        return figures

    def case(p5: float, tables: bool) -> dict[str, Any]:
        return {"mean": {"queries": 6, "metrics": {"precision@5": p5, "ndcg@5": p5},
                         **({"vote_reliability": _table(7)} if tables else {})}}  # fmt: skip

    trained = pooled(0.44, {"1": 0.61, "2": 0.27}, with_tables)
    base = pooled(0.30, {"1": 0.47, "2": 0.13}, with_tables)
    return {
        "label": "birads", "folds": 5, "protocol": "patient-excluded",
        "trained": trained, "base": base,
        "trained_archive": pooled(0.47, {"1": 0.63, "2": 0.31}, with_tables),
        "base_archive": pooled(0.33, {"1": 0.5, "2": 0.16}, with_tables),
        "trained_case": case(0.42, with_tables), "base_case": case(0.31, with_tables),
        "per_fold": [{"fold": n, "trained": {"precision@5": 0.44 + d},
                      "base": {"precision@5": 0.30}} for n, d in enumerate((-0.02, 0, 0.02))],
    }  # fmt: skip


def _register(settings: Settings, name: str, seed: int, cv: dict[str, Any],
              setting: dict[str, Any] | None) -> None:  # fmt: skip
    """A tiny real ONNX model in the registry, as a finished training leaves it."""
    out = settings.data_dir / "staging" / name
    with session_scope(settings.database_url) as session:
        written = StandInTrainer(cv, seed=seed)(
            session, None, out, "test", name=name, status=lambda *_: None, setting=setting
        )
    register_model(written, registry_dir(settings), name)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[str, Settings]]:
    """`mammosearch serve` (the serving space chosen by activation) over 12 images of 6
    patients, served from UNMEASURED's space; MEASURED registered, not embedded yet."""
    root = tmp_path_factory.mktemp("e2e-models")
    settings = make_settings(
        root / "data", fresh_sqlite(sqlite_template, root / "db"), backbone="auto",
        auto_train=False,
    )  # fmt: skip
    session = make_session_factory(settings.database_url)()
    for number in range(PATIENTS):
        patient = make_patient(session, f"M-{number}")
        for view_index, view in enumerate(("CC", "MLO")):
            make_image(
                session, settings, patient, seed=60 + 10 * number + view_index, view=view,
                birads=1 + number % 2, side="LR"[number % 2],
                pathology=("Benign", "Malignant")[number % 2],
                study_instance_uid=f"{E2E_STUDY_PREFIX}{60 + number}",
            )  # fmt: skip
    make_user(session, "rad", "radiologist")
    make_user(session, "boss", "admin")
    session.close()
    assert process_pending(settings).indexed == 2 * PATIENTS  # the base space
    _register(settings, UNMEASURED, 1, _cv(with_tables=False), None)
    _register(settings, MEASURED, 2, _cv(with_tables=True), GPU_SETTING)
    auto.switch_space(settings, UNMEASURED)
    cv = _cv(with_tables=True)
    auto.write_state(settings, {
        **auto.read_state(settings), "state": "waiting",
        "check": {"reason": "12 BIRADS-labelled images in 2 classes; training starts at 200"},
        "run": {"model": MEASURED, "images": 12, "setting": GPU_SETTING},
        "verdict": auto.judge(cv, 0.015).to_dict(),
    })  # fmt: skip
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("MAMMOSEARCH_AUTO_TRAIN", "0")  # no watcher: the page switches
        with serving(settings, root) as base_url:
            yield base_url, settings


def _search(chrome, server: str, unit: str) -> Any:  # type: ignore[no-untyped-def]
    """A search by archived image 1 in `unit`; the BIRADS vote panel."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select

    wait = page_wait(chrome, 90)
    chrome.get(f"{server}/search")
    wait.until(ready.presence_of_element_located((By.ID, "image_id")))
    chrome.find_element(By.ID, "image_id").send_keys("1")
    Select(chrome.find_element(By.ID, "unit")).select_by_value(unit)
    chrome.find_element(By.ID, "search").click()
    wait.until(ready.presence_of_element_located((By.ID, "suggestion")))
    panel = chrome.find_element(By.ID, "birads-vote")
    chrome.execute_script("arguments[0].scrollIntoView()", panel)
    return panel


def test_an_unmeasured_space_lists_the_neighbours_and_suggests_nothing(
    served: tuple[str, Settings],
    chrome,  # type: ignore[no-untyped-def]
) -> None:
    """The serving trained space has no reliability table: image and case searches both
    show the neighbours' counts and "No suggestion", never a class in large type."""
    from selenium.webdriver.common.by import By

    server, _settings = served
    _sign_in(chrome, server, "rad")
    ARTIFACTS.mkdir(exist_ok=True)
    for unit in ("image", "case"):
        panel = _search(chrome, server, unit)
        assert panel.get_attribute("data-status") == "unmeasured", unit
        assert chrome.find_element(By.ID, "birads-suggested").text == "No suggestion"
        assert "has not been measured" in panel.find_element(By.CLASS_NAME, "vote-sureness").text
        assert chrome.find_elements(By.CSS_SELECTOR, "#birads-counts tbody tr")
        assert not chrome.find_elements(By.CSS_SELECTOR, "#birads-vote .suggested")
        chrome.find_element(By.ID, "suggestion").screenshot(
            str(ARTIFACTS / f"suggestion-unmeasured-{unit}.png")
        )


def _models_page(chrome, server: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready

    chrome.get(f"{server}/admin/models")
    page_wait(chrome, 60).until(ready.presence_of_element_located((By.ID, "reliability")))


def _measured_views(chrome, space_id: int) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    return {
        (view.get_attribute("data-unit"), view.get_attribute("data-label"))
        for view in chrome.find_elements(
            By.CSS_SELECTOR, f"#reliability-space-{space_id} figure[data-measured='yes']"
        )
    }


def _space_of(chrome, name: str) -> int | None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    for summary in chrome.find_elements(By.CSS_SELECTOR, "#reliability details summary"):
        if f"({name})" in summary.text:
            details = summary.find_element(By.XPATH, "..")
            return int(details.get_attribute("id").rsplit("-", 1)[1])
    return None


def _until(condition, what: str, timeout_s: float, refresh) -> None:  # type: ignore[no-untyped-def]
    """Retry until `condition` holds or the deadline passes; a page still navigating (its
    elements gone stale or not there yet) counts as "not yet", never as a failure."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except (StaleElementReferenceException, NoSuchElementException):
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)
        refresh()


def test_the_models_page_compares_spaces_and_switches_to_a_measured_one(
    served: tuple[str, Settings],
    chrome,  # type: ignore[no-untyped-def]
) -> None:
    """The admin sees each space's reliability tables (the base space's measured by the
    server's sweep in both units, the serving model's unmeasured), the spaces side by side
    per class, the setting and device of the last run; activates the measured model from the
    page; the radiologist's panel then speaks from its tables in both units."""
    from selenium.webdriver.common.by import By

    server, _settings = served
    _sign_in(chrome, server, "boss")
    _models_page(chrome, server)
    base_id = _space_of(chrome, "efficientnet-lite0")
    assert base_id is not None
    everything = {(u, label) for u in ("image", "case") for label in ("birads", "pathology")}
    _until(lambda: _measured_views(chrome, base_id) == everything,
           "the sweep to measure the base space's image and case votes", 180,
           lambda: _models_page(chrome, server))  # fmt: skip
    unmeasured_id = _space_of(chrome, UNMEASURED)
    assert unmeasured_id is not None and _measured_views(chrome, unmeasured_id) == set()
    serving = chrome.find_element(By.ID, f"reliability-space-{unmeasured_id}")
    assert "serving: 0 of 4 tables measured" in serving.text
    assert "Not measured: an image search here lists the neighbours' labels" in serving.text
    base = chrome.find_element(By.ID, f"reliability-space-{base_id}")
    base.find_element(By.TAG_NAME, "summary").click()  # open it, as a reader would
    assert len(base.find_elements(By.CSS_SELECTOR, "svg.reliability")) == 4
    assert base.find_elements(By.CSS_SELECTOR, "table.reliability-table tbody tr")

    setting = chrome.find_element(By.ID, "auto-setting").text
    assert "strongest measured" in setting and "cuda" in setting and "CUDA GPU" in setting
    compare = chrome.find_element(
        By.CSS_SELECTOR, "table.compare[data-label='birads'][data-unit='image']"
    )
    headers = compare.find_element(By.TAG_NAME, "thead").text
    assert f"{MEASURED} (no space yet)" in headers and "efficientnet-lite0" in headers
    assert f"space {unmeasured_id} ({UNMEASURED})" in headers
    assert "P@5, class 1" in compare.text and "vote recall, class 2" in compare.text
    assert "0.610" in compare.text  # the measured model's out-of-fold P@5 of class 1
    assert chrome.find_elements(By.CSS_SELECTOR, "table.compare[data-unit='case']")
    models = chrome.find_element(By.XPATH, "//h2[text()='Registered models']/..").text
    assert "strongest measured on cuda" in models
    ARTIFACTS.mkdir(exist_ok=True)
    height = chrome.execute_script("return document.body.scrollHeight")
    chrome.set_window_size(1400, min(height + 100, 8000))
    chrome.save_screenshot(str(ARTIFACTS / "models-page.png"))
    chrome.find_element(By.ID, "reliability").screenshot(str(ARTIFACTS / "models-reliability.png"))
    chrome.find_element(By.ID, "compare").screenshot(str(ARTIFACTS / "models-compare.png"))

    activate = chrome.find_element(
        By.XPATH, f"//input[@name='backbone'][@value='{MEASURED}']/../button[@type='submit']"
    )
    chrome.execute_script("arguments[0].scrollIntoView()", activate)
    activate.click()
    _until(lambda: (_space_of(chrome, MEASURED) is not None
                    and "serving" in chrome.find_element(
                        By.ID, f"reliability-space-{_space_of(chrome, MEASURED)}")
                    .find_element(By.TAG_NAME, "summary").text),
           f"{MEASURED} to serve", 120, lambda: _models_page(chrome, server))  # fmt: skip
    measured_id = _space_of(chrome, MEASURED)
    assert _measured_views(chrome, measured_id) == {("image", "birads"), ("case", "birads")}
    assert chrome.find_element(By.ID, "rollback").text == f"Roll back to {UNMEASURED}"
    chrome.find_element(By.ID, f"reliability-space-{measured_id}").screenshot(
        str(ARTIFACTS / "models-reliability-trained.png")
    )
    chrome.find_element(By.ID, "logout").click()

    _sign_in(chrome, server, "rad")
    for unit, asked in (("image", "images"), ("case", "cases")):
        panel = _search(chrome, server, unit)
        status = panel.get_attribute("data-status")
        assert status in ("suggested", "uncertain"), (unit, status)
        sureness = panel.find_element(By.CLASS_NAME, "vote-sureness").text
        assert f"of unseen patients' {asked}" in sureness or "split" in sureness, sureness
        measured = panel.find_element(By.CLASS_NAME, "measured").text
        assert "cross-validation" in measured and MEASURED in measured
        if unit == "case":
            assert "cases by mean" in measured
        large = chrome.find_elements(By.CSS_SELECTOR, "#birads-vote .suggested")
        assert bool(large) == (status == "suggested")
        chrome.find_element(By.ID, "suggestion").screenshot(
            str(ARTIFACTS / f"suggestion-measured-{unit}.png")
        )
