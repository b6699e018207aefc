"""One case: the deep-zoom image with segmentation outlines, every image of the patient's
studies, reports, where the case was found; and the authenticated image and thumbnail files."""

from __future__ import annotations

import io
import math
from typing import Any

from flask import Blueprint, abort, current_app, render_template, request, send_file
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from mammosearch.access.audit import record_access, record_rewindowed_file, record_thumbnail_view
from mammosearch.db.models import Image, Segmentation
from web.access import RADIOLOGY, restrict_blueprint
from web.case_context import (
    HANGING_ORDER,
    archive_viewer_link,
    case_summary,
    found_at,
    hanging_row,
    study_groups,
    study_of,
)
from web.case_results import view_overlay
from web.configuration import settings
from web.db import get_session
from web.imagefiles import DisplayWindow, browser_file, full_resolution, thumbnail_file
from web.viewer_sources import image_source

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
    studies = study_groups(patient_images)
    study = study_of(studies, image)
    outlines = svg_outlines(list(image.segmentations))
    return render_template(
        "case.html",
        image=image,
        patient=patient,
        studies=studies,
        case=case_summary(study, image),
        panes=case_panes(hanging_row(study, image), image, "outlines" if outlines else None),
        reports=reports,
        outlines=outlines,
        found=found_at(request.args, settings().index_metrics),
        archive_viewer_url=archive_viewer_link(settings(), image),
    )


def case_panes(
    cells: list[Image | None], image: Image, outline: str | None
) -> list[dict[str, Any]]:
    """The viewer's four panes, R CC, L CC, R MLO, L MLO, hung back to back (R in the left
    column); `image`'s pane keeps the id `case-viewer` and carries its outline."""
    panes = []
    for (side, view), cell in zip(HANGING_ORDER, cells, strict=True):
        pane: dict[str, Any] = {
            "id": f"case-{side}-{view}".lower(),
            "caption": f"{side} {view}: none in this study",
            "column": "left" if side == "R" else "right",
            "view": view,
        }
        if cell is not None:
            place = "this image" if cell.id == image.id else f"image {cell.id}"
            pane.update(
                image_source(cell),
                caption=f"{side} {view} · image {cell.id} ({cell.width} × {cell.height} px)",
                overlay=view_overlay(
                    place, cell.side, cell.view, cell.modality, cell.birads, cell.pathology
                ),
            )
            if cell.id == image.id:
                pane.update(id="case-viewer", outline=outline)
        panes.append(pane)
    return panes


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


@bp.get("/<int:image_id>/full")
def full_resolution_file(image_id: int) -> Response:
    """Every pixel the archive has (web.imagefiles.full_resolution); `center` and `width`
    re-window a deeper-than-8-bit original on all its bits (in its stored units)."""
    image = get_image_or_404(image_id)
    window = _window_asked()
    shown, mimetype = full_resolution(settings(), image, window)
    session = get_session()
    detail = {"full_resolution": True}
    if window is None:
        record_access(
            session, current_user.row, "view_image_file", patient_id=image.patient_id,
            image_id=image.id, detail=detail, remote_addr=request.remote_addr,
        )  # fmt: skip
    else:
        record_rewindowed_file(
            session, current_user.row, image.patient_id, image.id,
            detail={**detail, "window": [window.center, window.width]},
            remote_addr=request.remote_addr,
        )  # fmt: skip
    session.commit()
    if isinstance(shown, bytes):
        return send_file(io.BytesIO(shown), mimetype=mimetype, max_age=0)
    return send_file(shown, mimetype=mimetype, max_age=0)


def _window_asked() -> DisplayWindow | None:
    """`center` and `width` from the query (both or neither); 400 naming the field."""
    asked = {name: request.args.get(name) for name in ("center", "width")}
    if all(value is None for value in asked.values()):
        return None
    numbers = {}
    for name, value in asked.items():
        try:
            numbers[name] = float(value or "")
        except ValueError:
            abort(400, description=f"{name}={value!r}: a number is needed (center and width)")
        if not math.isfinite(numbers[name]) or abs(numbers[name]) > 1e6:
            abort(400, description=f"{name}={value!r}: outside -1e6..1e6")
    if numbers["width"] < 1:
        abort(400, description=f"width={asked['width']!r}: at least 1")
    return DisplayWindow(numbers["center"], numbers["width"])


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
