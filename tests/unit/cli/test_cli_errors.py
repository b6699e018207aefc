"""The command line answers set-up mistakes with one actionable line, not a traceback."""

from __future__ import annotations

from pathlib import Path

import click
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


def _migrated_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_template: Path
) -> str:
    """An empty, migrated SQLite archive with its own data directory; its URL."""
    database = tmp_path / "db.sqlite3"
    database.write_bytes(sqlite_template.read_bytes())
    monkeypatch.setenv("MAMMOSEARCH_DATA_DIR", str(tmp_path / "data"))
    return f"sqlite:///{database}"


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


def test_an_unchecked_int8_backbone_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_template: Path
) -> None:
    """Not a traceback: the variant was never checked on this archive, and how to check it."""
    url = _migrated_archive(tmp_path, monkeypatch, sqlite_template)
    monkeypatch.setenv("MAMMOSEARCH_BACKBONE", "efficientnet-lite0:int8")
    result = _run(monkeypatch, url, "index", "stats")
    assert result.exit_code == 1, result.output
    assert "Error: no int8 model at" in result.output
    assert "mammosearch models quantize" in result.output and "Traceback" not in result.output


def test_a_loss_without_pairs_refuses_other_patients_positives_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_template: Path
) -> None:
    """Refused in the first second, naming the choices, not after minutes of trunk caching."""
    url = _migrated_archive(tmp_path, monkeypatch, sqlite_template)
    out = tmp_path / "model"
    result = _run(
        monkeypatch, url, "train", "--label", "birads", "--out", str(out),
        "--loss", "ce", "--positives", "other-patients",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "--positives other-patients: not with --loss ce" in result.output
    assert "supcon, ms, ce+supcon" in result.output and "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "model.work").exists()


def test_a_loss_without_pairs_refuses_breast_batches_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_template: Path
) -> None:
    """`--cases mean` with `--loss ce`: refused at once, naming the losses that can."""
    url = _migrated_archive(tmp_path, monkeypatch, sqlite_template)
    out = tmp_path / "model"
    result = _run(
        monkeypatch, url, "train", "--label", "birads", "--out", str(out),
        "--loss", "ce", "--cases", "mean",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "--cases mean: not with --loss ce" in result.output
    assert "supcon, ms, ce+supcon, supcon+xbm" in result.output
    assert not out.exists() and not (tmp_path / "model.work").exists()


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, (*prefix, name)))
    return paths


@pytest.mark.parametrize("path", _command_paths(main), ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_bootstrap_creates_one_admin_once(
    settings,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["users", "bootstrap"])
    assert first.exit_code == 0, first.output
    credentials = (settings.data_dir / "initial-admin.txt").read_text()
    assert "username: admin" in credentials
    assert (settings.data_dir / "initial-admin.txt").stat().st_mode & 0o077 == 0
    second = runner.invoke(main, ["users", "bootstrap"])
    assert "nothing to bootstrap" in second.output
