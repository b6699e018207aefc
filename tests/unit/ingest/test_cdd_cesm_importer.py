"""Importing a synthetic CDD-CESM folder: rows, stored files, idempotency, reports, regions."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from docx import Document
from openpyxl import Workbook
from PIL import Image as PILImage
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from mammosearch.cli.ingest_commands import ingest
from mammosearch.cli.status_commands import status
from mammosearch.config import Settings, get_settings
from mammosearch.db.models import Base, Image, Patient, Report, Segmentation
from mammosearch.db.session import clear_engines
from mammosearch.ingest import cdd_cesm
from mammosearch.ingest.cdd_cesm import import_cdd_cesm
from mammosearch.jobs.status import collect_status

HEADER = (
    "Image_name",
    "Patient_ID",
    "Side",
    "Type",
    "Age",
    "Breast density (ACR)",
    "BIRADS",
    "Findings",
    "View",
    "Tags",
    "Machine",
    "Pathology Classification/ Follow up",
)
SHEET = "Radiology manual annotations.xlsx"


# --- Fixtures local to this module (LEAD: may move to tests/conftest.py) -------------------
@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file in tmp_path with every model table (create_all, no migrations)."""
    url = f"sqlite:///{tmp_path / 'import.sqlite3'}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    return url


@pytest.fixture
def db_session(sqlite_url: str) -> Iterator[Session]:
    """A session on the module's SQLite database."""
    engine = create_engine(sqlite_url)
    with Session(engine) as session:
        yield session
    engine.dispose()


@pytest.fixture
def import_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    """Settings whose data directory is private to the test."""
    return Settings(data_dir=tmp_path / "data", database_url=sqlite_url)


# --- Builders ---------------------------------------------------------------------------
def jpeg(seed: int, size_px: int = 48) -> bytes:
    """A small grayscale JPEG whose content depends on `seed`."""
    image = PILImage.new("L", (size_px, size_px), color=seed % 256)
    image.putpixel((seed % size_px, 0), 255 - seed % 256)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def row(
    name: str, birads: object = 2, pathology: str = "Benign", age: int = 50, kind: str = "CESM"
) -> tuple[object, ...]:
    patient, side, _, view = name.strip().split("_")
    return (
        name,
        int(patient[1:]),
        side,
        kind,
        age,
        "_",
        birads,
        "Mass$Calcs",
        view,
        "mass, benign",
        1,
        pathology,
    )


def write_sheet(path: Path, rows: list[tuple[object, ...]]) -> None:
    workbook = Workbook()
    workbook.active.append(HEADER)
    for sheet_row in rows:
        workbook.active.append(sheet_row)
    workbook.save(path)


def make_folder(tmp_path: Path, rows: list[tuple[object, ...]], images: dict[str, bytes]) -> Path:
    folder = tmp_path / "cdd-cesm"
    (folder / "Subtracted images").mkdir(parents=True, exist_ok=True)
    write_sheet(folder / SHEET, rows)
    for file_name, content in images.items():
        (folder / "Subtracted images" / file_name).write_bytes(content)
    return folder


def three_image_folder(tmp_path: Path) -> Path:
    rows = [
        row("P2_R_CM_CC", birads="3$2"),
        row("P2_R_CM_MLO ", birads=3),
        row("P3_L_CM_CC", birads=5, pathology="Malignant", age=61),
    ]
    images = {f"{r[0].strip()}.jpg": jpeg(i) for i, r in enumerate(rows)}
    return make_folder(tmp_path, rows, images)


def image_named(session: Session, file_name: str) -> Image:
    return session.scalars(select(Image).where(Image.source_file_name == file_name)).one()


def count_images(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Image))


