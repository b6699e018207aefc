"""One search as the pages and the API both run it: search, time, audit.

The request itself is mammosearch.search_request.SearchRequest (shared with the CLI).
"""

from __future__ import annotations

from typing import Any

from flask import url_for
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from mammosearch.audit import Actor, record_access
from mammosearch.config import Settings
from mammosearch.search_request import BadSearchRequest, SearchRequest
from web.db import commit_request
from web.metrics import observe_search_timing

ADDRESSABLE_QUERIES = ("image_id",)
"""The request fields that name an archived query; a search with one of them has an address."""


def has_addressable_query(values: Any) -> bool:
    """The values (a form, URL arguments) name an archived query, so they are a search to run."""
    return any(str(values.get(name) or "").strip() for name in ADDRESSABLE_QUERIES)


def results_url(
    params: SearchRequest,
    endpoint: str = "search.search_page",
    *,
    external: bool = False,
    **extra: Any,
) -> str | None:
    """The GET address that reproduces this search's results page (bookmark, share, back).

    Every field set away from its default goes in (query, unit, k, metric, filters, order),
    so a new request field is carried without a change here. An upload has no address
    (its pixels cannot travel in a URL): None, and the page says so.
    """
    if not extra and not any(getattr(params, name, None) for name in ADDRESSABLE_QUERIES):
        return None
    fields = params.model_dump(exclude_none=True, exclude_defaults=True)
    arguments = {name: ("1" if value is True else value) for name, value in fields.items()}
    return url_for(endpoint, _external=external, **extra, **arguments)


def check_one_query(params: SearchRequest, upload_name: str | None) -> None:
    """A search has one query: an uploaded file or an archived image id, never both."""
    if params.image_id is not None and upload_name:
        raise BadSearchRequest(
            f"give one query, not both: the uploaded file {upload_name!r} or archived "
            f"image_id {params.image_id}; clear one and search again"
        )


def run_search(
    session: Session,
    settings: Settings,
    params: SearchRequest,
    query_image: PILImage.Image | None,
    user: Actor | None,
    remote_addr: str | None,
) -> Any:
    """Search by archived image id or by an uploaded image; record it in the audit log."""
    from mammosearch.search import get_search_service

    if params.image_id is None and query_image is None:
        raise BadSearchRequest("give an image to upload or an archived image_id")
    filters = params.search_filters()
    service = get_search_service(settings)
    if params.image_id is not None:
        # The query image's row (its patient, for the audit) is read with the result rows;
        # an id not in the archive raises ImageNotFound, a LookupError (404).
        response = service.search_image_id(
            session,
            params.image_id,
            params.k,
            params.metric,
            filters,
            params.exclude_same_patient,
            ranking=params.ranking,
        )
    else:
        response = service.search_image(
            session,
            query_image,
            k=params.k,
            metric=params.metric,
            filters=filters,
            ranking=params.ranking,
        )
    observe_search_timing(response.timing_ms)
    record_access(
        session,
        user,
        "search",
        patient_id=response.query_patient_id,
        image_id=params.image_id,
        detail={
            "query": "image_id" if params.image_id is not None else "upload",
            "k": params.k,
            "metric": params.metric,
            "filters": params.filters_detail(),
            "exclude_same_patient": params.exclude_same_patient,
            "ranking": response.ranking,
            "result_image_ids": [hit.image_id for hit in response.results],
        },
        remote_addr=remote_addr,
    )
    commit_request(session)
    return response
