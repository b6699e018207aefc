"""The CDD-CESM annotation sheet (`Radiology manual annotations.xlsx`) -> one row per image.

The real sheet has quirks an importer must absorb rather than reject: image names with
trailing spaces, several values joined by `$` in one cell, repeated rows, `_` for "no
breast density". Raw text is kept; only what retrieval filters on is normalised.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mammosearch.ingest.cdd_names import parse_cdd_name
from mammosearch.vocabulary import ASSESSMENT_CATEGORIES, PATHOLOGY_CLASSES

MULTI_VALUE_SEPARATOR = "$"
BIRADS_CATEGORIES = ASSESSMENT_CATEGORIES  # "4a"/"4b"/"4c" count as 4

# How one BIRADS is chosen when a cell lists several (e.g. "3$2", one per finding).
# "max" (default): the most suspicious finding decides the breast's category, as in reading.
BIRADS_RULES: dict[str, Callable[[Sequence[int]], int]] = {
    "max": max,
    "first": lambda categories: categories[0],
    "min": min,
}
DEFAULT_BIRADS_RULE = "max"

# Header (lower-cased, spaces collapsed) -> SheetRow field. Pathology's header is long and
# varies ("Pathology Classification/ Follow up"), so it is matched by prefix below.
_HEADER_FIELDS = {
    "image_name": "image_name",
    "image name": "image_name",
    "patient_id": "patient_id",
    "patient id": "patient_id",
    "side": "side",
    "type": "image_type",
    "age": "age",
    "breast density (acr)": "breast_density",
    "breast density": "breast_density",
    "birads": "birads_raw",
    "bi-rads": "birads_raw",
    "findings": "findings",
    "view": "view",
    "tags": "tags",
    "machine": "machine",
}
_BIRADS_VALUE = re.compile(r"^\s*([0-6])\s*[a-cA-C]?\s*$")
_NO_VALUE = {"_", "-"}  # the sheet's way of writing "nothing here"
# The ages a patient can have; anything else is a typing slip (500, -3, 1e300).
AGE_RANGE_YEARS = range(0, 121)


class SheetError(ValueError):
    """The sheet cannot be read at all (missing file, no Image_name column)."""


@dataclass(frozen=True)
class SheetRow:
    """One image's annotation, text stripped of outer spaces, raw multi-values kept."""

    image_name: str
    row_number: int
    patient_id: str | None = None
    side: str | None = None
    image_type: str | None = None  # "DM" (low energy) or "CESM" (subtracted)
    age: int | None = None
    breast_density: str | None = None  # None where the sheet says "_"
    birads_raw: str | None = None
    findings: str | None = None
    view: str | None = None
    tags: str | None = None
    machine: str | None = None
    pathology: str | None = None  # lower-case: "benign", "malignant", "normal"
    birads_invalid: bool = False  # the cell holds a value that is no category: no BIRADS
    withheld: str | None = None  # why the row must not be imported (reported in problems)

    @property
    def modality(self) -> str:
        """ "subtracted" for CESM/CM rows, "low-energy" for DM rows."""
        kind = (self.image_type or "").upper()
        name = self.image_name.upper()
        if kind in {"CESM", "CM"} or "_CM_" in name:
            return "subtracted"
        if kind == "DM" or "_DM_" in name:
            return "low-energy"
        return "unknown"

    def birads(self, rule: str = DEFAULT_BIRADS_RULE) -> int | None:
        """None where the cell has a value that is no category: never a guess from the rest."""
        return None if self.birads_invalid else choose_birads(self.birads_raw, rule)

    def annotation(self) -> dict[str, Any]:
        """Every value but the row number: two rows are duplicates when these are equal."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "row_number"}


@dataclass
class SheetParseResult:
    rows: dict[str, SheetRow] = field(default_factory=dict)  # key: image name, stripped
    duplicates: list[str] = field(default_factory=list)  # identical repeats, counted once
    conflicts: list[str] = field(default_factory=list)  # "NAME: rows 4 and 9 differ in ..."
    problems: list[str] = field(default_factory=list)  # rows or cells that could not be used
    trimmed_names: list[str] = field(default_factory=list)  # names that had outer spaces


def birads_categories(raw: str | None) -> list[int]:
    """The BIRADS categories listed in a cell, in order: "3$2" -> [3, 2]; junk is skipped."""
    if raw is None:
        return []
    categories = []
    for part in str(raw).split(MULTI_VALUE_SEPARATOR):
        match = _BIRADS_VALUE.match(part)
        if match:
            categories.append(int(match.group(1)))
    return categories


def choose_birads(raw: str | None, rule: str = DEFAULT_BIRADS_RULE) -> int | None:
    """The one BIRADS used for retrieval, picked from a possibly multi-valued cell by `rule`."""
    if rule not in BIRADS_RULES:
        raise ValueError(f"unknown BIRADS rule {rule!r}; choose one of {', '.join(BIRADS_RULES)}")
    categories = birads_categories(raw)
    return BIRADS_RULES[rule](categories) if categories else None


def _text(value: object) -> str | None:
    """Cell -> stripped text; numbers written without a spurious ".0"; blanks -> None."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def invalid_birads_parts(raw: str | None) -> list[str]:
    """The parts of a BIRADS cell that are no category (9, -1, 2.5, abc); blanks are fine."""
    if raw is None:
        return []
    return [
        part.strip()
        for part in str(raw).split(MULTI_VALUE_SEPARATOR)
        if part.strip() and part.strip() not in _NO_VALUE and not _BIRADS_VALUE.match(part)
    ]


