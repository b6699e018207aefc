"""GET /api/v1/images/<id> (a case's metadata) and /api/v1/images/<id>/file (its pixels)."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request
from flask_login import current_user
from werkzeug.wrappers import Response

from mammosearch.access.audit import record_access
from mammosearch.db.models import Image
from web.api import bp
from web.blueprints.cases import get_image_or_404, send_image_file
from web.db import get_session


def image_metadata(image: Image) -> dict[str, Any]:
    return {
        "image_id": image.id,
        "patient_id": image.patient.source_patient_id,
        "source": image.source,
        "source_file_name": image.source_file_name,
        "side": image.side,
        "view": image.view,
        "modality": image.modality,
        "width": image.width,
        "height": image.height,
        "breast_density": image.breast_density,
        "birads": image.birads,
        "birads_raw": image.birads_raw,
        "pathology": image.pathology,
        "findings": image.findings,
        "tags": image.tags,
        "study_date": image.study_date,
        "status": image.status,
        "segmentations": [region.shape for region in image.segmentations],
        "report_count": len(image.patient.reports),
    }


@bp.get("/images/<int:image_id>")
def image(image_id: int) -> Response:
    session = get_session()
    row = get_image_or_404(image_id)
    record_access(
        session,
        current_user.row,
        "view_image",
        patient_id=row.patient_id,
        image_id=row.id,
        detail={"via": "api"},
        remote_addr=request.remote_addr,
    )
    session.commit()
    return jsonify(image_metadata(row))


@bp.get("/images/<int:image_id>/file")
def image_file(image_id: int) -> Response:
    return send_image_file(get_image_or_404(image_id))
