"""Per-patient medical reports (`Medical reports for cases/P2.docx`) -> Report rows."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.db.models import Patient, Report

REPORT_SUFFIXES = {".docx", ".doc"}
# "P2", "p2", "P 2", "P_2", "P002", "Patient 2", "P2 report", "P2 (1)": the leading number wins.
_PATIENT_IN_NAME = re.compile(r"^\s*(?:patient|pt|p)\s*[_\-.]?\s*0*(\d+)(?!\d)", re.IGNORECASE)


@dataclass
class ReportCounts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[str] = field(default_factory=list)  # "P7.doc: reason"
    without_patient: list[str] = field(default_factory=list)  # file names

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def find_report_files(folder: Path) -> list[Path]:
    """Word files anywhere under `folder`, skipping Word's `~$` lock files."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in REPORT_SUFFIXES
        and path.is_file()
        and not path.name.startswith(("~$", "."))
    )


def patient_id_from_report_name(file_name: str) -> str | None:
    """The patient number in a report's file name ("P02 .docx" -> "2"), or None."""
    match = _PATIENT_IN_NAME.match(Path(file_name).stem)
    return match.group(1) if match else None


def read_docx_text(content: bytes, name: str) -> str:
    """Paragraphs then table cells, one per line; raises ValueError naming the file."""
    from docx import Document  # python-docx; imported here so the sheet path needs no Word

    try:
        document = Document(io.BytesIO(content))
    except Exception as exc:  # python-docx raises zip/xml/KeyError types for bad files
        raise ValueError(f"{name}: not a readable .docx ({type(exc).__name__}: {exc})") from exc
    lines = [paragraph.text.strip() for paragraph in document.paragraphs]
    for table in document.tables:
        for table_row in table.rows:
            cells = [cell.text.strip() for cell in table_row.cells]
            lines.append(" | ".join(cell for cell in cells if cell))
    return "\n".join(line for line in lines if line)


def import_reports(
    session: Session,
    report_files: Iterable[Path],
    patient_for: Callable[[str], Patient | None],
) -> ReportCounts:
    """Register each report under its patient; the same file content twice adds nothing.

    A changed file with the same name replaces the earlier text (counted as updated).
    `patient_for(source_patient_id)` returns the patient or None when the sheet lacks it.
    """
    counts = ReportCounts()
    for path in report_files:
        if path.suffix.lower() == ".doc":
            counts.rejected.append(f"{path.name}: old binary Word .doc; save it as .docx")
            continue
        patient_key = patient_id_from_report_name(path.name)
        if patient_key is None:
            counts.rejected.append(
                f"{path.name}: cannot tell the patient from the name (expected like P2.docx)"
            )
            continue
        patient = patient_for(patient_key)
        if patient is None:
            counts.without_patient.append(path.name)
            continue
        content = path.read_bytes()
        sha256 = hashlib.sha256(content).hexdigest()
        existing = session.scalars(
            select(Report).where(Report.patient_id == patient.id, Report.sha256 == sha256)
        ).first()
        if existing is not None:
            counts.unchanged += 1
            continue
        try:
            text = read_docx_text(content, path.name)
        except ValueError as exc:
            counts.rejected.append(str(exc))
            continue
        same_file = session.scalars(
            select(Report).where(Report.patient_id == patient.id, Report.source_file == path.name)
        ).first()
        if same_file is not None:
            same_file.sha256, same_file.text = sha256, text
            counts.updated += 1
        else:
            session.add(
                Report(patient_id=patient.id, source_file=path.name, sha256=sha256, text=text)
            )
            counts.new += 1
        session.flush()
    return counts