def _age(value: object) -> tuple[int | None, str | None]:
    """(age in years, None), or (None, why the cell is no age)."""
    text = _text(value)
    if text is None or text in _NO_VALUE:
        return None, None
    try:
        number = float(text)
    except ValueError:
        return None, "not a number"
    if not math.isfinite(number) or not number.is_integer():
        return None, "not a whole number of years"
    if int(number) not in AGE_RANGE_YEARS:
        first, last = AGE_RANGE_YEARS[0], AGE_RANGE_YEARS[-1]
        return None, f"outside {first}-{last} years"
    return int(number), None


def _upper(value: object) -> str | None:
    text = _text(value)
    return text.upper() if text else None


def _density(value: object) -> str | None:
    text = _text(value)
    return None if text in {None, "_", "-"} else text.upper()


def _pathology(value: object) -> tuple[str | None, str | None]:
    """(one of PATHOLOGY_CLASSES, None), (None, None) for a blank, or (None, why not):
    free text must not become a class of its own (a filter value, an unscored image)."""
    text = _text(value)
    if text is None or text in _NO_VALUE:
        return None, None
    pathology = " ".join(text.split()).lower()
    if pathology not in PATHOLOGY_CLASSES:
        return None, f"is no pathology class ({', '.join(PATHOLOGY_CLASSES)})"
    return pathology, None


def _field_for_header(header: object) -> str | None:
    label = " ".join(str(header or "").split()).lower()
    if label.startswith("pathology"):
        return "pathology"
    return _HEADER_FIELDS.get(label)


def _shown(value: object, limit: int = 40) -> str:
    """A cell as a report quotes it: floats as written (1e+300, not 301 digits), clipped."""
    text = f"{value:g}" if isinstance(value, float) else (_text(value) or "")
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _patient_ids_disagree(sheet_patient_id: str, name_patient_id: str) -> bool:
    try:
        return int(sheet_patient_id) != int(name_patient_id)
    except ValueError:
        return sheet_patient_id.strip().upper() != name_patient_id.strip().upper()


