"""A CDD-CESM folder (TCIA layout) -> Patient, Image, Report and Segmentation rows.

Layout: `Radiology manual annotations.xlsx`, image folders (`Subtracted images/`,
`Low energy images of CDD-CESM/`, ...), optional `Medical reports for cases/*.docx`,
optional `Radiology_hand_drawn_segmentations_v2.csv`. Images are found anywhere under
the folder and matched to sheet rows by name.

Idempotent: an image is keyed by its content's sha256, so a re-run adds nothing, and a
changed sheet updates the rows of unchanged images. Files are stored before their row is
committed and rows are committed in batches: an interrupted import keeps what it
committed, a re-run finishes the rest, and no row points to a missing file. A batch the
database refuses is rolled back, the files it wrote and no row references are removed, and
its images are tried one by one, so one bad row is reported and the others still land. It
does not embed: images are left `pending` for the pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import String, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from tqdm import tqdm

from mammosearch.config import Settings
from mammosearch.db.models import Image, ImageStatus, Patient
from mammosearch.ingest.patients import get_or_create_patient
from mammosearch.ingest.reports import ReportCounts, find_report_files, import_reports
from mammosearch.ingest.segmentations import (
    SegmentationCounts,
    find_segmentation_csv,
    import_segmentations,
    parse_segmentation_csv,
)
from mammosearch.ingest.sheet import (
    BIRADS_RULES,
    DEFAULT_BIRADS_RULE,
    SheetParseResult,
    SheetRow,
    parse_annotation_sheet,
)
from mammosearch.ingest.storage import ImageRejected, check_image, store_image, stored_path_for

SOURCE = "cdd-cesm"
SHEET_FILE_NAME = "Radiology manual annotations.xlsx"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
DEFAULT_BATCH_SIZE = 100


class FolderError(ValueError):
    """The folder cannot be imported at all; the message names it and what is missing."""


@dataclass
class ImportSummary:
    """What an import did: counts, and the names behind every count that needs attention."""

    folder: str
    birads_rule: str
    sheet_rows: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    patients_new: int = 0
    missing: list[str] = field(default_factory=list)  # rows whose image is not in the folder
    missing_by_modality: dict[str, int] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)  # "P3_L_CM_CC.jpg: reason"
    skipped: list[str] = field(default_factory=list)  # readable, but not registered: why
    duplicates: list[str] = field(default_factory=list)  # identical repeated rows (once)
    conflicts: list[str] = field(default_factory=list)  # repeated rows that disagree
    sheet_problems: list[str] = field(default_factory=list)
    images_without_row: list[str] = field(default_factory=list)  # paths relative to folder
    reports: ReportCounts = field(default_factory=ReportCounts)
    segmentations: SegmentationCounts = field(default_factory=SegmentationCounts)
    elapsed_s: float = 0.0

    @property
    def registered(self) -> int:
        """Images of this folder now in the database (new, updated or unchanged)."""
        return self.new + self.updated + self.unchanged

    @property
    def nothing_new(self) -> bool:
        return (
            self.new == 0
            and self.updated == 0
            and self.reports.new == 0
            and self.reports.updated == 0
            and self.segmentations.new == 0
            and self.segmentations.updated == 0
        )

    def counts(self) -> dict[str, int]:
        return {
            "sheet_rows": self.sheet_rows,
            "new": self.new,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "missing": len(self.missing),
            "rejected": len(self.rejected),
            "skipped": len(self.skipped),
            "duplicates": len(self.duplicates),
            "conflicts": len(self.conflicts),
            "images_without_row": len(self.images_without_row),
            "patients_new": self.patients_new,
        }

    def to_dict(self) -> dict[str, Any]:
        detail = asdict(self)
        detail["reports"] = self.reports.to_dict()
        detail["segmentations"] = self.segmentations.to_dict()
        return {"counts": self.counts(), **detail}


def find_annotation_sheet(folder: Path) -> Path:
    """The dataset's sheet by its usual name, else the one .xlsx naming "annotation"."""
    usual = folder / SHEET_FILE_NAME
    if usual.is_file():
        return usual
    workbooks = sorted(p for p in folder.rglob("*.xlsx") if not p.name.startswith(("~$", ".")))
    named = [p for p in workbooks if "annotation" in p.name.lower()]
    if len(named) == 1:
        return named[0]
    if not named and len(workbooks) == 1:
        return workbooks[0]
    found = ", ".join(p.name for p in workbooks) or "none"
    raise FolderError(
        f"{folder}: cannot tell which workbook is the annotation sheet "
        f"(expected {SHEET_FILE_NAME!r}; .xlsx files found: {found})"
    )


