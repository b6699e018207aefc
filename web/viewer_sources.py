"""What the viewer loads for an archived image: the address of every pixel the archive has,
its pixel spacing (query and result hung at one physical scale) and, for an original
deeper than 8 bits, its depth and default window (re-windowed on the server)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from flask import url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.db.models import Image


def pane_source(
    image_id: int, width: int, height: int, spacing_mm: float | None, depth: Any
) -> dict[str, Any]:
    """One image as a viewer pane (or a result's view) takes it; `depth`: images.full_depth."""
    deep = depth if isinstance(depth, dict) and depth.get("path") else None
    return {
        "src": url_for("cases.full_resolution_file", image_id=image_id),
        "width": width,
        "height": height,
        "spacing_mm": spacing_mm,
        "depth": (
            json.dumps({"bits": deep.get("bits_stored"), "window": deep.get("window")})
            if deep
            else None
        ),
    }


def image_source(image: Image) -> dict[str, Any]:
    return pane_source(
        image.id, image.width, image.height, image.pixel_spacing_mm, image.full_depth
    )


def pane_sources(session: Session, image_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """pane_source of each image, in one query."""
    wanted = sorted(set(image_ids))
    if not wanted:
        return {}
    rows = session.execute(
        select(Image.id, Image.width, Image.height, Image.pixel_spacing_mm, Image.full_depth).where(
            Image.id.in_(wanted)
        )
    ).all()
    return {row.id: pane_source(*row) for row in rows}
