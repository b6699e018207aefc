"""One search as the pages and the API both run it: search, time, audit.

The request itself is mammosearch.search.request.SearchRequest (shared with the CLI).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NoReturn

from flask import url_for
from PIL import Image as PILImage
from sqlalchemy.orm import Session
from werkzeug.exceptions import ServiceUnavailable

from mammosearch.access.audit import Actor, record_access
from mammosearch.config import Settings
from mammosearch.pipeline.index_health import IndexRepairing
from mammosearch.search.case_search import CaseSearchResponse, QueryUpload
from mammosearch.search.case_search import run_search as run_case_or_image_search
from mammosearch.search.request import CASE_QUERY_FIELDS, BadSearchRequest, SearchRequest
from web.configuration import work_queue
from web.db import commit_request
from web.index_repair import RETRY_AFTER_S, request_repair
from web.metrics import observe_search_timing

log = logging.getLogger(__name__)
ADDRESSABLE_QUERIES = ("image_id", *(name for name in CASE_QUERY_FIELDS if name != "breast"))
"""The request fields that name an archived query; a search with one of them has an address
(`breast` only goes with patient_id or study_uid)."""


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
    if not extra and not params.archived_query:
        return None
    fields = params.model_dump(exclude_none=True, exclude_defaults=True)
    fields["unit"] = params.unit  # always: the page's default unit (case) is not the API's
    flags = {True: "1", False: "0"}
    arguments = {
        name: flags[value] if isinstance(value, bool) else value for name, value in fields.items()
    }
    return url_for(endpoint, _external=external, **extra, **arguments)


def check_one_query(params: SearchRequest, upload_name: str | None) -> None:
    """A search has one query: uploaded files or an archived image/case, never both."""
    if params.archived_query and upload_name:
        asked = (
            f"archived image_id {params.image_id}"
            if params.image_id is not None
            else "an archived case"
        )
        raise BadSearchRequest(
            f"give one query, not both: the uploaded file {upload_name!r} or {asked}; "
            "clear one and search again"
        )


def repairing_message(error: IndexRepairing) -> str:
    """What a user is told while the index is being repaired (no server paths; the log has
    them), after asking for the repair."""
    log.error("search refused: %s", error)
    request_repair(work_queue(), error.health.space_id)
    return (
        f"{error.health.summary()}. No answer is given until it is whole again, rather than"
        f" a list with holes; try again in a minute."
    )


def refuse_while_repairing(error: IndexRepairing) -> NoReturn:
    """Answer 503 with the repair message and a Retry-After."""
    raise ServiceUnavailable(
        description=repairing_message(error), retry_after=RETRY_AFTER_S
    ) from None


def run_search(
    session: Session,
    settings: Settings,
    params: SearchRequest,
    query_image: PILImage.Image | None,
    user: Actor | None,
    remote_addr: str | None,
    uploads: Sequence[QueryUpload] = (),
) -> Any:
    """Any search (mammosearch.search.case_search.run_search: image or case unit, archived or
    uploaded query); record it in the audit log with what it showed.

    `uploads`: the query files with their bytes (web.uploads.read_query_uploads), so an
    archived file is recognised; `query_image` alone (no bytes) is an older caller's upload.
    """
    from mammosearch.search.service import get_search_service

    service = get_search_service(settings)
    if query_image is not None and not uploads:
        uploads = [QueryUpload("upload", b"", query_image)]
    # The query's row (its patient, for the audit) is read with the result rows; an id not
    # in the archive raises ImageNotFound, a LookupError (404).
    response = run_case_or_image_search(service, session, params, uploads)
    observe_search_timing(response.timing_ms)
    detail: dict[str, Any] = {
        "query": "upload" if uploads else _archived_query_name(params),
        "unit": params.unit,
        "k": params.k,
        "metric": params.metric,
        "filters": params.filters_detail(),
        "exclude_same_patient": params.exclude_same_patient,
        "ranking": response.ranking,
        "result_image_ids": response.shown_image_ids,
    }
    if isinstance(response, CaseSearchResponse):  # params.unit == "case"
        detail["fusion"] = response.fusion
        detail["result_case_ids"] = [hit.case_id for hit in response.results]
    record_access(
        session,
        user,
        "search",
        patient_id=response.query_patient_id,
        image_id=params.image_id,
        detail=detail,
        remote_addr=remote_addr,
    )
    commit_request(session)
    return response


def _archived_query_name(params: SearchRequest) -> str:
    for name in ("image_id", "case_id", "patient_id", "study_uid"):
        if getattr(params, name) is not None:
            return name
    return "none"
