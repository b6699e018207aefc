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


def test_the_registry_holds_the_four_labels_with_their_classes() -> None:
    """One place lists the labels and their class order."""
    assert list(LABELS) == ["birads", "birads-coarse", "pathology", "finding"]
    assert LABELS["birads"].classes == (1, 2, 3, 4, 5, 6)
    assert LABELS["birads-coarse"].classes == ("1", "2-3", "4-6")
    assert LABELS["pathology"].classes == ("normal", "benign", "malignant")
    assert LABELS["finding"].classes[:3] == ("none", "mass", "non-mass")


def test_unknown_label_names_the_choices() -> None:
    with pytest.raises(ValueError, match="density.*birads, birads-coarse, pathology, finding"):
        get_label("density")


@pytest.mark.parametrize(
    ("findings", "expected"),
    [
        ("No mass or non mass enhancement", "none"),
        ("non enhancement", "none"),
        ("Segmental non mass enhancement", "non-mass"),
        ("Ductal non mass enhancement$Homogenously enhancing mass", "non-mass"),
        ("Irregular heterogenously enhancing mass", "mass"),
        ("Stippled enhancement", "foci"),
        ("IMLN", "lymph node"),
        ("dilated retroareolar duct", "other"),
        ("  ", None),
        (None, None),
    ],
)
def test_the_finding_is_the_kind_of_enhancement_the_report_names(
    findings: str | None, expected: str | None
) -> None:
    """CDD-CESM's own Findings texts; "no mass or non mass enhancement" is no finding."""
    assert LABELS["finding"].of_image({"findings": findings}) == expected
    assert LABELS["finding"].of_image(SimpleNamespace(findings=findings)) == expected
