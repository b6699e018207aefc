"""One search as the pages and the API both run it: parse, search, time, audit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image as PILImage
from sqlalchemy.orm import Session

from mammosearch.audit import record_access
from mammosearch.birads import ASSESSMENT_CATEGORIES
from mammosearch.config import Settings
from mammosearch.db.models import Image, User
from web.metrics import observe_search_timing

MAX_K = 100
SIDES = ("L", "R")


class BadSearchRequest(ValueError):
    """A search parameter that cannot be used; the message names it."""


@dataclass(frozen=True)
class SearchParams:
    k: int
    metric: str
    side: str | None
    view: str | None
    modality: str | None
    birads_min: int | None
    birads_max: int | None
    pathology: str | None
    exclude_same_patient: bool
    image_id: int | None

    def filters_detail(self) -> dict[str, Any]:
        names = ("side", "view", "modality", "birads_min", "birads_max", "pathology")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def _text(values: Mapping[str, Any], name: str) -> str | None:
    value = values.get(name)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _integer(values: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    raw = _text(values, name)
    if raw is None:
        return None
    try:
        number = int(raw)
    except ValueError:
        raise BadSearchRequest(f"{name}: {raw!r} is not a whole number") from None
    if not low <= number <= high:
        raise BadSearchRequest(f"{name}: {number} is outside {low}..{high}")
    return number


def _flag(values: Mapping[str, Any], name: str) -> bool:
    value = values.get(name)
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in {"1", "true", "yes", "on"}


def parse_search_params(values: Mapping[str, Any], metrics: tuple[str, ...]) -> SearchParams:
    """Read k, metric, filters and image_id from a form or a JSON body."""
    metric = _text(values, "metric") or ("cosine" if "cosine" in metrics else metrics[0])
    if metric not in metrics:
        raise BadSearchRequest(f"metric: {metric!r} is not indexed; choose {', '.join(metrics)}")
    side = _text(values, "side")
    if side is not None:
        side = side.upper()[:1]
        if side not in SIDES:
            raise BadSearchRequest(f"side: {values.get('side')!r} is not L or R")
    view = _text(values, "view")
    low, high = ASSESSMENT_CATEGORIES[0], ASSESSMENT_CATEGORIES[-1]
    birads_min = _integer(values, "birads_min", low, high)
    birads_max = _integer(values, "birads_max", low, high)
    if birads_min is not None and birads_max is not None and birads_min > birads_max:
        raise BadSearchRequest(f"birads_min {birads_min} is above birads_max {birads_max}")
    return SearchParams(
        k=_integer(values, "k", 1, MAX_K) or 10,
        metric=metric,
        side=side,
        view=view.upper() if view else None,
        modality=_text(values, "modality"),
        birads_min=birads_min,
        birads_max=birads_max,
        pathology=_text(values, "pathology"),
        exclude_same_patient=_flag(values, "exclude_same_patient"),
        image_id=_integer(values, "image_id", 1, 2**63 - 1),
    )


def check_one_query(params: SearchParams, upload_name: str | None) -> None:
    """A search has one query: an uploaded file or an archived image id, never both."""
    if params.image_id is not None and upload_name:
        raise BadSearchRequest(
            f"give one query, not both: the uploaded file {upload_name!r} or archived "
            f"image_id {params.image_id}; clear one and search again"
        )


def run_search(
    session: Session,
    settings: Settings,
    params: SearchParams,
    query_image: PILImage.Image | None,
    user: User | None,
    remote_addr: str | None,
) -> Any:
    """Search by archived image id or by an uploaded image; record it in the audit log."""
    from mammosearch.search import SearchFilters, get_search_service

    query_row: Image | None = None
    if params.image_id is not None:
        query_row = session.get(Image, params.image_id)
        if query_row is None:
            raise LookupError(f"image {params.image_id}: not in the archive")
    elif query_image is None:
        raise BadSearchRequest("give an image to upload or an archived image_id")
    filters = SearchFilters(
        side=params.side,
        view=params.view,
        modality=params.modality,
        birads_min=params.birads_min,
        birads_max=params.birads_max,
        pathology=params.pathology,
    )
    service = get_search_service(settings)
    if query_row is not None:
        response = service.search_image_id(
            session, query_row.id, params.k, params.metric, filters, params.exclude_same_patient
        )
    else:
        response = service.search_image(
            session, query_image, k=params.k, metric=params.metric, filters=filters
        )
    observe_search_timing(response.timing_ms)
    record_access(
        session,
        user,
        "search",
        patient_id=query_row.patient_id if query_row is not None else None,
        image_id=query_row.id if query_row is not None else None,
        detail={
            "query": "image_id" if query_row is not None else "upload",
            "k": params.k,
            "metric": params.metric,
            "filters": params.filters_detail(),
            "exclude_same_patient": params.exclude_same_patient,
            "result_image_ids": [hit.image_id for hit in response.results],
        },
        remote_addr=remote_addr,
    )
    session.commit()
    return response
