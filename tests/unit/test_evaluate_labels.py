"""Labels: image rows -> classes, and images without a label stay out."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mammosearch.evaluate.labels import LABELS, get_label


@pytest.mark.parametrize(
    ("birads", "fine", "coarse"),
    [
        (1, 1, "1"),
        (2, "2-3", "2-3"),
        (3, 3, "2-3"),
        (4, 4, "4-6"),
        (5, 5, "4-6"),
        (6, 6, "4-6"),
        ("3", 3, "2-3"),
        (0, None, None),
        (7, None, None),
        (None, None, None),
    ],
)
def test_birads_and_birads_coarse(birads: object, fine: object, coarse: str | None) -> None:
    """BI-RADS 1..6 are classes; coarse groups 1 / 2-3 / 4-6; anything else has no label."""
    row = {"birads": birads}
    if fine != "2-3":
        assert LABELS["birads"].of_image(row) == fine
    assert LABELS["birads-coarse"].of_image(row) == coarse


@pytest.mark.parametrize(
    ("pathology", "expected"),
    [
        ("Malignant", "malignant"),
        ("Benign ", "benign"),
        ("normal", "normal"),
        ("unknown", None),
        (None, None),
    ],
)
def test_pathology_reads_orm_rows_and_dicts_alike(pathology: str | None, expected: object) -> None:
    """Case and stray spaces do not matter; other values are not a pathology label."""
    assert LABELS["pathology"].of_image({"pathology": pathology}) == expected
    assert LABELS["pathology"].of_image(SimpleNamespace(pathology=pathology)) == expected


def test_the_registry_holds_the_three_labels_with_their_classes() -> None:
    """One place lists the labels and their class order."""
    assert list(LABELS) == ["birads", "birads-coarse", "pathology"]
    assert LABELS["birads"].classes == (1, 2, 3, 4, 5, 6)
    assert LABELS["birads-coarse"].classes == ("1", "2-3", "4-6")
    assert LABELS["pathology"].classes == ("normal", "benign", "malignant")


def test_unknown_label_names_the_choices() -> None:
    with pytest.raises(ValueError, match="density.*birads, birads-coarse, pathology"):
        get_label("density")
