"""The filterable fields of a search, listed once: each one's column and how its values
compare drive the SQL filter, the per-row check, the numpy mask, the check against the
archive's values, the command line's options and the search page's form (in this order).

A categorical field compares its stored value, in the field's case, with the asked value in
the same case (side asks by its first letter and compares the stored letter as it is); a
bound compares the column with the asked number, and a row without one never passes.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from sqlalchemy import func
from sqlalchemy.sql.elements import ColumnElement

from mammosearch.db.models import Image
from mammosearch.vocabulary import ASSESSMENT_CATEGORIES

Case = Literal["upper", "lower"] | None
BIRADS = ASSESSMENT_CATEGORIES


@dataclass(frozen=True)
class CategoryField:
    """A field equal to one value, as the column holds it (in `case`)."""

    kind: ClassVar[str] = "category"  # how the form asks for it: a select
    name: str  # the request's field and the images column
    case: Case
    label: str  # the form's words for it
    help: str
    choices: tuple[str, ...] = ()  # a closed set the request and the CLI enforce
    choice_labels: tuple[str, ...] = ()  # the form's words for `choices`, in their order
    checked: bool = False  # a value no image has is an error, not zero results
    first_letter: bool = False  # asked as a word ("right"), stored as its letter ("R")

    def stored(self, value: str) -> str:
        """A stored value as it is compared."""
        return getattr(value, self.case)() if self.case else value

    def wanted(self, value: str) -> str:
        """An asked value as it is compared."""
        return value.upper()[:1] if self.first_letter else self.stored(value)

    def column(self) -> ColumnElement[Any]:
        """The column as SQL compares it."""
        column: ColumnElement[Any] = getattr(Image, self.name)
        if self.case == "upper":
            return func.upper(column)
        return func.lower(column) if self.case == "lower" else column


@dataclass(frozen=True)
class BoundField:
    """A field that bounds a numeric column from below or above."""

    kind: ClassVar[str] = "bound"  # how the form asks for it: a number input
    name: str  # the request's field
    column_name: str  # the images column it bounds
    passes: Callable[[Any, Any], Any]  # operator.ge for a minimum, operator.le for a maximum
    values: range  # the numbers it may take
    label: str  # the form's words for it
    help: str


FILTER_FIELDS: tuple[CategoryField | BoundField, ...] = (
    CategoryField(
        "side",
        None,
        label="Side",
        help="Results of this side.",
        choices=("L", "R"),
        choice_labels=("left", "right"),
        first_letter=True,
    ),
    CategoryField("view", "upper", label="View", help="CC, MLO, ...", checked=True),
    CategoryField(
        "modality",
        "lower",
        label="Modality",
        help="subtracted, low-energy, dicom, ...",
        checked=True,
    ),
    CategoryField(
        "pathology", "lower", label="Pathology", help="normal, benign, malignant", checked=True
    ),
    BoundField(
        "birads_min",
        "birads",
        operator.ge,
        ASSESSMENT_CATEGORIES,
        label="BIRADS from",
        help="Lowest BIRADS of a result.",
    ),
    BoundField(
        "birads_max",
        "birads",
        operator.le,
        ASSESSMENT_CATEGORIES,
        label="to",
        help="Highest BIRADS of a result.",
    ),
)
"""In the order the search form and the command line's help list them."""
FILTER_NAMES = tuple(field.name for field in FILTER_FIELDS)
CATEGORY_FIELDS = tuple(field for field in FILTER_FIELDS if isinstance(field, CategoryField))
BOUND_FIELDS = tuple(field for field in FILTER_FIELDS if isinstance(field, BoundField))
CHECKED_FILTERS = tuple(field.name for field in CATEGORY_FIELDS if field.checked)
FILTERED_COLUMN_NAMES = tuple(
    dict.fromkeys(
        field.name if isinstance(field, CategoryField) else field.column_name
        for field in FILTER_FIELDS
    )
)
"""The images columns the filters read, each once (the per-row check needs these)."""
