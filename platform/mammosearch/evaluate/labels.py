"""The labels an evaluation can judge relevance by: one registry, name -> image row -> class."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from mammosearch.vocabulary import COARSE_GROUPS, PATHOLOGY_CLASSES, RETRIEVAL_CLASSES

FINDING_CLASSES = ("none", "mass", "non-mass", "foci", "lymph node", "other")
FINDING_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("none", ("no mass", "non enhancement", "no enhancement", "normal")),
    ("non-mass", ("non mass", "non-mass", "nonmass")),
    ("mass", ("mass",)),
    ("foci", ("foci", "focus", "stippled", "focal", "nodule")),
    ("lymph node", ("imln", "lymph")),
)
"""The first class whose keyword the findings text holds (lower case); else "other".

CESM findings name the enhancement's kind (BI-RADS lexicon): none, a mass, non-mass
enhancement, foci/stippled enhancement, an intramammary lymph node. The order matters:
"no mass or non mass enhancement" is none, "non mass enhancement" is non-mass.
"""


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
    return category if category in RETRIEVAL_CLASSES else None


def birads_coarse_of(image_row: Any) -> str | None:
    category = birads_of(image_row)
    return None if category is None else COARSE_GROUPS[category]


def pathology_of(image_row: Any) -> str | None:
    value = _field(image_row, "pathology")
    if value is None:
        return None
    pathology = str(value).strip().lower()
    return pathology if pathology in PATHOLOGY_CLASSES else None


def finding_of(image_row: Any) -> str | None:
    value = _field(image_row, "findings")
    text = str(value).strip().lower() if value is not None else ""
    if not text:
        return None
    for finding, keywords in FINDING_KEYWORDS:
        if any(keyword in text for keyword in keywords):
            return finding
    return "other"


LABELS: dict[str, LabelSpec] = {
    "birads": LabelSpec(
        "birads", RETRIEVAL_CLASSES, birads_of, "BI-RADS category 1..6 (6 classes)"
    ),
    "birads-coarse": LabelSpec(
        "birads-coarse",
        tuple(dict.fromkeys(COARSE_GROUPS.values())),
        birads_coarse_of,
        "BI-RADS grouped: 1 (negative) / 2-3 (benign, probably benign) / 4-6 (suspicious)",
    ),
    "pathology": LabelSpec(
        "pathology", PATHOLOGY_CLASSES, pathology_of, "pathology: normal / benign / malignant"
    ),
    "finding": LabelSpec(
        "finding",
        FINDING_CLASSES,
        finding_of,
        "the enhancement the findings describe: none / mass / non-mass / foci / lymph node / other",
    ),
}


def get_label(name: str) -> LabelSpec:
    try:
        return LABELS[name]
    except KeyError:
        raise ValueError(f"label {name!r}: unknown; choose one of {', '.join(LABELS)}") from None
