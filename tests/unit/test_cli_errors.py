"""The command line answers set-up mistakes with one actionable line, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mammosearch.cli import main
from mammosearch.config import get_settings


def _run(monkeypatch: pytest.MonkeyPatch, url: str, *args: str):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(main, list(args))
    finally:
        get_settings.cache_clear()


def test_unmigrated_database_says_to_run_db_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run(monkeypatch, f"sqlite:///{tmp_path / 'empty.sqlite3'}", "status")
    assert result.exit_code == 1
    assert "run `mammosearch db upgrade`" in result.output


def test_unreachable_server_names_the_url_without_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = _run(monkeypatch, "postgresql+psycopg://u:secret@127.0.0.1:1/x", "status")
    assert result.exit_code == 1
    assert "127.0.0.1:1" in result.output and "secret" not in result.output


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
