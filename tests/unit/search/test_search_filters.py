"""One table of filterable fields drives the request, the SQL, the row check and the CLI."""

from __future__ import annotations

from types import SimpleNamespace

from mammosearch.cli.search_commands import search
from mammosearch.db.models import ImageStatus
from mammosearch.search.filters import FILTER_NAMES
from mammosearch.search.request import SearchFilters, parse_search_request


def _row(**values: object) -> SimpleNamespace:
    row = dict(side="R", view="cc", modality="Subtracted", pathology="Benign", birads=3)
    return SimpleNamespace(**{"status": ImageStatus.INDEXED, "patient_id": 7, **row, **values})


def test_every_filterable_field_is_a_search_option_and_reaches_the_filters() -> None:
    """A field added to the table is offered by the CLI and carried by a request."""
    options = {param.name for param in search.params}
    assert set(FILTER_NAMES) <= options
    values = {"side": "R", "view": "cc", "modality": "x", "pathology": "benign"}
    values |= {"birads_min": 2, "birads_max": 4}
    filters = parse_search_request({"image_id": 1, **values}).search_filters()
    assert [name for name in FILTER_NAMES if getattr(filters, name) is None] == []


def test_a_row_passes_as_the_sql_would_compare_it() -> None:
    """Side by its first letter; view upper-case; modality and pathology lower-case; a
    BIRADS bound leaves out a row without BIRADS."""
    assert SearchFilters(side="right", view="CC", modality="subtracted").matches(_row())
    assert SearchFilters(pathology="BENIGN", birads_min=3, birads_max=3).matches(_row())
    assert not SearchFilters(side="L").matches(_row())
    assert not SearchFilters(birads_min=1).matches(_row(birads=None))
    assert not SearchFilters(exclude_patient_id=7).matches(_row())
    assert not SearchFilters().matches(_row(status=ImageStatus.EMBEDDED))