def _row_from_cells(
    cells: Mapping[str, object],
    image_name: str,
    row_number: int,
    where: str,
    headers: dict[str, str],
    problems: list[str],
) -> SheetRow:
    """One row; each unusable cell is reported (`where` + row + column) and left empty."""

    def report(name: str, value: object, why: str, outcome: str) -> None:
        problems.append(
            f"{where} row {row_number} ({image_name}), column {headers.get(name, name)}: "
            f"{_shown(value)} {why}; {outcome}"
        )

    patient_id = _text(cells.get("patient_id"))
    parsed_name = parse_cdd_name(image_name)  # side, kind and view: "P2_R_CM_CC"
    name_patient_id = parsed_name.patient_number if parsed_name else None
    withheld = None
    if patient_id is None:
        patient_id = name_patient_id
    elif name_patient_id is not None and _patient_ids_disagree(patient_id, name_patient_id):
        withheld = (
            f"Patient_ID {patient_id} disagrees with the image name (patient "
            f"{name_patient_id}); correct one of them"
        )
        report(
            "patient_id",
            patient_id,
            f"disagrees with the image name (patient {name_patient_id})",
            "the image is not imported until one of them is corrected",
        )
    age, age_problem = _age(cells.get("age"))
    if age_problem:
        report("age", cells.get("age"), f"is no age ({age_problem})", "stored without an age")
    birads_raw = _text(cells.get("birads_raw"))
    invalid_birads = invalid_birads_parts(birads_raw)
    if invalid_birads:
        shown = ", ".join(repr(part) for part in invalid_birads)
        report(
            "birads_raw",
            birads_raw,
            f"holds {shown}, no BI-RADS category (0-6, 4a-4c)",
            "stored without a BIRADS category (the text is kept)",
        )
    pathology, pathology_problem = _pathology(cells.get("pathology"))
    if pathology_problem:
        report("pathology", cells.get("pathology"), pathology_problem, "stored without a pathology")
    name_side, name_kind, name_view = (
        (parsed_name.side, parsed_name.kind, parsed_name.view) if parsed_name else (None,) * 3
    )
    return SheetRow(
        image_name=image_name,
        row_number=row_number,
        patient_id=patient_id,
        side=_upper(cells.get("side")) or _upper(name_side),
        image_type=_upper(cells.get("image_type")) or _upper(name_kind),
        age=age,
        breast_density=_density(cells.get("breast_density")),
        birads_raw=birads_raw,
        findings=_text(cells.get("findings")),
        view=_upper(cells.get("view")) or _upper(name_view),
        tags=_text(cells.get("tags")),
        machine=_text(cells.get("machine")),
        pathology=pathology,
        birads_invalid=bool(invalid_birads),
        withheld=withheld,
    )


def _describe_difference(first: SheetRow, other: SheetRow) -> str:
    first_values, other_values = first.annotation(), other.annotation()
    differing = [
        f"{name} ({first_values[name]!r} vs {other_values[name]!r})"
        for name in first_values
        if first_values[name] != other_values[name]
    ]
    return (
        f"{first.image_name}: rows {first.row_number} and {other.row_number} differ in "
        f"{', '.join(differing)}; row {first.row_number} is used"
    )


def parse_annotation_sheet(path: Path) -> SheetParseResult:
    """Read the first worksheet; the header row is the first row naming an Image_name column.

    Identical repeated rows count once; conflicting repeats keep the first row and are
    reported, so an import never silently picks between two radiologists' readings.
    """
    path = Path(path)
    if not path.is_file():
        raise SheetError(f"{path}: annotation sheet not found")
    from openpyxl import load_workbook  # here: reading a cell's rules needs no workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a non-xlsx file
        raise SheetError(f"{path}: not a readable .xlsx workbook ({exc})") from exc
    result = SheetParseResult()
    try:
        column_fields: dict[int, str] | None = None
        headers: dict[str, str] = {}  # field -> the sheet's own column label, for reports
        for row_number, values in enumerate(workbook.worksheets[0].iter_rows(values_only=True), 1):
            if column_fields is None:
                candidate = {i: _field_for_header(v) for i, v in enumerate(values)}
                if "image_name" in candidate.values():
                    column_fields = {i: name for i, name in candidate.items() if name}
                    headers = {name: str(values[i]).strip() for i, name in column_fields.items()}
                continue
            cells = {name: values[i] for i, name in column_fields.items() if i < len(values)}
            if all(_text(v) is None for v in values):
                continue
            raw_name = cells.get("image_name")
            image_name = _text(raw_name)
            if image_name is None:
                result.problems.append(f"{path.name} row {row_number}: no Image_name; skipped")
                continue
            if isinstance(raw_name, str) and raw_name != image_name:
                result.trimmed_names.append(image_name)
            cell_problems: list[str] = []
            row = _row_from_cells(cells, image_name, row_number, path.name, headers, cell_problems)
            earlier = result.rows.get(image_name)
            if earlier is None:
                result.problems.extend(cell_problems)  # a repeat's row is not used
                result.rows[image_name] = row
            elif earlier.annotation() == row.annotation():
                result.duplicates.append(image_name)
            else:
                result.conflicts.append(_describe_difference(earlier, row))
    finally:
        workbook.close()
    if column_fields is None:
        raise SheetError(f"{path}: no header row with an Image_name column")
    return result
