"""The Models page's switches (activate, roll back, delete, check now) and the training banner."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from mammosearch.config import Settings
from mammosearch.db.session import session_scope
from mammosearch.durable.file_lock import exclusive_file_lock
from mammosearch.embed.serving_record import read_serving
from mammosearch.train import auto
from tests.factories import make_user
from tests.unit.train.test_auto_train import WINS, StandInTrainer, _add_images
from tests.unit.web_support import app_config, login
from web import create_app


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _register(settings: Settings, name: str, seed: int = 1) -> None:
    """A tiny real model in the registry, as a finished training leaves it."""
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.registry import register_model

    trainer = StandInTrainer(WINS, seed=seed)
    out = settings.data_dir / "staging" / name
    with session_scope(settings.database_url) as session:
        written = trainer(session, None, out, "test", name=name, status=lambda *_: None)
    register_model(written, registry_dir(settings), name)


@pytest.fixture
def auto_settings(web_settings: Settings) -> Settings:
    """The web test settings, the serving space chosen by activation (`auto`), 8 labelled
    images (not embedded: a test that switches embeds them first)."""
    settings = web_settings.with_overrides(backbone="auto")
    _add_images(settings, 8)
    return settings


@pytest.fixture
def auto_app(auto_settings: Settings) -> Flask:
    return create_app(app_config(auto_settings))


@pytest.fixture
def boss(auto_app: Flask, auto_settings: Settings) -> FlaskClient:
    """The admin signed in on `auto_app`."""
    from mammosearch.db.session import make_session_factory

    session = make_session_factory(auto_settings.database_url)()
    make_user(session, "boss", "admin")
    session.close()
    client = auto_app.test_client()
    assert login(client, "boss").status_code == 302
    return client


def _serving(settings: Settings) -> str | None:
    record = read_serving(settings.data_dir)
    return record["backbone"] if record else None


def test_activate_roll_back_and_delete_from_the_models_page(
    boss: FlaskClient, auto_settings: Settings
) -> None:
    from mammosearch.pipeline.process import process_pending

    process_pending(auto_settings)  # the base space serves them
    _register(auto_settings, "site-v1")
    page = boss.get("/admin/models").get_data(as_text=True)
    assert 'name="backbone" value="site-v1"' in page and "against the base space, per class" in page

    assert boss.post("/admin/models/activate", data={"backbone": "site-v1"}).status_code == 302
    _wait_for(lambda: _serving(auto_settings) == "site-v1", "the switch to site-v1")
    _wait_for(lambda: auto.read_state(auto_settings).get("state") == "activated", "its record")
    page = boss.get("/admin/models").get_data(as_text=True)
    assert "Roll back to auto" in page and "site-v1 activated by an admin" in page
    refused = boss.post("/admin/models/registry/site-v1/delete", follow_redirects=True)
    assert "serves search now" in refused.get_data(as_text=True)

    assert boss.post("/admin/models/rollback").status_code == 302
    _wait_for(lambda: _serving(auto_settings) == "auto", "the rollback")
    _wait_for(lambda: auto.read_state(auto_settings).get("state") == "rolled-back", "its record")

    deleted = boss.post("/admin/models/registry/site-v1/delete", follow_redirects=True)
    text = deleted.get_data(as_text=True)
    assert "Space 2 deleted (8 vectors) and model site-v1 unregistered." in text
    assert not (auto_settings.data_dir / "models" / "registry" / "site-v1").exists()


def test_a_switch_to_an_unknown_space_is_refused(boss: FlaskClient) -> None:
    answer = boss.post(
        "/admin/models/activate", data={"backbone": "../elsewhere"}, follow_redirects=True
    )
    assert "../elsewhere is not a space or model on this page" in answer.get_data(as_text=True)
    assert boss.post("/admin/models/registry/nothing-here/delete").status_code == 404


def test_check_now_records_why_nothing_trains(boss: FlaskClient, auto_settings: Settings) -> None:
    assert boss.post("/admin/models/auto-train").status_code == 302
    _wait_for(lambda: auto.read_state(auto_settings).get("state") == "waiting", "the check")
    page = boss.get("/admin/models").get_data(as_text=True)
    assert "8 BIRADS-labelled images in 2 classes; training starts at 200" in page


def test_the_banner_shows_a_run_while_it_holds_its_lock(
    boss: FlaskClient, auto_settings: Settings
) -> None:
    auto.write_state(auto_settings, {
        "state": "training", "run": {"model": "auto-8"}, "previous_backbone": "auto",
        "progress": {"stage": "fold 2/5", "epoch": 3, "epochs": 15, "fold": 2, "folds": 5,
                     "eta_s": 720},
    })  # fmt: skip
    stale = boss.get("/search").get_data(as_text=True)
    assert "training-banner" not in stale  # its process died: it resumes at the next check
    with exclusive_file_lock(auto.lock_path(auto_settings), "automatic training"):
        text = boss.get("/search").get_data(as_text=True)
        assert "training-banner" in text
        assert "training auto-8: fold 2/5, epoch 3/15, about 12 min left" in text
        followed = boss.get("/admin/models/auto-train").get_json()
        assert followed["under_way"] and followed["progress"]["eta_s"] == 720
        assert followed["summary"] == "training auto-8: fold 2/5, epoch 3/15, about 12 min left"
        busy = boss.post("/admin/models/rollback", follow_redirects=True)
    assert "A training or a switch is under way" in busy.get_data(as_text=True)
    assert _serving(auto_settings) is None


def test_radiologists_cannot_switch_spaces(auto_app: Flask, auto_settings: Settings) -> None:
    from mammosearch.db.session import make_session_factory

    session = make_session_factory(auto_settings.database_url)()
    make_user(session, "rad", "radiologist")
    session.close()
    client = auto_app.test_client()
    login(client, "rad")
    for path in ("/admin/models/activate", "/admin/models/rollback", "/admin/models/auto-train"):
        assert client.post(path, data={"backbone": "auto"}).status_code in (302, 403)
    assert _serving(auto_settings) is None