# --- Images -----------------------------------------------------------------------------
def test_import_registers_each_image_with_its_sheet_metadata(
    tmp_path: Path, db_session: Session, import_settings: Settings
) -> None:
    folder = three_image_folder(tmp_path)
    summary = import_cdd_cesm(db_session, folder, import_settings, progress=False)
    assert (summary.new, summary.unchanged, summary.patients_new) == (3, 0, 2)
    image = image_named(db_session, "P2_R_CM_CC.jpg")
    content = (folder / "Subtracted images" / "P2_R_CM_CC.jpg").read_bytes()
    assert image.sha256 == hashlib.sha256(content).hexdigest()
    assert Path(image.stored_path).read_bytes() == content
    assert Path(image.stored_path).is_relative_to(import_settings.images_dir)
    assert (image.source, image.side, image.view, image.modality) == (
        "cdd-cesm",
        "R",
        "CC",
        "subtracted",
    )
    assert (image.birads, image.birads_raw, image.breast_density) == (3, "3$2", None)
    assert (image.findings, image.tags, image.pathology, image.machine) == (
        "Mass$Calcs",
        "mass, benign",
        "benign",
        "1",
    )
    assert (image.width, image.height, image.status) == (48, 48, "pending")
    assert (image.patient.source, image.patient.source_patient_id, image.patient.age) == (
        "cdd-cesm",
        "2",
        50,
    )


def test_reimporting_the_same_folder_adds_nothing(
    tmp_path: Path, db_session: Session, import_settings: Settings
) -> None:
    folder = three_image_folder(tmp_path)
    import_cdd_cesm(db_session, folder, import_settings, progress=False)
    again = import_cdd_cesm(db_session, folder, import_settings, progress=False)
    assert (again.new, again.updated, again.unchanged, again.patients_new) == (0, 0, 3, 0)
    assert again.nothing_new
    assert count_images(db_session) == 3


def test_changed_sheet_metadata_updates_the_unchanged_image(
    tmp_path: Path, db_session: Session, import_settings: Settings
) -> None:
    folder = three_image_folder(tmp_path)
    import_cdd_cesm(db_session, folder, import_settings, progress=False)
    write_sheet(
        folder / SHEET,
        [
            row("P2_R_CM_CC", birads=4, pathology="Malignant"),
            row("P2_R_CM_MLO", birads=3),
            row("P3_L_CM_CC", birads=5, pathology="Malignant", age=61),
        ],
    )
    again = import_cdd_cesm(db_session, folder, import_settings, progress=False)
    assert (again.new, again.updated, again.unchanged) == (0, 1, 2)
    image = image_named(db_session, "P2_R_CM_CC.jpg")
    assert (image.birads, image.pathology) == (4, "malignant")
    assert count_images(db_session) == 3


@pytest.mark.parametrize(("rule", "expected"), [("max", 4), ("first", 2), ("min", 2)])
def test_the_birads_rule_decides_the_stored_category(
    tmp_path: Path, db_session: Session, import_settings: Settings, rule: str, expected: int
) -> None:
    folder = make_folder(tmp_path, [row("P2_R_CM_CC", birads="2$4$3")], {"P2_R_CM_CC.jpg": jpeg(1)})
    summary = import_cdd_cesm(db_session, folder, import_settings, birads_rule=rule, progress=False)
    assert summary.birads_rule == rule
    image = db_session.scalars(select(Image)).one()
    assert (image.birads, image.birads_raw) == (expected, "2$4$3")


def test_rows_whose_image_is_absent_are_listed_not_fatal(
    tmp_path: Path, db_session: Session, import_settings: Settings
) -> None:
    rows = [row("P2_R_CM_CC"), row("P2_R_DM_CC", kind="DM"), row("P2_R_DM_MLO", kind="DM")]
    folder = make_folder(tmp_path, rows, {"P2_R_CM_CC.jpg": jpeg(1)})
    summary = import_cdd_cesm(db_session, folder, import_settings, progress=False)
    assert summary.new == 1
    assert summary.missing == ["P2_R_DM_CC", "P2_R_DM_MLO"]
    assert summary.missing_by_modality == {"low-energy": 2}


def test_images_without_a_row_are_listed_and_not_registered(
    tmp_path: Path, db_session: Session, import_settings: Settings
) -> None:
    folder = make_folder(
        tmp_path, [row("P2_R_CM_CC")], {"P2_R_CM_CC.jpg": jpeg(1), "P9_L_CM_CC.jpg": jpeg(2)}
    )
    summary = import_cdd_cesm(db_session, folder, import_settings, progress=False)
    assert summary.new == 1
    assert summary.images_without_row == ["Subtracted images/P9_L_CM_CC.jpg"]
    assert count_images(db_session) == 1


