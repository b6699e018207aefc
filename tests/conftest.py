"""Shared fixtures: real PostgreSQL (a throw-away database per run), SQLite, settings, dev data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from mammosearch.config import Settings, get_settings, settings_from_env
from mammosearch.db import migrate
from mammosearch.db.models import Base
from mammosearch.db.session import clear_engines, get_engine, make_session_factory

# The web tests' fixtures (app, client, signed-in users, row factories), for every test.
pytest_plugins = ["tests.unit.web_support"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEV_DATA = Path(
    os.environ.get("MAMMOSEARCH_DEV_DATA", REPO_ROOT.parent / "shared" / "data" / "cdd-cesm-dev")
)
PG_ADMIN_DSN = os.environ.get(
    "MAMMOSEARCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("MAMMOSEARCH_TEST_REDIS", "redis://127.0.0.1:6379/11")

needs_dev_data = pytest.mark.skipif(
    not (DEV_DATA / "Radiology manual annotations.xlsx").exists(),
    reason=f"CDD-CESM dev data not found at {DEV_DATA}",
)


def sqlalchemy_pg_url(database: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{database}"


def create_pg_database(prefix: str = "mstest") -> tuple[str, str]:
    """Create a throw-away PostgreSQL database; returns (name, SQLAlchemy URL)."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, sqlalchemy_pg_url(name)


def drop_pg_database(name: str) -> None:
    clear_engines()
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A migrated throw-away PostgreSQL database for this test run, dropped afterwards."""
    name, url = create_pg_database()
    migrate.upgrade(url)
    yield url
    drop_pg_database(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file copied per test (migrating once keeps tests fast)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    migrate.upgrade(f"sqlite:///{path}")
    return path


def _truncate_all(url: str) -> None:
    engine = get_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database: once on SQLite, once on the real PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "mammosearch.sqlite3"
        path.write_bytes(request.getfixturevalue("sqlite_template").read_bytes())
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_database_url")
    _truncate_all(url)
    return url


@pytest.fixture
def pg_url(pg_database_url: str) -> str:
    """The real PostgreSQL test database, emptied for this test."""
    _truncate_all(pg_database_url)
    return pg_database_url


@pytest.fixture
def settings(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings for a test: its own data dir, the parametrised database, no broker."""
    return _settings_for(database_url, tmp_path, monkeypatch)


@pytest.fixture
def pg_settings(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings on the real PostgreSQL only (for tests too slow to run twice)."""
    return _settings_for(pg_url, tmp_path, monkeypatch)


def _settings_for(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("MAMMOSEARCH_DATA_DIR", str(data_dir))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    monkeypatch.setenv("MAMMOSEARCH_BACKBONE", os.environ.get("MAMMOSEARCH_BACKBONE", "auto"))
    # Torch models are cached per process; an ONNX export would be redone per data dir.
    monkeypatch.setenv("MAMMOSEARCH_EMBED_RUNTIME", "torch")
    get_settings.cache_clear()
    return settings_from_env()


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    """A session on the test database; rolled back and closed after the test."""
    db_session = make_session_factory(settings.database_url)()
    yield db_session
    db_session.rollback()
    db_session.close()


@pytest.fixture(scope="session")
def dev_data() -> Path:
    """The real CDD-CESM dev folder (skips the test when it is absent)."""
    if not (DEV_DATA / "Radiology manual annotations.xlsx").exists():
        pytest.skip(f"CDD-CESM dev data not found at {DEV_DATA}")
    return DEV_DATA


@pytest.fixture(scope="session")
def dev_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The real dev folder imported, embedded (efficientnet-lite0) and indexed once per run,
    on its own PostgreSQL database; tests read it and must not change it."""
    if not (DEV_DATA / "Radiology manual annotations.xlsx").exists():
        pytest.skip(f"CDD-CESM dev data not found at {DEV_DATA}")
    from mammosearch.db.session import session_scope
    from mammosearch.ingest.cdd_cesm import import_cdd_cesm
    from mammosearch.pipeline.process import process_pending

    name, url = create_pg_database("msdev")
    migrate.upgrade(url)
    archive_settings = Settings(
        data_dir=tmp_path_factory.mktemp("dev-archive"),
        database_url=url,
        backbone="efficientnet-lite0",
    )
    with session_scope(url) as db_session:
        import_cdd_cesm(db_session, DEV_DATA, archive_settings, progress=False)
    process_pending(archive_settings)
    yield archive_settings
    drop_pg_database(name)


@pytest.fixture
def no_weights_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No cached weights and no download, even on a machine with internet and a warm cache:
    TORCH_HOME is an empty folder, downloads raise, and no embedder is kept from before."""
    from mammosearch.embed import clear_embedder_cache
    from mammosearch.embed import weights as weights_module

    def blocked(url: str, destination: Path) -> Path:
        raise OSError(f"download of {url} blocked by the test")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.setattr(weights_module, "_download", blocked)
    clear_embedder_cache()
    yield tmp_path / "empty-torch-home" / "hub" / "checkpoints"
    clear_embedder_cache()


@pytest.fixture
def onnx_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty ONNX export folder, and no embedders cached from other tests."""
    from mammosearch.embed import clear_embedder_cache

    clear_embedder_cache()
    yield tmp_path / "onnx"
    clear_embedder_cache()
