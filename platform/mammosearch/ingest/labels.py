"""Labels that arrive after the images (BIRADS, pathology) from a CSV, with an audit trail.

The CSV names its images by one key column (image_id, sop_instance_uid, patient_id or
source_file_name) and carries a birads and/or a pathology column. Each value that differs
from the stored one is written and recorded as a LabelEvent (who, when, old, new, file);
equal values and empty cells change nothing, so re-importing a file records nothing new.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.db.models import Image, LabelEvent, Patient
from mammosearch.ingest.sheet import BIRADS_CATEGORIES, birads_categories

# Key column -> how it finds images. patient_id labels every image of that patient.
KEY_COLUMNS = (
    "image_id",
    "sop_instance_uid",
    "patient_id",
    "source_patient_id",
    "source_file_name",
)
LABEL_COLUMNS = ("birads", "pathology")


class LabelFileError(ValueError):
    """The file as a whole cannot be used (missing, no key column, no label column)."""


@dataclass
class LabelImportSummary:
    rows: int = 0
    images_changed: int = 0
    events: int = 0
    unchanged: int = 0  # rows whose labels already matched
    unknown_keys: list[str] = field(default_factory=list)  # "row 4: sop_instance_uid 1.2.3"
    errors: list[str] = field(default_factory=list)  # "row 5: bad BIRADS '7' (...)"

    @property
    def ok(self) -> bool:
        return not self.unknown_keys and not self.errors


def parse_birads_label(raw: str) -> tuple[int, str]:
    """One BIRADS category from a cell ("4", "4b") -> (category, raw text); ValueError if not."""
    categories = birads_categories(raw)
    if len(categories) != 1:
        raise ValueError(
            f"bad BIRADS {raw!r} (expected one of {BIRADS_CATEGORIES.start}..."
            f"{BIRADS_CATEGORIES.stop - 1}, optionally 4a/4b/4c)"
        )
    return categories[0], raw.strip().lower()


def _normalise_header(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _find_images(session: Session, key_column: str, key: str) -> list[Image]:
    if key_column == "image_id":
        if not key.isdigit():
            return []
        image = session.get(Image, int(key))
        return [image] if image else []
    if key_column == "sop_instance_uid":
        return list(session.scalars(select(Image).where(Image.sop_instance_uid == key)))
    if key_column == "source_file_name":
        return list(session.scalars(select(Image).where(Image.source_file_name == key)))
    return list(  # patient_id / source_patient_id: every image of that patient
        session.scalars(
            select(Image)
            .join(Patient, Image.patient_id == Patient.id)
            .where(Patient.source_patient_id == key)
            .order_by(Image.id)
        )
    )


def _read_rows(path: Path) -> tuple[str, list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise LabelFileError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise LabelFileError(f"{path}: empty file (expected a header row)")
        headers = {_normalise_header(name): name for name in reader.fieldnames}
        key_column = next((key for key in KEY_COLUMNS if key in headers), None)
        if key_column is None:
            raise LabelFileError(
                f"{path}: no key column; expected one of {', '.join(KEY_COLUMNS)} "
                f"(found {', '.join(reader.fieldnames)})"
            )
        label_columns = [name for name in LABEL_COLUMNS if name in headers]
        if not label_columns:
            raise LabelFileError(f"{path}: no label column; expected birads and/or pathology")
        rows = [
            {column: (row.get(headers[column]) or "").strip() for column in headers}
            for row in reader
        ]
    return key_column, label_columns, rows


def import_labels(session: Session, path: Path | str, changed_by: str) -> LabelImportSummary:
    """Apply the file's labels; rows with problems are reported and skipped. Caller commits."""
    path = Path(path)
    key_column, label_columns, rows = _read_rows(path)
    summary = LabelImportSummary()
    for row_number, row in enumerate(rows, start=2):  # row 1 is the header
        summary.rows += 1
        key = row.get(key_column, "")
        if not key:
            summary.errors.append(f"row {row_number}: empty {key_column}")
            continue
        changes: dict[str, tuple[int | None, str]] = {}
        try:
            if row.get("birads"):
                category, raw = parse_birads_label(row["birads"])
                changes["birads"] = (category, raw)
        except ValueError as exc:
            summary.errors.append(f"row {row_number}: {exc}")
            continue
        if row.get("pathology"):
            changes["pathology"] = (None, row["pathology"].lower())
        if not changes:
            summary.unchanged += 1
            continue
        images = _find_images(session, key_column, key)
        if not images:
            summary.unknown_keys.append(f"row {row_number}: unknown {key_column} {key!r}")
            continue
        row_events = 0
        for image in images:
            events = _apply(image, changes, source_file=str(path), changed_by=changed_by)
            session.add_all(events)
            row_events += len(events)
            summary.images_changed += 1 if events else 0
        summary.events += row_events
        summary.unchanged += 0 if row_events else 1
    session.flush()
    return summary


def _apply(
    image: Image, changes: dict[str, tuple[int | None, str]], source_file: str, changed_by: str
) -> list[LabelEvent]:
    """Write the values that differ; one event per changed field."""
    events = []
    if "birads" in changes:
        category, raw = changes["birads"]
        old = image.birads_raw if image.birads_raw is not None else _str(image.birads)
        # "4" confirms a stored "4" or "4$3"; a sub-category ("4b") must match as written.
        same_raw = raw == str(category) or (image.birads_raw or "").lower() == raw
        if image.birads != category or not same_raw:
            events.append(_event(image, "birads", old, raw, source_file, changed_by))
            image.birads, image.birads_raw = category, raw
    if "pathology" in changes:
        _, pathology = changes["pathology"]
        if image.pathology != pathology:
            events.append(
                _event(image, "pathology", image.pathology, pathology, source_file, changed_by)
            )
            image.pathology = pathology
    return events


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _event(
    image: Image, field_name: str, old: str | None, new: str, source_file: str, changed_by: str
) -> LabelEvent:
    return LabelEvent(
        image_id=image.id,
        field=field_name,
        old_value=old,
        new_value=new,
        source_file=source_file[:512],
        changed_by=changed_by,
    )
