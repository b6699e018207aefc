"""The annotation sheet's quirks: trailing spaces, `$` values, repeated rows, `_` density."""

from __future__ import annotations

from pathlib import Path

import pytest
from openpyxl import Workbook

from mammosearch.ingest.sheet import (
    SheetError,
    birads_categories,
    choose_birads,
    parse_annotation_sheet,
)

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


def write_sheet(
    path: Path, rows: list[tuple[object, ...]], header: tuple[str, ...] = HEADER
) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


def cm_row(
    name: str,
    birads: object = 2,
    findings: str = "Mass",
    pathology: str = "Benign",
    density: str = "_",
) -> tuple[object, ...]:
    patient = int(name.strip().split("_")[0][1:])
    side, view = name.strip().split("_")[1], name.strip().split("_")[3]
    return (name, patient, side, "CESM", 50, density, birads, findings, view, "mass", 1, pathology)


def test_trailing_spaces_in_image_names_are_stripped(tmp_path: Path) -> None:
    result = parse_annotation_sheet(write_sheet(tmp_path / "s.xlsx", [cm_row("P3_L_CM_CC ")]))
    assert list(result.rows) == ["P3_L_CM_CC"]
    assert result.trimmed_names == ["P3_L_CM_CC"]


def test_dollar_joined_values_keep_their_raw_text(tmp_path: Path) -> None:
    row = cm_row("P2_R_CM_CC", birads="3$2", findings="Mass $Calcifications ")
    parsed = parse_annotation_sheet(write_sheet(tmp_path / "s.xlsx", [row])).rows["P2_R_CM_CC"]
    assert parsed.birads_raw == "3$2"
    assert parsed.findings == "Mass $Calcifications"


@pytest.mark.parametrize(("rule", "expected"), [("max", 4), ("first", 2), ("min", 2)])
def test_each_birads_rule_picks_its_category(rule: str, expected: int) -> None:
    assert choose_birads("2$4$3", rule) == expected


def test_default_birads_rule_is_the_highest_category() -> None:
    assert choose_birads("3$2") == 3
    assert choose_birads(5) == 5


def test_unknown_birads_rule_names_the_choices() -> None:
    with pytest.raises(ValueError, match="max, first, min"):
        choose_birads("3", "median")


def test_birads_cells_without_a_category_give_none() -> None:
    assert choose_birads(None) is None
    assert choose_birads("n/a") is None
    assert birads_categories("4a$ 2 ") == [4, 2]


def test_identical_duplicate_rows_count_once(tmp_path: Path) -> None:
    rows = [cm_row("P2_R_CM_CC"), cm_row("P2_R_CM_CC "), cm_row("P2_R_CM_MLO")]
    result = parse_annotation_sheet(write_sheet(tmp_path / "s.xlsx", rows))
    assert sorted(result.rows) == ["P2_R_CM_CC", "P2_R_CM_MLO"]
    assert result.duplicates == ["P2_R_CM_CC"]
    assert result.conflicts == []


def test_conflicting_duplicate_rows_are_reported_and_the_first_is_kept(tmp_path: Path) -> None:
    rows = [cm_row("P2_R_CM_CC", birads=2), cm_row("P2_R_CM_CC", birads=5)]
    result = parse_annotation_sheet(write_sheet(tmp_path / "s.xlsx", rows))
    assert result.rows["P2_R_CM_CC"].birads_raw == "2"
    assert len(result.conflicts) == 1
    assert "P2_R_CM_CC: rows 2 and 3 differ in birads_raw ('2' vs '5')" in result.conflicts[0]


def test_density_underscore_is_none_and_pathology_is_lower_case(tmp_path: Path) -> None:
    rows = [cm_row("P2_R_CM_CC", pathology=" Malignant"), cm_row("P2_R_CM_MLO", density="c")]
    result = parse_annotation_sheet(write_sheet(tmp_path / "s.xlsx", rows))
    cc, mlo = result.rows["P2_R_CM_CC"], result.rows["P2_R_CM_MLO"]
    assert (cc.breast_density, cc.pathology, cc.modality) == (None, "malignant", "subtracted")
    assert mlo.breast_density == "C"
    assert (cc.patient_id, cc.side, cc.view, cc.age, cc.machine) == ("2", "R", "CC", 50, "1")


def test_dm_rows_are_low_energy(tmp_path: Path) -> None:
    row = ("P2_R_DM_CC", 2, "R", "DM", 50, "C", 2, "x", "CC", "", 1, "Normal")
    parsed = parse_annotation_sheet(write_sheet(tmp_path / "s.xlsx", [row])).rows["P2_R_DM_CC"]
    assert parsed.modality == "low-energy"


def test_blank_rows_are_ignored_and_nameless_rows_reported(tmp_path: Path) -> None:
    rows = [(None,) * 12, (None, 2, "R", "CESM"), cm_row("P2_R_CM_CC")]
    result = parse_annotation_sheet(write_sheet(tmp_path / "s.xlsx", rows))
    assert list(result.rows) == ["P2_R_CM_CC"]
    assert result.problems == ["s.xlsx row 3: no Image_name; skipped"]


def test_a_sheet_without_image_name_column_is_refused_by_name(tmp_path: Path) -> None:
    path = write_sheet(tmp_path / "s.xlsx", [("a", "b")], header=("Name", "Other"))
    with pytest.raises(SheetError, match=r"s\.xlsx: no header row with an Image_name column"):
        parse_annotation_sheet(path)


def test_a_file_that_is_not_a_workbook_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "s.xlsx"
    path.write_text("not a workbook")
    with pytest.raises(SheetError, match=r"s\.xlsx: not a readable \.xlsx"):
        parse_annotation_sheet(path)
