"""GET /launch: opened from the reading workstation with the study on screen; after the usual
sign-in, the case search of each breast of that study, on one page.

- `?study_uid=...` or `?accession=...`: the study's breasts. A study the archive holds is
  searched from its own rows; another is fetched from the connected archive by DICOMweb
  (QIDO-RS to find it, WADO-RS for its instances) and searched as the views of each breast.
- `?patient_id=...&side=L|R`: that patient's case, on the search page's own address.
Every other search option of the search page (k, metric, filters, ranking, fusion,
exclude_same_patient) may be added; the launch address reproduces the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from mammosearch.ingest.storage import ImageRejected
from mammosearch.search.request import BadSearchRequest, parse_search_request
from web.access import RADIOLOGY, restrict_blueprint
from web.blueprints.search import results_context
from web.configuration import settings
from web.db import get_session
from web.searching import results_url, run_search

bp = restrict_blueprint(Blueprint("launch", __name__), RADIOLOGY)

LAUNCH_FIELDS = ("study_uid", "accession", "patient_id", "side", "breast")
SIDE_NAMES = {"R": "Right breast", "L": "Left breast"}


@dataclass
class BreastResults:
    """One breast's case search, as the launch page shows it."""

    side: str
    title: str
    context: dict[str, Any]


def _options() -> dict[str, Any]:
    """The search options given with the launch (k, filters, ...), unit=case unless asked."""
    options = {key: value for key, value in request.args.items() if key not in LAUNCH_FIELDS}
    options.setdefault("unit", "case")
    return options


def _failed(status: int, message: str) -> tuple[str, int]:
    flash(message, "error")
    return render_template("launch.html", breasts=[], study=None), status


@bp.get("/launch")
def launch() -> tuple[str, int] | Response:
    """Search the study (or patient + side) named in the address; results per breast."""
    args = request.args
    current = settings()
    if args.get("patient_id"):
        try:
            params = parse_search_request(
                {
                    **_options(),
                    "patient_id": args["patient_id"],
                    "breast": args.get("side") or args.get("breast"),
                },
                current.index_metrics,
            )
        except BadSearchRequest as exc:
            return _failed(400, f"launch: {exc}")
        return redirect(results_url(params) or url_for("search.search_page"), code=303)
    if not args.get("study_uid") and not args.get("accession"):
        return _failed(400, "launch: give study_uid=, accession= or patient_id= with side=")
    return _launch_study(args.get("study_uid"), args.get("accession"))


class LaunchFailed(Exception):
    """The launch cannot show results; `status` and the message say why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _study_searches(
    study_uid: str | None, accession: str | None
) -> tuple[dict[str, Any], list[BreastResults]]:
    """Find the study and run each breast's case search (archived rows, else DICOMweb)."""
    from mammosearch.ingest.dicomweb import (
        DicomwebError,
        StudyNotFound,
        dicomweb_url,
        fetch_study,
        find_study,
    )
    from mammosearch.search.service import SearchError
    from mammosearch.search.study_query import archived_breasts, case_uploads

    current = settings()
    session = get_session()
    base_url = dicomweb_url(current)
    options = _options()
    study: dict[str, Any] = {
        "study_uid": study_uid,
        "accession": accession,
        "source": "archive",
        "skipped": (),
        "can_keep": base_url is not None,
    }
    try:
        if study_uid is None:
            if base_url is None:
                raise LaunchFailed(
                    400,
                    "launch by accession number: no DICOMweb archive is "
                    "connected (set MAMMOSEARCH_DICOMWEB_URL)",
                )
            study_uid, _, study["patient_id"] = find_study(base_url, accession=accession)
            study["study_uid"] = study_uid
        searches: list[tuple[str, Any, list[Any]]] = []  # (side, request, uploads)
        for side in archived_breasts(session, study_uid):
            params = parse_search_request(
                {**options, "study_uid": study_uid, "breast": side}, current.index_metrics
            )
            searches.append((side, params, []))
        if not searches:  # not archived here: the connected archive's copy
            if base_url is None:
                raise LaunchFailed(
                    404,
                    f"study {study_uid}: not in this archive, and no "
                    "DICOMweb archive is connected (set MAMMOSEARCH_DICOMWEB_URL)",
                )
            fetched = fetch_study(base_url, current, study_uid=study_uid)
            study.update(source="dicomweb", patient_id=fetched.patient_id, skipped=fetched.skipped)
            params = parse_search_request(options, current.index_metrics)
            searches = [(case.side, params, case_uploads(case)) for case in fetched.cases]
        breasts = []
        for side, params, uploads in searches:
            response = run_search(
                session, current, params, None, current_user, request.remote_addr, uploads
            )
            context = results_context(session, params, response, uploads)
            breasts.append(BreastResults(side, SIDE_NAMES.get(side, side), context))
    except StudyNotFound as exc:
        raise LaunchFailed(404, str(exc)) from exc
    except DicomwebError as exc:
        raise LaunchFailed(502, str(exc)) from exc
    except LookupError as exc:  # ImageNotFound
        raise LaunchFailed(404, str(exc)) from exc
    except (BadSearchRequest, ImageRejected, SearchError) as exc:
        raise LaunchFailed(400, str(exc)) from exc
    return study, breasts


def _launch_study(study_uid: str | None, accession: str | None) -> tuple[str, int]:
    try:
        study, breasts = _study_searches(study_uid, accession)
    except LaunchFailed as exc:
        return _failed(exc.status, str(exc))
    launch_args: dict[str, Any] = request.args.to_dict()  # the first value of each
    launch_url = url_for("launch.launch", **launch_args)
    for breast in breasts:  # a fetched study's breast has no address but the launch's own
        breast.context["results_url"] = breast.context["results_url"] or launch_url
    return render_template("launch.html", breasts=breasts, study=study, launch_url=launch_url), 200


@bp.post("/launch/keep")
def keep_with_study() -> tuple[str, int] | Response:
    """Store each breast's similar cases in the study as a Key Object Selection document.

    The search is run again from the launch address's values (the same answer the page
    showed, and audited again as what was kept); then back to the launch page.
    """
    from mammosearch.ingest.dicomweb import DicomwebError, dicomweb_url
    from mammosearch.search.key_objects import keep_with_study as store_key_object

    base_url = dicomweb_url(settings())
    launch_args: dict[str, Any] = request.args.to_dict()  # the first value of each
    launch_url = url_for("launch.launch", **launch_args)
    if base_url is None:
        return _failed(
            400,
            "keep with the study: no DICOMweb archive is connected (set MAMMOSEARCH_DICOMWEB_URL)",
        )
    try:
        study, breasts = _study_searches(
            request.args.get("study_uid"), request.args.get("accession")
        )
        kept = []
        for breast in breasts:
            document = store_key_object(
                get_session(), base_url, study["study_uid"], breast.side, breast.context["response"]
            )
            kept.append(f"{breast.title.lower()}: key object {document.SOPInstanceUID}")
    except LaunchFailed as exc:
        return _failed(exc.status, str(exc))
    except DicomwebError as exc:
        return _failed(502, str(exc))
    flash(f"Kept with the study in the archive ({'; '.join(kept)}).", "info")
    return redirect(launch_url, code=303)
