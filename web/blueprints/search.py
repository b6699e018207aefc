"""The search page: upload an image or pick an archived case; results as a grid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.wrappers import Response

from mammosearch.access.audit import record_access
from mammosearch.db.models import Image
from mammosearch.ingest.storage import ImageRejected
from mammosearch.search.case_search import QueryUpload
from mammosearch.search.filters import FILTER_FIELDS
from mammosearch.search.request import BadSearchRequest, SearchRequest, parse_search_request
from web.access import RADIOLOGY, restrict_blueprint
from web.case_results import hang
from web.configuration import settings
from web.db import get_session
from web.imagefiles import viewer_data_url
from web.searching import (
    check_one_query,
    has_addressable_query,
    repairing_message,
    results_url,
    run_search,
)
from web.uploads import has_upload, preview_data_url, read_query_uploads
from web.viewer_sources import pane_sources

bp = restrict_blueprint(Blueprint("search", __name__), RADIOLOGY)

PAGE_UNIT = "case"
"""The page searches cases unless asked otherwise (the API's default unit is image)."""


@bp.get("/")
def index() -> Response:
    return redirect(url_for("search.search_page"))


RECENT_CASES_SHOWN = 24


def _recent_cases() -> list[Image]:
    """The newest searchable cases: the page's starting points, and what tells it the archive
    is not empty (every render needs it, error pages too)."""
    from sqlalchemy import select

    from mammosearch.db.models import ImageStatus

    return list(
        get_session()
        .scalars(
            select(Image)
            .where(Image.status == ImageStatus.INDEXED)
            .order_by(Image.id.desc())
            .limit(RECENT_CASES_SHOWN)
        )
        .all()
    )


def _render(status: int = 200, **context: Any) -> tuple[str, int]:
    from mammosearch.search.service import get_search_service

    current = settings()
    context.setdefault("form", {})
    context.setdefault("page_unit", PAGE_UNIT)
    context.setdefault("metrics", current.index_metrics)
    context.setdefault("default_ranking", current.ranking)
    context.setdefault("recent", _recent_cases())
    context.setdefault("filter_fields", FILTER_FIELDS)  # the form's filters, one per row
    context.setdefault("choices", get_search_service(current).filter_values(get_session()))
    return render_template("search.html", **context), status


@bp.get("/search")
def search_page() -> tuple[str, int] | Response:
    """The search form and the newest searchable cases to start from (one click each); with
    an archived query in the URL (`?image_id=156&k=5`), its results.

    Every results page has such an address, so back, bookmark and share reproduce it.
    """
    if has_addressable_query(request.args):
        return _search(page_defaults(request.args), [])
    recent = _recent_cases()
    if recent:  # one event for the page's thumbnails (mammosearch.access.audit.SHOWN_IMAGE_KEYS)
        session = get_session()
        record_access(
            session, current_user.row, "view_recent_cases",
            detail={"shown_image_ids": [image.id for image in recent]},
            remote_addr=request.remote_addr,
        )  # fmt: skip
        session.commit()
    return _render(form=request.args, recent=recent)


def page_defaults(args: MultiDict[str, str]) -> MultiDict[str, str]:
    """A hand-typed address without `unit` searches as the form shows it: cases (the API's
    default is image). Without this the form showed "cases" and a ticked "exclude the
    query's patient" above image results that held the query's own patient."""
    if args.get("unit"):
        return args
    completed = MultiDict(args)
    completed["unit"] = PAGE_UNIT
    return completed


@bp.post("/search")
def search_submit() -> tuple[str, int] | Response:
    """The form posted: uploads are searched here; an archived query goes to its address."""
    if not _chosen_files() and has_addressable_query(request.form):
        try:
            params = parse_search_request(request.form, settings().index_metrics)
        except BadSearchRequest as exc:
            flash(str(exc), "error")
            return _render(400, form=request.form)
        address = results_url(params)
        if address is not None:
            return redirect(address, code=303)
    return _search(request.form, _chosen_files())


def _chosen_files() -> list[FileStorage]:
    return [upload for upload in request.files.getlist("image") if has_upload(upload)]


def _search(form: Any, files: list[FileStorage]) -> tuple[str, int]:
    from mammosearch.pipeline.index_health import IndexRepairing
    from mammosearch.search.service import SearchError

    current = settings()
    session = get_session()
    try:
        params = parse_search_request(form, current.index_metrics)
        check_one_query(params, files[0].filename if files else None)
        uploads = []
        if not params.archived_query:
            if not files:
                raise ImageRejected("no image uploaded: choose a JPEG, PNG or DICOM file")
            uploads = read_query_uploads(files, current)
        response = run_search(
            session, current, params, None, current_user, request.remote_addr, uploads
        )
    except IndexRepairing as exc:
        flash(repairing_message(exc), "error")
        return _render(503, form=form)
    except LookupError as exc:  # an image or case not in the archive (ImageNotFound)
        flash(str(exc), "error")
        return _render(404, form=form)
    except (BadSearchRequest, ImageRejected, SearchError) as exc:
        flash(str(exc), "error")
        return _render(400, form=form)
    return _render(form=form, **results_context(session, params, response, uploads))


def results_context(
    session: Session, params: SearchRequest, response: Any, uploads: Sequence[QueryUpload]
) -> dict[str, Any]:
    """What the results templates need beside the response: the page's address, the link
    that brings the query's patient back, and the query's images (uploads are not stored)."""
    include_url = None
    if response.query.get("excluded_patient_ids") and params.archived_query:
        include_url = results_url(params.model_copy(update={"exclude_same_patient": False}))
    context: dict[str, Any] = {
        "response": response,
        "results_url": results_url(params),
        "include_url": include_url,
    }
    if response.unit == "case":
        decoded = {u.name: u.image for u in uploads if u.image is not None}
        context["hanging"] = hang(session, response, decoded)
        return context
    query_image = uploads[0].image if uploads else None
    shown_ids = [hit.image_id for hit in response.results]
    context.update(
        sources=pane_sources(session, [*shown_ids, *filter(None, [params.image_id])]),
        query_row=session.get(Image, params.image_id) if params.image_id is not None else None,
        # Made after the search, from the image the search embedded.
        query_preview=preview_data_url(query_image) if query_image is not None else None,
        upload_name=uploads[0].name if uploads else None,
        query_full=viewer_data_url(query_image) if query_image is not None else None,
    )
    return context