def test_a_corrupt_jpeg_is_rejected_by_name_and_the_rest_goes_on(
    tmp_path: Path, db_session: Session, import_settings: Settings
) -> None:
    truncated = jpeg(2)[:200]
    folder = make_folder(
        tmp_path,
        [row("P2_R_CM_CC"), row("P2_R_CM_MLO"), row("P3_L_CM_CC")],
        {"P2_R_CM_CC.jpg": jpeg(1), "P2_R_CM_MLO.jpg": truncated, "P3_L_CM_CC.jpg": b"PK\x03\x04"},
    )
    summary = import_cdd_cesm(db_session, folder, import_settings, progress=False)
    assert summary.new == 1
    assert [reason.split(":")[0] for reason in summary.rejected] == [
        "P2_R_CM_MLO.jpg",
        "P3_L_CM_CC.jpg",
    ]
    assert "truncated" in summary.rejected[0]
    assert "starts with 'PK" in summary.rejected[1]
    assert count_images(db_session) == 1


def test_sheet_duplicates_and_conflicts_reach_the_summary(
    tmp_path: Path, db_session: Session, import_settings: Settings
) -> None:
    rows = [
        row("P2_R_CM_CC"),
        row("P2_R_CM_CC"),
        row("P3_L_CM_CC", birads=2),
        row("P3_L_CM_CC", birads=4),
    ]
    folder = make_folder(tmp_path, rows, {"P2_R_CM_CC.jpg": jpeg(1), "P3_L_CM_CC.jpg": jpeg(2)})
    summary = import_cdd_cesm(db_session, folder, import_settings, progress=False)
    assert summary.new == 2
    assert summary.duplicates == ["P2_R_CM_CC"]
    assert len(summary.conflicts) == 1 and summary.conflicts[0].startswith("P3_L_CM_CC: rows")


def test_identical_content_under_two_names_is_registered_once(
    tmp_path: Path, db_session: Session, import_settings: Settings
) -> None:
    folder = make_folder(
        tmp_path,
        [row("P2_R_CM_CC"), row("P2_R_CM_MLO")],
        {"P2_R_CM_CC.jpg": jpeg(1), "P2_R_CM_MLO.jpg": jpeg(1)},
    )
    summary = import_cdd_cesm(db_session, folder, import_settings, progress=False)
    assert summary.new == 1
    assert summary.skipped == ["P2_R_CM_MLO.jpg: same content as P2_R_CM_CC.jpg"]


