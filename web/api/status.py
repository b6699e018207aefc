"""GET /api/v1/status: ingestion status (admins)."""

from __future__ import annotations

from flask import jsonify
from werkzeug.wrappers import Response

from mammosearch.jobs.status import collect_status
from web.access import ADMIN, roles_required
from web.api import bp
from web.configuration import work_queue
from web.db import get_session
from web.public_names import public_json


@bp.get("/status")
@roles_required(*ADMIN)
def status() -> Response:
    # Failures' errors may name the files that failed: by file name only.
    return jsonify(public_json(collect_status(get_session(), work_queue())))