def find_image_files(folder: Path) -> dict[str, list[Path]]:
    """Image files under `folder` by name key (stem, stripped, upper-case), sorted paths."""
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        relative_parts = path.relative_to(folder).parts
        if path.suffix.lower() not in IMAGE_SUFFIXES or any(
            part.startswith(".") for part in relative_parts
        ):
            continue
        if path.is_file():
            files.setdefault(name_key(path.stem), []).append(path)
    return files


def name_key(image_name: str) -> str:
    """Sheet names and file stems are matched ignoring outer spaces and case."""
    return image_name.strip().upper()


_COLUMN_LENGTHS = {
    column.name: column.type.length
    for column in Image.__table__.columns
    if isinstance(column.type, String) and column.type.length
}


def _fit_columns(values: dict[str, Any]) -> dict[str, Any]:
    """Clip text to its column's length, so one overlong sheet cell cannot fail a batch."""
    return {
        name: value[: _COLUMN_LENGTHS[name]]
        if isinstance(value, str) and name in _COLUMN_LENGTHS
        else value
        for name, value in values.items()
    }


class _Patients:
    """The source's patients by their dataset id, created on first need."""

    def __init__(self, session: Session, sheet_patient_ids: Iterable[str]) -> None:
        self.session = session
        self.sheet_patient_ids = set(sheet_patient_ids)
        self.created = 0
        self.reload()

    def reload(self) -> None:
        """Forget rows a rollback discarded: read the committed patients again."""
        self.by_id = {
            patient.source_patient_id: patient
            for patient in self.session.scalars(select(Patient).where(Patient.source == SOURCE))
        }

    def get(self, source_patient_id: str, age: int | None = None) -> Patient:
        patient = self.by_id.get(source_patient_id)
        if patient is None:
            patient, created = get_or_create_patient(
                self.session, SOURCE, source_patient_id, age, savepoint=False
            )
            self.session.flush()  # its id is needed by the image rows
            self.by_id[source_patient_id] = patient
            self.created += int(created)
        elif age is not None and patient.age != age:
            patient.age = age
        return patient

    def for_report(self, source_patient_id: str) -> Patient | None:
        if source_patient_id in self.by_id or source_patient_id in self.sheet_patient_ids:
            return self.get(source_patient_id)
        return None


def _image_values(
    row: SheetRow,
    patient: Patient,
    file_name: str,
    stored_path: Path,
    width: int,
    height: int,
    birads_rule: str,
) -> dict[str, Any]:
    return _fit_columns(
        {
            "patient_id": patient.id,
            "source": SOURCE,
            "source_file_name": file_name,
            "stored_path": str(stored_path),
            "side": row.side if row.side in {"L", "R"} else None,
            "view": row.view,
            "modality": row.modality,
            "width": width,
            "height": height,
            "breast_density": row.breast_density,
            "birads": row.birads(birads_rule),
            "birads_raw": row.birads_raw,
            "findings": row.findings,
            "tags": row.tags,
            "pathology": row.pathology,
            "machine": row.machine,
        }
    )


