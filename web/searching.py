"""One search as the pages and the API both run it: search, time, audit.

The request itself is mammosearch.search_request.SearchRequest (shared with the CLI).
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from PIL import Image as PILImage
from sqlalchemy.orm import Session
from werkzeug.exceptions import ServiceUnavailable

from mammosearch.audit import Actor, record_access
from mammosearch.config import Settings
from mammosearch.index_health import IndexRepairing
from mammosearch.search_request import BadSearchRequest, SearchRequest
from web.configuration import work_queue
from web.db import commit_request
from web.index_repair import RETRY_AFTER_S, request_repair
from web.metrics import observe_search_timing

log = logging.getLogger(__name__)


def check_one_query(params: SearchRequest, upload_name: str | None) -> None:
    """A search has one query: an uploaded file or an archived image id, never both."""
    if params.image_id is not None and upload_name:
        raise BadSearchRequest(
            f"give one query, not both: the uploaded file {upload_name!r} or archived "
            f"image_id {params.image_id}; clear one and search again"
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