def test_an_interrupted_import_keeps_committed_batches_and_a_rerun_finishes(
    tmp_path: Path, sqlite_url: str, import_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = three_image_folder(tmp_path)
    real_check = cdd_cesm.check_image
    calls = {"n": 0}

    def check_then_interrupt(content: bytes, name: str, max_pixels: int):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_check(content, name, max_pixels)

    engine = create_engine(sqlite_url)
    monkeypatch.setattr(cdd_cesm, "check_image", check_then_interrupt)
    with Session(engine) as session, pytest.raises(KeyboardInterrupt):
        import_cdd_cesm(session, folder, import_settings, progress=False, batch_size=2)
    with Session(engine) as session:
        assert count_images(session) == 2
    monkeypatch.setattr(cdd_cesm, "check_image", real_check)
    with Session(engine) as session:
        summary = import_cdd_cesm(session, folder, import_settings, progress=False)
        assert (summary.new, summary.unchanged) == (1, 2)
        assert count_images(session) == 3
    engine.dispose()


# --- Reports and segmentations ----------------------------------------------------------
def docx_bytes(*paragraphs: str) -> bytes:
    document = Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_reports_are_registered_per_patient_for_name_variants(
    tmp_path: Path, db_session: Session, import_settings: Settings
) -> None:
    folder = three_image_folder(tmp_path)
    reports = folder / "Medical reports for cases"
    reports.mkdir()
    (reports / "P2.docx").write_bytes(docx_bytes("CESM report", "Enhancing mass, BIRADS 3."))
    (reports / "p 003 .docx").write_bytes(docx_bytes("Patient three"))
    (reports / "P99.docx").write_bytes(docx_bytes("Not in the sheet"))
    (reports / "P5.doc").write_bytes(b"\xd0\xcf\x11\xe0")
    (reports / "notes.docx").write_bytes(docx_bytes("?"))
    (reports / "~$P2.docx").write_bytes(b"lock")
    summary = import_cdd_cesm(db_session, folder, import_settings, progress=False)
    assert (summary.reports.new, summary.reports.without_patient) == (2, ["P99.docx"])
    assert [reason.split(":")[0] for reason in summary.reports.rejected] == ["P5.doc", "notes.docx"]
    text_by_patient = {
        report.patient.source_patient_id: report.text
        for report in db_session.scalars(select(Report))
    }
    assert text_by_patient == {"2": "CESM report\nEnhancing mass, BIRADS 3.", "3": "Patient three"}
    again = import_cdd_cesm(db_session, folder, import_settings, progress=False)
    assert (again.reports.new, again.reports.unchanged) == (0, 2)
    (reports / "P2.docx").write_bytes(docx_bytes("Corrected report"))
    third = import_cdd_cesm(db_session, folder, import_settings, progress=False)
    assert (third.reports.new, third.reports.updated) == (0, 1)
    assert db_session.scalar(select(func.count()).select_from(Report)) == 2


def test_a_corrupt_docx_is_rejected_by_name(
    tmp_path: Path, db_session: Session, import_settings: Settings
) -> None:
    folder = three_image_folder(tmp_path)
    (folder / "P2.docx").write_bytes(b"PK\x03\x04 not really a zip")
    summary = import_cdd_cesm(db_session, folder, import_settings, progress=False)
    assert summary.reports.rejected[0].startswith("P2.docx: not a readable .docx")
    assert summary.new == 3


SEGMENTATION_CSV = """#filename,file_size,file_attributes,region_count,region_id,\
region_shape_attributes,region_attributes
P2_R_CM_CC.jpg,1234,{},2,0,"{""name"":""polygon"",""all_points_x"":[1,5,9],\
""all_points_y"":[2,6,3]}","{""finding"":""mass""}"
P2_R_CM_CC.jpg,1234,{},2,1,"{""name"":""ellipse"",""cx"":4,""cy"":4,""rx"":2,""ry"":1}",{}
P2_R_CM_MLO.jpg,1234,{},0,0,{},{}
P7_L_CM_CC.jpg,1234,{},1,0,"{""name"":""rect"",""x"":1,""y"":1,""width"":3,""height"":3}",{}
P3_L_CM_CC.jpg,1234,{},1,0,"{not json",{}
"""


def test_segmentations_are_registered_for_images_that_exist(
    tmp_path: Path, db_session: Session, import_settings: Settings
) -> None:
    folder = three_image_folder(tmp_path)
    (folder / "Radiology_hand_drawn_segmentations_v2.csv").write_text(SEGMENTATION_CSV)
    summary = import_cdd_cesm(db_session, folder, import_settings, progress=False)
    counts = summary.segmentations
    assert (counts.new, counts.without_image) == (2, ["P7_L_CM_CC"])
    assert (
        len(counts.problems) == 1
        and "region_shape_attributes is not valid JSON" in (counts.problems[0])
    )
    regions = db_session.scalars(select(Segmentation).order_by(Segmentation.region_index)).all()
    assert [r.image.source_file_name for r in regions] == ["P2_R_CM_CC.jpg"] * 2
    assert regions[0].shape["all_points_x"] == [1, 5, 9]
    assert regions[0].attributes == {"finding": "mass"}
    again = import_cdd_cesm(db_session, folder, import_settings, progress=False)
    assert (again.segmentations.new, again.segmentations.unchanged) == (0, 2)


# --- CLI and status ---------------------------------------------------------------------
@pytest.fixture
def cli_env(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI's settings point at the test's SQLite database and data directory."""
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("MAMMOSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MAMMOSEARCH_BIRADS_RULE", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
    clear_engines()


def test_cli_import_prints_a_summary_and_says_nothing_new_on_a_rerun(
    tmp_path: Path, cli_env: None
) -> None:
    folder = make_folder(
        tmp_path, [row("P2_R_CM_CC"), row("P2_R_DM_CC", kind="DM")], {"P2_R_CM_CC.jpg": jpeg(1)}
    )
    runner = CliRunner()
    args = ["cdd-cesm", str(folder), "--no-progress", "--no-process"]
    first = runner.invoke(ingest, args)
    assert first.exit_code == 0, first.output
    assert "images: 1 new, 0 updated, 0 unchanged, 0 missing, 0 rejected" in first.output
    assert (
        "1 sheet row describes a low-energy image, which this folder does not hold "
        "(expected for a subtracted-only export)"
    ) in first.output and "P2_R_DM_CC" not in first.output
    second = runner.invoke(ingest, args)
    assert second.exit_code == 0, second.output
    assert "nothing new: 1 images already registered" in second.output


def test_cli_json_summary_lists_everything(tmp_path: Path, cli_env: None) -> None:
    rows = [row("P2_R_CM_CC", birads="2$4")] + [
        row(f"P{n}_R_DM_CC", kind="DM") for n in range(10, 20)
    ]
    folder = make_folder(tmp_path, rows, {"P2_R_CM_CC.jpg": jpeg(1)})
    result = CliRunner().invoke(
        ingest,
        [
            "cdd-cesm",
            str(folder),
            "--json",
            "--no-progress",
            "--no-process",
            "--birads-rule",
            "first",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["counts"]["new"] == 1 and summary["counts"]["missing"] == 10
    assert len(summary["missing"]) == 10 and summary["birads_rule"] == "first"


def test_cli_birads_rule_comes_from_the_environment(
    tmp_path: Path, cli_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAMMOSEARCH_BIRADS_RULE", "min")
    get_settings.cache_clear()
    folder = make_folder(tmp_path, [row("P2_R_CM_CC", birads="2$4")], {"P2_R_CM_CC.jpg": jpeg(1)})
    result = CliRunner().invoke(
        ingest, ["cdd-cesm", str(folder), "--json", "--no-progress", "--no-process"]
    )
    assert json.loads(result.output)["birads_rule"] == "min"


def test_cli_names_a_folder_without_a_sheet(tmp_path: Path, cli_env: None) -> None:
    result = CliRunner().invoke(ingest, ["cdd-cesm", str(tmp_path), "--no-progress"])
    assert result.exit_code == 1
    assert "cannot tell which workbook is the annotation sheet" in result.output


def test_status_counts_images_by_pipeline_status(
    tmp_path: Path, cli_env: None, db_session: Session, import_settings: Settings
) -> None:
    import_cdd_cesm(db_session, three_image_folder(tmp_path), import_settings, progress=False)
    db_session.scalars(select(Image)).first().status = "indexed"
    db_session.commit()
    counts = collect_status(db_session)["images"]
    assert {k: counts[k] for k in ("total", "pending", "embedded", "indexed", "failed")} == {
        "total": 3,
        "pending": 2,
        "embedded": 0,
        "indexed": 1,
        "failed": 0,
    }
    result = CliRunner().invoke(status, ["--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["images"]["indexed"] == 1
    assert db_session.scalar(select(func.count()).select_from(Patient)) == 2


# --- Bad sheet values (issue 12) ----------------------------------------------------------
def stored_files(settings: Settings) -> set[str]:
    return {str(p) for p in settings.images_dir.rglob("*") if p.is_file()}


def test_impossible_birads_and_ages_are_reported_by_row_and_column_and_the_rest_is_kept(
    tmp_path: Path, db_session: Session, import_settings: Settings
) -> None:
    """BIRADS 9, -1, 2.5, 'abc' and ages 500, -3, 1e300: named, stored empty, never a crash."""
    rows = [
        row("P1_R_CM_CC", birads=9),
        row("P2_R_CM_CC", birads=-1),
        row("P3_R_CM_CC", birads=2.5),
        row("P4_R_CM_CC", birads="abc"),
        row("P5_R_CM_CC", age=500),
        row("P6_R_CM_CC", age=-3),
        row("P7_R_CM_CC", age=1e300),
        row("P8_R_CM_CC", birads="3$9"),
    ]
    folder = make_folder(tmp_path, rows, {f"{r[0]}.jpg": jpeg(i) for i, r in enumerate(rows)})
    summary = import_cdd_cesm(db_session, folder, import_settings, progress=False)
    assert summary.new == 8 and summary.rejected == []
    problems = "\n".join(summary.sheet_problems)
    for sheet_row, column, value in [
        (2, "BIRADS", "'9'"),
        (3, "BIRADS", "'-1'"),
        (4, "BIRADS", "'2.5'"),
        (5, "BIRADS", "'abc'"),
        (6, "Age", "'500'"),
        (7, "Age", "'-3'"),
        (8, "Age", "'1e+300'"),
        (9, "BIRADS", "'3$9'"),
    ]:
        assert f"row {sheet_row} (P{sheet_row - 1}_R_CM_CC), column {column}: {value}" in problems
    assert len(summary.sheet_problems) == 8
    for number in (1, 2, 3, 4, 8):  # no category guessed, raw text kept, the rest stored
        image = image_named(db_session, f"P{number}_R_CM_CC.jpg")
        assert image.birads is None and image.birads_raw is not None
        assert (image.pathology, image.view, image.patient.age) == ("benign", "CC", 50)
    for number in (5, 6, 7):
        image = image_named(db_session, f"P{number}_R_CM_CC.jpg")
        assert image.patient.age is None and image.birads == 2


def test_a_patient_id_that_disagrees_with_the_file_name_is_reported_not_imported(
    tmp_path: Path, db_session: Session, import_settings: Settings
) -> None:
    """Sheet says patient 13, the name says P12: neither is guessed; the row is reported."""
    mismatched = ("P12_L_CM_CC", 13) + row("P12_L_CM_CC")[2:]
    folder = make_folder(
        tmp_path,
        [mismatched, row("P3_L_CM_CC")],
        {"P12_L_CM_CC.jpg": jpeg(1), "P3_L_CM_CC.jpg": jpeg(2)},
    )
    summary = import_cdd_cesm(db_session, folder, import_settings, progress=False)
    assert summary.new == 1
    assert summary.sheet_problems == [
        f"{SHEET} row 2 (P12_L_CM_CC), column Patient_ID: '13' disagrees with the image name "
        "(patient 12); the image is not imported until one of them is corrected"
    ]
    assert summary.skipped[0].startswith("P12_L_CM_CC.jpg: not imported (sheet row 2)")
    assert "P12_L_CM_CC.jpg" not in " ".join(summary.images_without_row)
    assert stored_files(import_settings) == {image_named(db_session, "P3_L_CM_CC.jpg").stored_path}


def test_a_batch_the_database_refuses_is_retried_per_image_and_leaves_no_stray_file(
    tmp_path: Path,
    db_session: Session,
    import_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A value the database cannot hold (age 10**300, unchecked) costs its own row only."""
    from mammosearch.ingest import sheet

    monkeypatch.setattr(sheet, "_age", lambda value: (int(float(value)), None))
    rows = [
        row("P1_R_CM_CC"),
        row("P2_R_CM_CC", age=1e300),
        row("P3_R_CM_CC"),
        row("P4_R_CM_CC"),
        row("P5_R_CM_CC"),
    ]
    folder = make_folder(tmp_path, rows, {f"{r[0]}.jpg": jpeg(i) for i, r in enumerate(rows)})
    summary = import_cdd_cesm(db_session, folder, import_settings, progress=False, batch_size=4)
    assert (summary.new, summary.patients_new) == (4, 4)
    assert len(summary.rejected) == 1
    assert summary.rejected[0].startswith(
        "P2_R_CM_CC.jpg: not stored: the database refused sheet row 3"
    )
    referenced = set(db_session.scalars(select(Image.stored_path)))
    assert len(referenced) == 4 and stored_files(import_settings) == referenced
    assert import_cdd_cesm(db_session, folder, import_settings, progress=False).unchanged == 4
