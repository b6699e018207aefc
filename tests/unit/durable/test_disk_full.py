"""A full disk says what is full and where (the database file, the data directory), in the
CLI and on the web, instead of "check DATABASE_URL and that the server is running".

SQLite's own SQLITE_FULL is produced for real: the database is filled up to a page limit
(`PRAGMA max_page_count`, set on every connection), as a full disk would stop it growing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import event
from sqlalchemy.engine import Engine

from mammosearch.cli import main
from mammosearch.config import Settings
from mammosearch.db.session import clear_engines
from mammosearch.durable.disk_full import full_disk_message
from tests.factories import TEST_PASSWORD
from tests.unit.web_support import app_config, login
from web import create_app

PASSWORD = "s3cret-pass-words"


def _fill_to_the_limit(database_file: Path) -> int:
    """Grow the file until SQLite says it is full at its current size; that page count."""
    connection = sqlite3.connect(database_file, isolation_level=None)
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")
    connection.execute("PRAGMA synchronous = OFF")  # a test's scratch file: no fsync per row
    filler = {
        "users": "INSERT INTO users (username, username_key, password_hash, role, active, "
                 "created_at, session_version, must_change_password, failed_sign_ins) VALUES "
                 "(?, ?, 'x', 'radiologist', 1, CURRENT_TIMESTAMP, 0, 0, 0)",
        "audit_events": "INSERT INTO audit_events (username, action, detail, created_at) "
                        "VALUES (?, 'filler', '{}', CURRENT_TIMESTAMP)",
    }  # fmt: skip
    for table, statement in filler.items():
        for number in range(100_000):
            name = f"f{number}"
            values = (name, name) if table == "users" else (name,)
            try:
                connection.execute(statement, values)
            except sqlite3.OperationalError as exc:
                assert "database or disk is full" in str(exc)
                break
    connection.close()
    return pages


@pytest.fixture
def full_database(settings: Settings) -> Iterator[Path]:
    """The test's SQLite file, full: no connection may grow it past its size."""
    database_file = Path(settings.database_url.split("///", 1)[1])
    pages = _fill_to_the_limit(database_file)

    def limit(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    clear_engines()
    event.listen(Engine, "connect", limit)
    yield database_file
    event.remove(Engine, "connect", limit)
    clear_engines()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_cli_says_the_database_files_disk_is_full(full_database: Path) -> None:
    """`users create` on a full database names the file and the space left, exit 1."""
    result = CliRunner().invoke(
        main, ["users", "create", "newcomer", "--role", "radiologist", "--password-stdin"],
        input=f"{PASSWORD}\n",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"the disk holding the database file {full_database} is full" in result.output
    assert "MiB free there" in result.output and "nothing was saved" in result.output
    assert "check DATABASE_URL" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_web_says_the_database_files_disk_is_full(
    settings: Settings, full_database: Path
) -> None:
    """A sign-in that cannot write its audit row answers 507 naming the file, not a 500."""
    client = create_app(app_config(settings)).test_client()
    response = login(client, "f1", TEST_PASSWORD)  # a filler user: the password is wrong
    assert response.status_code == 507
    page = response.get_data(as_text=True)
    assert f"the disk holding the database file {full_database} is full" in page


def test_a_file_write_on_a_full_disk_names_the_file(web_settings: Settings) -> None:
    """ENOSPC from a real device that is always full (/dev/full) names the path."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    with pytest.raises(OSError) as caught, open("/dev/full", "wb", buffering=0) as full:
        full.write(b"x")
    caught.value.filename = "/dev/full"
    message = full_disk_message(caught.value, web_settings)
    assert message is not None
    assert message.startswith("no space left on the disk holding /dev/full")
    assert f"now {web_settings.data_dir}" in message
    assert full_disk_message(ValueError("not a disk"), web_settings) is None
