"""Usernames compare case-insensitively after NFKC: two users cannot differ only in case or
Unicode form, sign-in finds either spelling, and the migration refuses existing clashes."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from mammosearch.access.users import UserError, create_user, sign_in, username_key
from mammosearch.cli import main
from mammosearch.config import get_settings
from mammosearch.db import migrate
from tests.conftest import create_pg_database, drop_pg_database

PASSWORD = "s3cret-pass-words"
BEFORE_USERNAME_KEYS = "5c1e7a9d2b40"


def test_names_differing_only_in_case_or_unicode_form_are_one_user(session: Session) -> None:
    """ADMIN1, a full-width ａｄｍｉｎ１ and ' admin1 ' are refused once admin1 exists,
    whatever role they ask for; the message names the existing user."""
    create_user(session, "admin1", PASSWORD, "admin")
    session.commit()
    for twin in ("ADMIN1", "Admin1", "ａｄｍｉｎ１", " admin1 "):
        with pytest.raises(UserError, match="already exists"):
            create_user(session, twin, PASSWORD, "radiologist")
    create_user(session, "Strauß", PASSWORD, "radiologist")
    with pytest.raises(UserError, match="'Strauß'"):
        create_user(session, "STRAUSS", PASSWORD, "radiologist")


def test_sign_in_ignores_case_and_unicode_form(session: Session) -> None:
    """The user signs in with any spelling of the name; the stored name is kept as made."""
    create_user(session, "Dr.Ana", PASSWORD, "radiologist")
    session.commit()
    for spelling in ("dr.ana", "DR.ANA", "Ｄｒ．Ａｎａ"):
        attempt = sign_in(session, spelling, PASSWORD)
        assert attempt.user is not None and attempt.user.username == "Dr.Ana", spelling
    assert username_key("Ｄｒ．Ａｎａ") == username_key("DR.ANA") == "dr.ana"


def test_the_cli_refuses_a_case_twin(session: Session, settings) -> None:  # type: ignore[no-untyped-def]
    """`users create ADMIN1` next to admin1 exits 1 with the reason, and adds nobody."""
    create_user(session, "admin1", PASSWORD, "admin")
    session.commit()
    result = CliRunner().invoke(
        main, ["users", "create", "ADMIN1", "--role", "radiologist"], input=f"{PASSWORD}\n" * 2
    )
    assert result.exit_code == 1 and "already exists as 'admin1'" in result.output


def _database_before_username_keys(url: str, names: list[str]) -> None:
    migrate.upgrade(url, BEFORE_USERNAME_KEYS)
    engine = create_engine(url)
    with engine.begin() as connection:
        for name in names:
            connection.execute(
                text("INSERT INTO users (username, password_hash, role, active, created_at) "
                     "VALUES (:name, 'x', 'radiologist', true, CURRENT_TIMESTAMP)"),
                {"name": name},
            )  # fmt: skip
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A database with no tables: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.sqlite3'}"
        return
    name, url = create_pg_database("msuser")
    yield url
    drop_pg_database(name)


def test_migration_refuses_existing_case_twins_naming_them(empty_url: str) -> None:
    """Users admin1 and ADMIN1 made before the rule: the upgrade stops, names both with their
    ids, changes nothing; once one is renamed it goes through and the rule holds."""
    _database_before_username_keys(empty_url, ["admin1", "ADMIN1", "rad"])
    with pytest.raises(migrate.MigrationRefused, match=r"'admin1' \(id 1\) and 'ADMIN1' \(id 2\)"):
        migrate.upgrade(empty_url)
    assert migrate.current_revision(empty_url) == BEFORE_USERNAME_KEYS
    engine = create_engine(empty_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE users SET username = 'admin1-old' WHERE id = 2"))
    migrate.upgrade(empty_url)
    with engine.connect() as connection:
        keys = connection.execute(text("SELECT username_key FROM users ORDER BY id")).scalars()
        assert list(keys) == ["admin1", "admin1-old", "rad"]
    with Session(engine) as session, pytest.raises(UserError, match="already exists"):
        create_user(session, "RAD", PASSWORD, "admin")
    engine.dispose()


def test_db_upgrade_reports_the_clash_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mammosearch db upgrade` exits 1 with the migration's message."""
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    _database_before_username_keys(url, ["ana", "ANA"])
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("MAMMOSEARCH_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["db", "upgrade"])
    get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert "'ana' (id 1) and 'ANA' (id 2)" in result.output
    assert "Traceback" not in result.output
