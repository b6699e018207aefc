"""Fixtures for the web tests (registered in tests/conftest.py); rows come from tests/factories."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import User
from mammosearch.db.session import make_session_factory
from tests.factories import TEST_PASSWORD, make_user
from web import create_app


def make_settings(data_dir: Path, database_url: str, **changes: Any) -> Settings:
    """Test settings: a real small backbone (efficientnet-lite0), both metrics, no broker."""
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        backbone="efficientnet-lite0",
        allow_random_weights=True,
        index_metrics=("l2", "cosine"),
        embed_batch_size=8,
        secret_key="test-secret",
        max_upload_bytes=2 * 1024 * 1024,
    ).with_overrides(**changes)


def fresh_sqlite(template: Path, directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "mammosearch.sqlite3"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


def app_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    return {
        "TESTING": True,
        "SETTINGS": settings,
        "WTF_CSRF_ENABLED": False,
        "RATELIMIT_STORAGE_URI": "memory://",
        **extra,
    }


def login(client: FlaskClient, username: str, password: str = TEST_PASSWORD) -> Any:
    return client.post("/login", data={"username": username, "password": password})


@pytest.fixture
def web_settings(tmp_path: Path, sqlite_template: Path) -> Settings:
    """Settings on a fresh migrated SQLite file and an empty data dir under tmp_path."""
    return make_settings(tmp_path / "data", fresh_sqlite(sqlite_template, tmp_path / "db"))


@pytest.fixture
def app(web_settings: Settings) -> Flask:
    """The Flask app on the test database (CSRF off; tests of CSRF turn it on)."""
    return create_app(app_config(web_settings))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """An anonymous test client of `app`."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A CLI runner bound to `app`."""
    return app.test_cli_runner()


@pytest.fixture
def db(app: Flask) -> Iterator[Session]:
    """A session on the app's database, closed after the test."""
    session = make_session_factory(app.config["DATABASE_URL"])()
    yield session
    session.close()


@pytest.fixture
def radiologist(db: Session) -> User:
    """A radiologist named `rad` with TEST_PASSWORD."""
    return make_user(db, "rad", "radiologist")


@pytest.fixture
def admin(db: Session) -> User:
    """An admin named `boss` with TEST_PASSWORD."""
    return make_user(db, "boss", "admin")


@pytest.fixture
def radiologist_client(app: Flask, radiologist: User) -> FlaskClient:
    """A test client signed in as the radiologist."""
    signed_in = app.test_client()
    assert login(signed_in, radiologist.username).status_code == 302
    return signed_in


@pytest.fixture
def admin_client(app: Flask, admin: User) -> FlaskClient:
    """A test client signed in as the admin."""
    signed_in = app.test_client()
    assert login(signed_in, admin.username).status_code == 302
    return signed_in
