"""A pathology cell with free text is reported by row and column and stored as no
pathology, never made a class of its own."""

from __future__ import annotations

from pathlib import Path

from mammosearch.ingest.sheet import parse_annotation_sheet
from tests.unit.ingest.test_cdd_cesm_sheet import cm_row, write_sheet

COLUMN = "Pathology Classification/ Follow up"


def test_free_text_pathology_is_reported_and_stored_as_none(tmp_path: Path) -> None:
    path = write_sheet(tmp_path / "s.xlsx", [
        cm_row("P1_L_CM_CC", pathology=" Malignant "),
        cm_row("P2_L_CM_CC", pathology="benign?? follow up in 6 months"),
        cm_row("P3_L_CM_CC", pathology="Malignnat"),
        cm_row("P4_L_CM_CC", pathology="_"),
        cm_row("P5_L_CM_CC", pathology="NORMAL"),
    ])  # fmt: skip
    result = parse_annotation_sheet(path)
    pathologies = {name: row.pathology for name, row in result.rows.items()}
    assert pathologies == {
        "P1_L_CM_CC": "malignant", "P2_L_CM_CC": None, "P3_L_CM_CC": None,
        "P4_L_CM_CC": None, "P5_L_CM_CC": "normal",
    }  # fmt: skip
    assert result.problems == [
        f"s.xlsx row 3 (P2_L_CM_CC), column {COLUMN}: 'benign?? follow up in 6 months' is no "
        "pathology class (normal, benign, malignant); stored without a pathology",
        f"s.xlsx row 4 (P3_L_CM_CC), column {COLUMN}: 'Malignnat' is no pathology class "
        "(normal, benign, malignant); stored without a pathology",
    ]
    assert all(row.withheld is None for row in result.rows.values())  # the images are kept
