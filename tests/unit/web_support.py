"""Fixtures and row factories for the web tests (registered in tests/conftest.py)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import Image, Patient, Report, Segmentation, User
from mammosearch.db.session import make_session_factory
from mammosearch.ingest.storage import check_image, store_image
from mammosearch.users import create_user
from web import create_app

TEST_PASSWORD = "correct horse battery"


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


def synthetic_image_bytes(seed: int, size: tuple[int, int] = (96, 128), fmt: str = "PNG") -> bytes:
    """A grey image with a few bright blobs: distinct per seed, stable across runs."""
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = rng.normal(40, 10, (height, width))
    for _ in range(3):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(6, 24)
        pixels += 180 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    buffer = io.BytesIO()
    PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def make_user(
    session: Session, username: str = "rad", role: str = "radiologist",
    password: str = TEST_PASSWORD,
) -> User:
    user = create_user(session, username, password, role)
    session.commit()
    return user


def make_patient(session: Session, source_patient_id: str = "P1", age: int | None = 50) -> Patient:
    patient = Patient(source="test", source_patient_id=source_patient_id, age=age)
    session.add(patient)
    session.commit()
    return patient


def make_image(
    session: Session, settings: Settings, patient: Patient, seed: int = 0, **labels: Any
) -> Image:
    """A stored synthetic PNG and its row (status pending unless `labels` says otherwise)."""
    name = f"{patient.source_patient_id}_{seed}.png"
    checked = check_image(synthetic_image_bytes(seed), name)
    path = store_image(settings.images_dir, checked)
    values: dict[str, Any] = {
        "side": "L", "view": "CC", "modality": "subtracted", "birads": 2,
        "pathology": "Benign", "findings": f"finding {seed}", **labels,
    }
    image = Image(
        patient_id=patient.id, source="test", source_file_name=name, sha256=checked.sha256,
        stored_path=str(path), width=checked.width, height=checked.height, **values,
    )
    session.add(image)
    session.commit()
    return image


def add_report(session: Session, patient: Patient, text: str) -> Report:
    report = Report(patient_id=patient.id, source_file="report.docx", sha256="ab" * 32, text=text)
    session.add(report)
    session.commit()
    return report


def add_polygon(session: Session, image: Image, xs: list[int], ys: list[int]) -> Segmentation:
    region = Segmentation(
        image_id=image.id, region_index=0,
        shape={"name": "polygon", "all_points_x": xs, "all_points_y": ys},
    )
    session.add(region)
    session.commit()
    return region


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
