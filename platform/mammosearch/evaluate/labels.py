"""The labels an evaluation can judge relevance by: one registry, name -> image row -> class."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

BIRADS_CATEGORIES = (1, 2, 3, 4, 5, 6)
PATHOLOGY_CLASSES = ("normal", "benign", "malignant")


@dataclass(frozen=True)
class LabelSpec:
    """A way to put an image into a class; `of_image` returns None when the image has no label."""

    name: str
    classes: tuple[Hashable, ...]
    of_image: Callable[[Any], Hashable | None]
    description: str


def _field(image_row: Any, name: str) -> Any:
    """Read `name` from an ORM row, a SQL result row or a plain dict alike."""
    if isinstance(image_row, Mapping):
        return image_row.get(name)
    return getattr(image_row, name, None)


def birads_of(image_row: Any) -> int | None:
    value = _field(image_row, "birads")
    try:
        category = int(value)
    except (TypeError, ValueError):
        return None
    return category if category in BIRADS_CATEGORIES else None


def birads_coarse_of(image_row: Any) -> str | None:
    category = birads_of(image_row)
    if category is None:
        return None
    if category == 1:
        return "1"
    return "2-3" if category <= 3 else "4-6"


def pathology_of(image_row: Any) -> str | None:
    value = _field(image_row, "pathology")
    if value is None:
        return None
    pathology = str(value).strip().lower()
    return pathology if pathology in PATHOLOGY_CLASSES else None


LABELS: dict[str, LabelSpec] = {
    "birads": LabelSpec(
        "birads", BIRADS_CATEGORIES, birads_of, "BI-RADS category 1..6 (6 classes)"
    ),
    "birads-coarse": LabelSpec(
        "birads-coarse",
        ("1", "2-3", "4-6"),
        birads_coarse_of,
        "BI-RADS grouped: 1 (negative) / 2-3 (benign, probably benign) / 4-6 (suspicious)",
    ),
    "pathology": LabelSpec(
        "pathology", PATHOLOGY_CLASSES, pathology_of, "pathology: normal / benign / malignant"
    ),
}


def get_label(name: str) -> LabelSpec:
    try:
        return LABELS[name]
    except KeyError:
        raise ValueError(f"label {name!r}: unknown; choose one of {', '.join(LABELS)}") from None
