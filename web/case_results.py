"""How a case search's results are hung in the comparison viewer: the query case in the left
column, the chosen result case in the right, one row per view (CC above MLO).

Each row pairs the query's view with the result's view of the same code (and, where the
result has it, the same modality), so like is compared with like.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flask import url_for
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from mammosearch.db.models import Image
from web.imagefiles import viewer_data_url
from web.viewer_sources import image_source, pane_sources

HANGING_VIEWS = ("CC", "MLO")  # rows, top to bottom; other view codes follow
MAX_ROWS = 2  # the viewer shows two rows of two panes


@dataclass(frozen=True)
class QueryPane:
    """One view of the query case, as its pane shows it."""

    view: str  # the row's view code ("" when the view is unknown)
    modality: str | None
    src: str
    width: int
    height: int
    overlay: str
    spacing_mm: float | None = None
    depth: str | None = None  # JSON: an original deeper than 8 bits (web.viewer_sources)


def _code(view: str | None) -> str:
    return (view or "").strip().upper()


def _row_order(code: str) -> tuple[int, str]:
    return (HANGING_VIEWS.index(code) if code in HANGING_VIEWS else len(HANGING_VIEWS), code)


def view_overlay(
    place: str,
    side: str | None,
    view: str | None,
    modality: str | None,
    birads: int | None = None,
    pathology: str | None = None,
) -> str:
    """The text over a pane: place (query, #rank), side, view, modality; then the labels."""
    first = " ".join(part for part in (place, "·", side or "?", view or "", modality or "") if part)
    shown_birads = birads if birads is not None else "–"
    return f"{first}\nBIRADS {shown_birads} · {pathology or '–'}"


def query_panes(
    session: Session,
    query: Mapping[str, Any],
    uploaded: Mapping[str, PILImage.Image],
) -> list[QueryPane]:
    """The query case's views, one per row: archived views by image id, uploads from memory.

    `uploaded`: the uploaded files' decoded images by file name (they are not stored).
    """
    chosen: dict[str, QueryPane] = {}
    for described in query.get("views", []):
        code = _code(described.get("view"))
        if code in chosen:
            continue  # a second modality of the same view: the first one hangs
        archived = described.get("archived_as") or {}
        image_id = archived.get("image_id")
        row = session.get(Image, image_id) if image_id is not None else None
        overlay = view_overlay(
            "query",
            described.get("side"),
            described.get("view"),
            described.get("modality"),
            row.birads if row is not None else None,
            row.pathology if row is not None else None,
        )
        if described.get("name") in uploaded:
            shown = viewer_data_url(uploaded[described["name"]])
            chosen[code] = QueryPane(
                code, described.get("modality"), shown.url, shown.width, shown.height, overlay
            )
        elif row is not None:
            source = image_source(row)
            chosen[code] = QueryPane(
                code,
                described.get("modality"),
                source["src"],
                row.width,
                row.height,
                overlay,
                source["spacing_mm"],
                source["depth"],
            )
    return [chosen[code] for code in sorted(chosen, key=_row_order)][:MAX_ROWS]


@dataclass(frozen=True)
class Hanging:
    """A case search's comparison: the query's panes and, per result case, its views beside them."""

    panes: list[QueryPane]
    views: dict[str, str]  # case_id -> the JSON its compare button carries

    def viewer_panes(self, scope: str = "") -> list[dict[str, Any]]:
        """The viewer's panes row by row: the query's view (left), the result's (right)."""
        panes: list[dict[str, Any]] = []
        for pane in self.panes:
            name = (pane.view or "any").lower()
            panes.append(
                {
                    "id": f"{scope}compare-query-{name}",
                    "caption": f"Query {pane.view}".strip(),
                    "src": pane.src,
                    "width": pane.width,
                    "height": pane.height,
                    "column": "left",
                    "view": pane.view,
                    "overlay": pane.overlay,
                    "spacing_mm": pane.spacing_mm,
                    "depth": pane.depth,
                }
            )
            panes.append(
                {
                    "id": f"{scope}compare-result-{name}",
                    "caption": "",
                    "case_href": "",
                    "column": "right",
                    "view": pane.view,
                    "result": True,
                }
            )
        return panes


def hang(session: Session, response: Any, uploaded: Mapping[str, PILImage.Image]) -> Hanging:
    """The comparison of a case search's response (`uploaded`: the query files by name)."""
    panes = query_panes(session, response.query, uploaded)
    sources = pane_sources(
        session, (view.image_id for hit in response.results for view in hit.views)
    )
    return Hanging(
        panes, {hit.case_id: result_views(hit, panes, sources) for hit in response.results}
    )


def result_views(
    hit: Any, panes: Sequence[QueryPane], sources: Mapping[int, Mapping[str, Any]]
) -> str:
    """JSON for a result's compare button: per row's view code, the result view that hangs
    beside the query's (same code, the query's modality first) with its overlay."""
    hung: dict[str, dict[str, Any]] = {}
    for pane in panes:
        same_code = [view for view in hit.views if _code(view.view) == pane.view or not pane.view]
        same_code.sort(
            key=lambda view: (
                view.modality != pane.modality,
                view.image_id != hit.best_view_image_id,
            )
        )
        if not same_code:
            continue
        view = same_code[0]
        hung[pane.view] = {
            **sources.get(view.image_id, {}),
            "src": url_for("cases.full_resolution_file", image_id=view.image_id),
            "overlay": view_overlay(
                f"#{hit.rank}", view.side, view.view, view.modality, view.birads, view.pathology
            ),
        }
    return json.dumps(hung, ensure_ascii=False)
