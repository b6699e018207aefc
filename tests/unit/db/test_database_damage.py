"""A damaged SQLite file of the embedded default is a clear error naming it, never a
traceback: under the command line and under a running server."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from mammosearch.cli import main
from mammosearch.config import get_settings
from tests.unit.web_support import app_config, make_settings
from web import create_app


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


DAMAGE: dict[str, Callable[[Path], None]] = {"truncated": _truncate, "garbage": _garbage}


@pytest.fixture(params=DAMAGE)
def damaged_file(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> Path:
    """The embedded default's database file (data dir/mammosearch.sqlite3), damaged."""
    path = tmp_path / "data" / "mammosearch.sqlite3"
    path.parent.mkdir()
    path.write_bytes(sqlite_template.read_bytes())
    DAMAGE[request.param](path)
    return path


@pytest.mark.parametrize("command", [["status"], ["users", "list"]])
def test_the_cli_names_the_damaged_file(
    damaged_file: Path, command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAMMOSEARCH_DATA_DIR", str(damaged_file.parent))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("MAMMOSEARCH_BACKBONE", "efficientnet-lite0")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, command)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert f"the database file {damaged_file} is damaged" in result.output
    assert "restore it from a backup" in result.output and "Traceback" not in result.output


def test_the_server_answers_503_naming_the_file(damaged_file: Path) -> None:
    """Pages, the API and /readyz: 503 naming the file (not its path: answers leave the host)."""
    settings = make_settings(damaged_file.parent, f"sqlite:///{damaged_file}")
    client = create_app(app_config(settings)).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert (
        "mammosearch.sqlite3 (in MAMMOSEARCH_DATA_DIR) is damaged"
        in (ready.json["checks"]["database"]["error"])
    )
    page = client.post("/login", data={"username": "rad", "password": "x"})
    api = client.post("/api/v1/search", json={"image_id": 1}, headers={"Authorization": "Bearer x"})
    for response in (page, api):
        body = response.get_data(as_text=True)
        assert response.status_code == 503, body
        assert "mammosearch.sqlite3 (in MAMMOSEARCH_DATA_DIR) is damaged" in body
        assert str(damaged_file.parent) not in body
