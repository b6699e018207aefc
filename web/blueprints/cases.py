"""One case: the deep-zoom image with segmentation outlines, every image of the patient's
studies, reports, where the case was found; and the authenticated image and thumbnail files."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, render_template, request, send_file
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from mammosearch.access.audit import record_access, record_thumbnail_view
from mammosearch.db.models import Image, Segmentation
from web.access import RADIOLOGY, restrict_blueprint
from web.case_context import archive_viewer_link, found_at, study_groups
from web.configuration import settings
from web.db import get_session
from web.imagefiles import browser_file, thumbnail_file

bp = restrict_blueprint(Blueprint("cases", __name__, url_prefix="/cases"), RADIOLOGY)


def get_image_or_404(image_id: int) -> Image:
    image = get_session().get(Image, image_id)
    if image is None:
        abort(404, description=f"image {image_id}: not in the archive")
    return image


def _points(shape: dict[str, Any]) -> str | None:
    xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
    if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys) or not xs:
        return None
    return " ".join(f"{float(x):.1f},{float(y):.1f}" for x, y in zip(xs, ys, strict=True))


def svg_outlines(segmentations: list[Segmentation]) -> list[dict[str, Any]]:
    """Segmentation shapes (VIA format) as SVG elements in image pixel coordinates."""
    outlines = []
    for region in segmentations:
        shape = region.shape or {}
        name = shape.get("name")
        if name in {"polygon", "polyline"} and (points := _points(shape)):
            outlines.append({"kind": name, "points": points})
        elif name == "ellipse" and {"cx", "cy", "rx", "ry"} <= shape.keys():
            outlines.append({"kind": "ellipse", **{k: shape[k] for k in ("cx", "cy", "rx", "ry")}})
        elif name in {"circle", "point"} and {"cx", "cy"} <= shape.keys():
            outlines.append(
                {"kind": "circle", "cx": shape["cx"], "cy": shape["cy"], "r": shape.get("r", 8)}
            )
        elif name == "rect" and {"x", "y", "width", "height"} <= shape.keys():
            box = {k: shape[k] for k in ("x", "y", "width", "height")}
            outlines.append({"kind": "rect", **box})
    return outlines


@bp.get("/<int:image_id>")
def case_page(image_id: int) -> str:
    session = get_session()
    image = get_image_or_404(image_id)
    patient = image.patient
    patient_images = session.scalars(
        select(Image).where(Image.patient_id == patient.id).order_by(Image.id)
    ).all()
    reports = list(patient.reports)
    record_access(
        session,
        current_user.row,
        "view_image",
        patient_id=patient.id,
        image_id=image.id,
        detail={"other_image_ids": [other.id for other in patient_images if other.id != image.id]},
        remote_addr=request.remote_addr,
    )
    if reports:
        record_access(
            session,
            current_user.row,
            "view_report",
            patient_id=patient.id,
            image_id=image.id,
            detail={"report_ids": [report.id for report in reports]},
            remote_addr=request.remote_addr,
        )
    session.commit()
    return render_template(
        "case.html",
        image=image,
        patient=patient,
        studies=study_groups(patient_images),
        reports=reports,
        outlines=svg_outlines(list(image.segmentations)),
        found=found_at(request.args, settings().index_metrics),
        archive_viewer_url=archive_viewer_link(settings(), image),
    )


def send_image_file(image: Image) -> Response:
    """The full image, audited: the one place both pages and the API hand out pixels."""
    path, mimetype = browser_file(settings(), image)
    session = get_session()
    record_access(
        session,
        current_user.row,
        "view_image_file",
        patient_id=image.patient_id,
        image_id=image.id,
        remote_addr=request.remote_addr,
    )
    session.commit()
    return send_file(path, mimetype=mimetype, max_age=0)


@bp.get("/<int:image_id>/image")
def image_file(image_id: int) -> Response:
    return send_image_file(get_image_or_404(image_id))


@bp.get("/<int:image_id>/thumbnail")
def thumbnail(image_id: int) -> Response:
    """The small thumbnail, or with `size` twice as large (the only two sizes cached)."""
    small_px = int(current_app.config["THUMBNAIL_SIZE_PX"])
    sizes_px = {str(small_px): small_px, str(2 * small_px): 2 * small_px}
    asked = request.args.get("size", str(small_px))
    if asked not in sizes_px:
        abort(400, description=f"size={asked}: thumbnails are {small_px} or {2 * small_px} px")
    size_px = sizes_px[asked]
    image = get_image_or_404(image_id)
    path = thumbnail_file(settings(), image, size_px)
    session = get_session()
    # A thumbnail shows the patient's image too: audited, unless the page that shows it
    # already listed it in its own event (mammosearch.access.audit.record_thumbnail_view).
    record_thumbnail_view(
        session,
        current_user.row,
        image.patient_id,
        image.id,
        detail={"size_px": size_px},
        remote_addr=request.remote_addr,
    )
    session.commit()
    return send_file(path, mimetype="image/jpeg", max_age=0)
