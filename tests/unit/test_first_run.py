"""A first run on the embedded defaults: the SQLite database makes itself; the import summary
speaks calmly of the low-energy rows a subtracted-only export lacks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from mammosearch.cli.ingest_commands import ingest
from mammosearch.config import get_settings
from mammosearch.db import migrate
from mammosearch.db.session import get_engine, make_session_factory
from mammosearch.ingest.import_record import last_import
from tests.unit.ingest.test_cdd_cesm_importer import jpeg, make_folder, row


@pytest.fixture
def fresh_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The embedded default: no DATABASE_URL, an empty data directory."""
    data_dir = tmp_path / "new-data"
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("MAMMOSEARCH_DATA_DIR", str(data_dir))
    monkeypatch.delenv("MAMMOSEARCH_BIRADS_RULE", raising=False)
    get_settings.cache_clear()
    yield data_dir
    get_settings.cache_clear()
    getattr(get_engine, "cache_clear", lambda: None)()  # cached or not, as session.py has it


def test_ingest_on_a_new_data_directory_makes_its_database_and_records_the_import(
    tmp_path: Path, fresh_data_dir: Path
) -> None:
    """No `db upgrade` first: the SQLite file is created at the head revision; 500 DM rows
    are one calm line, a missing subtracted image is still named."""
    rows = [row("P2_R_CM_CC"), row("P3_L_CM_MLO")]
    rows += [row(f"P{n}_R_DM_CC", kind="DM") for n in range(10, 510)]
    folder = make_folder(tmp_path, rows, {"P2_R_CM_CC.jpg": jpeg(1)})
    result = CliRunner().invoke(ingest, ["cdd-cesm", str(folder), "--no-progress", "--no-process"])
    assert result.exit_code == 0, result.output
    url = get_settings().database_url
    assert url.startswith("sqlite") and (fresh_data_dir / "mammosearch.sqlite3").exists()
    assert "database created at revision" in result.output
    assert migrate.current_revision(url) is not None
    assert "images: 1 new, 0 updated, 0 unchanged, 1 missing, 0 rejected" in result.output
    assert (
        "500 sheet rows describe low-energy images, which this folder does not hold "
        "(expected for a subtracted-only export)"
    ) in result.output
    assert "missing: 1 sheet rows name images not in the folder: P3_L_CM_MLO" in result.output
    assert "P10_R_DM_CC" not in result.output
    with make_session_factory(url)() as session:
        recorded = last_import(session)
    assert recorded is not None and recorded["folder"] == "cdd-cesm"
    assert recorded["counts"]["new"] == 1 and recorded["counts"]["missing"] == 1
    assert str(tmp_path) not in str(recorded)
    again = CliRunner().invoke(ingest, ["cdd-cesm", str(folder), "--no-progress", "--no-process"])
    assert again.exit_code == 0 and "database created" not in again.output


def test_postgres_is_not_migrated_by_ingest(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared PostgreSQL database is the operator's to migrate (`mammosearch db upgrade`)."""
    from mammosearch.cli import db_commands
    from mammosearch.config import Settings
    from mammosearch.db import migrate

    called = []
    monkeypatch.setattr(migrate, "upgrade", lambda *a, **k: called.append(a))
    db_commands.migrate_embedded_database(
        Settings(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    )
    assert called == []
