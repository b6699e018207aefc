"""The values a search filter may take: a value no image can have is an error, not zero results.

View and pathology have fixed vocabularies (the DICOM view codes, the pathology classes)
widened by whatever the archive holds; modality is open-ended (sheet types, DICOM Modality
tags), so its allowed values are the archive's own. Matching ignores case, as the filters do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mammosearch.db.models import Image
from mammosearch.search.filters import CHECKED_FILTERS
from mammosearch.vocabulary import KNOWN_VIEWS, PATHOLOGY_CLASSES

# The views a radiologist expects first; the rest of KNOWN_VIEWS follow in order.
COMMON_VIEWS = ("CC", "MLO")
REFRESH_AFTER_S = 60.0


class UnknownFilterValue(ValueError):
    """A filter value outside the allowed ones; the message names the filter and the choices."""


@dataclass(frozen=True)
class FilterValues:
    """Allowed values per checked filter, in the order a form lists them."""

    view: tuple[str, ...]
    pathology: tuple[str, ...]
    modality: tuple[str, ...]
    read_at: float = field(default_factory=time.monotonic, compare=False)

    def allowed(self, name: str) -> tuple[str, ...]:
        values: tuple[str, ...] = getattr(self, name)
        return values

    def check(self, name: str, value: str | None) -> None:
        """Raise UnknownFilterValue when `value` (any case) is not one of `name`'s values."""
        if value is None:
            return
        allowed = self.allowed(name)
        if value.strip().lower() in {choice.lower() for choice in allowed}:
            return
        if not allowed:
            raise UnknownFilterValue(
                f"{name}: {value!r} matches no image (the archive holds no {name} yet)"
            )
        raise UnknownFilterValue(f"{name}: {value!r} is not known; choose {', '.join(allowed)}")


def _distinct(session: Session, column: Any) -> list[str]:
    values = session.scalars(select(column).where(column.is_not(None)).distinct())
    return sorted({str(value).strip() for value in values if str(value).strip()})


def read_filter_values(session: Session) -> FilterValues:
    """The allowed values now: fixed vocabularies plus what the archive's images carry."""
    archive_views = [view.upper() for view in _distinct(session, func.upper(Image.view))]
    other_views = sorted((set(KNOWN_VIEWS) | set(archive_views)) - set(COMMON_VIEWS))
    pathologies = dict.fromkeys(name.capitalize() for name in PATHOLOGY_CLASSES)
    for value in _distinct(session, Image.pathology):
        if value.lower() not in {known.lower() for known in pathologies}:
            pathologies[value] = None
    return FilterValues(
        view=(*COMMON_VIEWS, *other_views),
        pathology=tuple(pathologies),
        modality=tuple(_distinct(session, Image.modality)),
    )


class FilterValuesCache:
    """Read once a minute; a miss re-reads first, so a new import's modality is known at once."""

    def __init__(self) -> None:
        self._values: FilterValues | None = None

    def get(self, session: Session) -> FilterValues:
        if self._values is None or time.monotonic() - self._values.read_at > REFRESH_AFTER_S:
            self._values = read_filter_values(session)
        return self._values

    def check(self, session: Session, values: dict[str, str | None]) -> None:
        """Raise UnknownFilterValue for the first value that is not allowed, after a re-read."""
        current = self.get(session)
        try:
            for name in CHECKED_FILTERS:
                current.check(name, values.get(name))
        except UnknownFilterValue:
            self._values = current = read_filter_values(session)
            for name in CHECKED_FILTERS:
                current.check(name, values.get(name))
