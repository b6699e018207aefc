"""POST /api/v1/search: multipart `image` part(s) or JSON `image_id` (or a case: `case_id`,
`patient_id` + `breast`), plus unit, k, metric and filters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import abort, current_app, jsonify, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from mammosearch.ingest.storage import ImageRejected
from mammosearch.search.request import BadSearchRequest, parse_search_request
from web.api import bp
from web.configuration import settings
from web.db import get_session
from web.public_names import public_space
from web.searching import check_one_query, refuse_while_repairing, results_url, run_search
from web.uploads import has_upload, read_query_uploads


def _request_values() -> dict[str, Any]:
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            abort(400, description="request body: expected a JSON object")
        return body
    return request.form.to_dict()


@bp.post("/search")
def search() -> Response:
    from mammosearch.pipeline.index_health import IndexRepairing
    from mammosearch.search.service import SearchError

    current = settings()
    values = _request_values()
    try:
        params = parse_search_request(values, current.index_metrics)
        files = [upload for upload in request.files.getlist("image") if has_upload(upload)]
        check_one_query(params, files[0].filename if files else None)
        uploads = []
        if not params.archived_query:
            if request.is_json:
                raise BadSearchRequest(
                    "image_id: required in a JSON body (or case_id, or patient_id and "
                    "breast with unit=case; or upload `image` as multipart)"
                )
            if not files:
                raise ImageRejected("no image uploaded: choose a JPEG, PNG or DICOM file")
            uploads = read_query_uploads(files, current)
        response = run_search(
            get_session(), current, params, None, current_user, request.remote_addr, uploads
        )
    except IndexRepairing as exc:
        refuse_while_repairing(exc)
    except LookupError as exc:  # an image id not in the archive (ImageNotFound)
        abort(404, description=str(exc))
    except (BadSearchRequest, ImageRejected, SearchError) as exc:
        abort(400, description=str(exc))
    body = response.to_dict()
    body["embedding_space"] = public_space(body["embedding_space"])
    # The results page's address (None for an upload: its pixels cannot be in a URL).
    body["url"] = results_url(params, external=True)
    image_url, case_url = _url_for_ids("api.image_file"), _url_for_ids("cases.case_page")
    for result in body.get("results", []):
        if body["unit"] == "case":
            for view in result["views"]:
                view["image_url"] = image_url(view["image_id"])
            result["case_url"] = case_url(result["best_view_image_id"])
        else:
            result["image_url"] = image_url(result["image_id"])
            result["case_url"] = case_url(result["image_id"])
    return jsonify(body)


_SENTINEL_ID = 9_876_543_210_123


def _url_for_ids(endpoint: str) -> Callable[[int], str]:
    """url_for(endpoint, image_id=...) for many ids: routing runs once per app, endpoint and
    script root (the prefix a reverse proxy mounts the app under), not once per hit."""
    templates = current_app.extensions.setdefault("mammosearch_id_url_templates", {})
    key = (endpoint, request.script_root)
    template = templates.get(key)
    if template is None:
        template = templates[key] = url_for(endpoint, image_id=_SENTINEL_ID)
    return lambda image_id: template.replace(str(_SENTINEL_ID), str(int(image_id)))