def _match_rows_to_files(
    folder: Path, sheet: SheetParseResult, files: dict[str, list[Path]], summary: ImportSummary
) -> list[tuple[SheetRow, Path]]:
    """Pair each row with its file; list missing images, images without a row, name clashes."""
    matched = []
    for row in sheet.rows.values():
        paths = files.get(name_key(row.image_name))
        if not paths:
            summary.missing.append(row.image_name)
            summary.missing_by_modality[row.modality] = (
                summary.missing_by_modality.get(row.modality, 0) + 1
            )
            continue
        matched.append((row, paths[0]))
        for other in paths[1:]:
            summary.skipped.append(
                f"{other.relative_to(folder)}: same name as {paths[0].relative_to(folder)}, "
                "which was used"
            )
    row_keys = {name_key(name) for name in sheet.rows}
    summary.images_without_row = [
        str(path.relative_to(folder))
        for key, paths in files.items()
        if key not in row_keys
        for path in paths
    ]
    return matched


def import_cdd_cesm(
    session: Session,
    folder: Path,
    settings: Settings,
    birads_rule: str = DEFAULT_BIRADS_RULE,
    progress: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ImportSummary:
    """Import a CDD-CESM folder; commits every `batch_size` images and at the end."""
    if birads_rule not in BIRADS_RULES:
        raise ValueError(
            f"unknown BIRADS rule {birads_rule!r}; choose one of {', '.join(BIRADS_RULES)}"
        )
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderError(f"{folder}: not a folder")
    started = time.perf_counter()
    summary = ImportSummary(folder=str(folder), birads_rule=birads_rule)
    sheet = parse_annotation_sheet(find_annotation_sheet(folder))
    summary.sheet_rows = len(sheet.rows)
    summary.duplicates = list(dict.fromkeys(sheet.duplicates))
    summary.conflicts = list(sheet.conflicts)
    summary.sheet_problems = list(sheet.problems)
    matched = _match_rows_to_files(folder, sheet, find_image_files(folder), summary)

    patients = _Patients(session, (row.patient_id for row in sheet.rows.values() if row.patient_id))
    batch = _Batch(session, settings, birads_rule, patients, summary)
    importable = []
    for row, path in matched:
        if row.withheld:
            summary.skipped.append(
                f"{path.name}: not imported (sheet row {row.row_number}): {row.withheld}"
            )
        else:
            importable.append((row, path))
    with tqdm(
        total=len(importable), desc="CDD-CESM images", unit="img", disable=not progress
    ) as bar:
        for start in range(0, len(importable), batch_size):
            chunk = importable[start : start + batch_size]
            batch.run(chunk)
            bar.update(len(chunk))
    registered = batch.registered
    summary.patients_new = patients.created

    summary.reports = import_reports(session, find_report_files(folder), patients.for_report)
    summary.patients_new = patients.created
    session.commit()
    segmentation_csv = find_segmentation_csv(folder)
    if segmentation_csv is not None:
        regions, problems = parse_segmentation_csv(segmentation_csv)
        image_ids = {name: image.id for name, image in registered.items()}
        summary.segmentations = import_segmentations(session, regions, image_ids)
        summary.segmentations.problems[:0] = problems
        session.commit()
    summary.elapsed_s = round(time.perf_counter() - started, 3)
    return summary


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


class _Batch:
    """Registers images a batch per commit; a refused batch leaves no row and no stray file."""

    def __init__(
        self,
        session: Session,
        settings: Settings,
        birads_rule: str,
        patients: _Patients,
        summary: ImportSummary,
    ) -> None:
        self.session, self.settings, self.birads_rule = session, settings, birads_rule
        self.patients, self.summary = patients, summary
        self.registered: dict[str, Image] = {}  # sheet name -> row, for segmentations
        self.name_by_sha: dict[str, str] = {}  # this run's content -> file name, to name a copy

    def run(self, items: list[tuple[SheetRow, Path]]) -> None:
        summary, patients = self.summary, self.patients
        counts = (summary.new, summary.updated, summary.unchanged, patients.created)
        lengths = (len(summary.rejected), len(summary.skipped))
        known_shas = set(self.name_by_sha)
        written: list[Path] = []  # files this batch created (not those stored before)
        images: dict[str, Image] = {}
        try:
            for row, path in items:
                image = _register_image(
                    self.session,
                    row,
                    path,
                    self.settings,
                    self.birads_rule,
                    patients,
                    self.name_by_sha,
                    summary,
                    written,
                )
                if image is not None:
                    images[row.image_name] = image
            self.session.commit()
        except (SQLAlchemyError, OverflowError) as exc:  # the database refused a value
            self._undo(written, counts, lengths, known_shas)
            if len(items) > 1:  # find the row it refused; the others still go in
                for item in items:
                    self.run([item])
                return
            row, path = items[0]
            summary.rejected.append(
                f"{path.name}: not stored: the database refused sheet row {row.row_number} "
                f"({_first_line(exc)})"
            )
            return
        except BaseException:  # interrupted: what is committed stays, this batch goes
            self._undo(written, counts, lengths, known_shas)
            raise
        self.registered.update(images)

    def _undo(
        self,
        written: list[Path],
        counts: tuple[int, int, int, int],
        lengths: tuple[int, int],
        known_shas: set[str],
    ) -> None:
        summary = self.summary
        self.session.rollback()
        summary.new, summary.updated, summary.unchanged, self.patients.created = counts
        del summary.rejected[lengths[0] :], summary.skipped[lengths[1] :]
        for sha256 in set(self.name_by_sha) - known_shas:
            del self.name_by_sha[sha256]
        try:
            self.patients.reload()
            remove_unreferenced_files(self.session, written)
        except SQLAlchemyError:  # the database is gone: the files stay, a re-run reuses them
            self.session.rollback()


def remove_unreferenced_files(session: Session, paths: list[Path]) -> list[Path]:
    """Delete the stored files among `paths` that no image row points to; returns them.

    Only for files the caller itself wrote in a transaction it rolled back: a file that
    was there before, or that a committed row references, is never touched.
    """
    removed = []
    for path in paths:
        referenced = session.scalar(select(Image.id).where(Image.stored_path == str(path)).limit(1))
        if referenced is None:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _register_image(
    session: Session,
    row: SheetRow,
    path: Path,
    settings: Settings,
    birads_rule: str,
    patients: _Patients,
    name_by_sha: dict[str, str],
    summary: ImportSummary,
    written: list[Path],
) -> Image | None:
    """Check, store and upsert one image; count the outcome in `summary`."""
    try:
        checked = check_image(path.read_bytes(), path.name, settings.max_image_pixels)
    except ImageRejected as exc:
        summary.rejected.append(str(exc))
        return None
    except OSError as exc:
        summary.rejected.append(f"{path.name}: cannot read the file ({exc.strerror or exc})")
        return None
    if checked.sha256 in name_by_sha:
        summary.skipped.append(f"{path.name}: same content as {name_by_sha[checked.sha256]}")
        return None
    if row.patient_id is None:
        summary.skipped.append(f"{path.name}: no Patient_ID in the sheet or the name")
        return None
    name_by_sha[checked.sha256] = path.name
    existing = session.scalars(select(Image).where(Image.sha256 == checked.sha256)).first()
    if existing is not None and existing.source != SOURCE:
        summary.skipped.append(
            f"{path.name}: same content already registered from {existing.source} "
            f"(image {existing.id})"
        )
        return None
    # The file is written before its row is committed: a row never points to a missing file.
    new_file = not stored_path_for(settings.images_dir, checked.sha256, checked.suffix).exists()
    stored_path = store_image(settings.images_dir, checked)
    if new_file:
        written.append(stored_path)
    patient = patients.get(row.patient_id, row.age)
    values = _image_values(
        row, patient, path.name, stored_path, checked.width, checked.height, birads_rule
    )
    if existing is None:
        image = Image(sha256=checked.sha256, status=ImageStatus.PENDING.value, **values)
        session.add(image)
        summary.new += 1
        return image
    changed = {name: value for name, value in values.items() if getattr(existing, name) != value}
    for name, value in changed.items():
        setattr(existing, name, value)
    if changed:
        summary.updated += 1
    else:
        summary.unchanged += 1
    return existing
