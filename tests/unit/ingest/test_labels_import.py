"""Labels that arrive after ingestion: a CSV attaches/corrects BIRADS and pathology."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mammosearch.config import get_settings
from mammosearch.db.models import Image, LabelEvent
from mammosearch.ingest.labels import LabelFileError, import_labels
from tests.dicom_samples import sqlite_session_factory
from tests.factories import make_bare_image, make_patient


@pytest.fixture
def session_factory(tmp_path: Path) -> sessionmaker[Session]:
    """A SQLite database holding patient P1 with two images and patient P2 with one."""
    factory = sqlite_session_factory(tmp_path)
    with factory() as session:
        p1 = make_patient(session, "P1", None, source="dicom", commit=False)
        p2 = make_patient(session, "P2", None, source="dicom", commit=False)
        for number, (patient, uid) in enumerate([(p1, "1.2.1"), (p1, "1.2.2"), (p2, "1.2.3")]):
            make_bare_image(
                session, patient, commit=False, source="dicom",
                source_file_name=f"file{number}.dcm", modality="MG", width=64, height=64,
                sop_instance_uid=uid, birads=2 if number == 2 else None,
                birads_raw="2" if number == 2 else None,
            )  # fmt: skip
        session.commit()
    return factory


def _write(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _events(session: Session) -> list[tuple[int, str, str | None, str | None, str]]:
    rows = session.scalars(select(LabelEvent).order_by(LabelEvent.id))
    return [(e.image_id, e.field, e.old_value, e.new_value, e.changed_by) for e in rows]


def test_labels_attach_with_one_event_per_change_and_reimport_changes_nothing(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    path = _write(tmp_path, "sop_instance_uid,birads,pathology\n1.2.1,4b,Malignant\n1.2.3,2,\n")
    with session_factory() as session:
        summary = import_labels(session, path, "dr.a")
        session.commit()
        assert (summary.rows, summary.events, summary.images_changed) == (2, 2, 1)
        assert summary.unchanged == 1 and summary.ok
        image = session.scalars(select(Image).where(Image.sop_instance_uid == "1.2.1")).one()
        assert (image.birads, image.birads_raw, image.pathology) == (4, "4b", "malignant")
        assert _events(session) == [
            (image.id, "birads", None, "4b", "dr.a"),
            (image.id, "pathology", None, "malignant", "dr.a"),
        ]
        assert session.scalars(select(LabelEvent.source_file)).first() == str(path)

        again = import_labels(session, path, "dr.b")
        session.commit()
        assert (again.events, again.images_changed, again.unchanged) == (0, 0, 2)
        assert session.scalar(select(func.count()).select_from(LabelEvent)) == 2


def test_a_correction_records_the_old_and_new_value(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        import_labels(session, _write(tmp_path, "sop_instance_uid,birads\n1.2.3,5\n"), "dr.c")
        session.commit()
        image = session.scalars(select(Image).where(Image.sop_instance_uid == "1.2.3")).one()
        assert (image.birads, image.birads_raw) == (5, "5")
        assert _events(session) == [(image.id, "birads", "2", "5", "dr.c")]


def test_a_patient_key_labels_every_image_of_that_patient(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        summary = import_labels(session, _write(tmp_path, "Patient ID,Pathology\nP1,benign\n"), "x")
        session.commit()
        assert (summary.events, summary.images_changed) == (2, 2)
        labelled = session.scalars(select(Image).where(Image.pathology == "benign")).all()
        assert sorted(i.sop_instance_uid for i in labelled) == ["1.2.1", "1.2.2"]


def test_unknown_keys_and_bad_birads_are_reported_by_row_and_skipped(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    text = "image_id,birads\n999,3\n1,7\n1,high\n2,3\n,2\n"
    with session_factory() as session:
        summary = import_labels(session, _write(tmp_path, text), "x")
        session.commit()
        assert summary.unknown_keys == ["row 2: unknown image_id '999'"]
        assert summary.errors[0].startswith("row 3: bad BIRADS '7' (expected one of 0...6")
        assert summary.errors[1].startswith("row 4: bad BIRADS 'high'")
        assert summary.errors[2] == "row 6: empty image_id"
        assert summary.events == 1 and not summary.ok
        assert session.get(Image, 2).birads == 3 and session.get(Image, 1).birads is None


def test_a_file_without_a_key_or_label_column_is_refused(tmp_path: Path) -> None:
    factory = sqlite_session_factory(tmp_path)
    with factory() as session:
        with pytest.raises(LabelFileError, match="no key column; expected one of image_id"):
            import_labels(session, _write(tmp_path, "name,birads\na,1\n"), "x")
        with pytest.raises(LabelFileError, match="no label column"):
            import_labels(session, _write(tmp_path, "image_id,notes\n1,x\n"), "x")


def test_labels_import_command_prints_a_summary_and_fails_on_problems(
    tmp_path: Path, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", str(session_factory.kw["bind"].url))
    monkeypatch.setenv("MAMMOSEARCH_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    from mammosearch.cli import main

    good = _write(tmp_path, "source_file_name,birads\nfile0.dcm,1\n", "good.csv")
    result = CliRunner().invoke(main, ["labels", "import", str(good), "--by", "dr.d"])
    assert result.exit_code == 0, result.output
    assert "1 row(s): 1 change(s) on 1 image(s)" in result.output
    bad = _write(tmp_path, "source_file_name,birads\nnope.dcm,1\n", "bad.csv")
    result = CliRunner().invoke(main, ["labels", "import", str(bad), "--by", "dr.d"])
    assert result.exit_code == 1
    assert "bad.csv: row 2: unknown source_file_name 'nope.dcm'" in result.output
    with session_factory() as session:
        assert _events(session)[0][-1] == "dr.d"
    get_settings.cache_clear()
