"""Small PNG thumbnails of stored images for the report's per-query table."""

from __future__ import annotations

from pathlib import Path

from mammosearch.durable.atomic_files import SHARED, atomic_path
from mammosearch.ingest.storage import open_upright

THUMB_SIZE_PX = 112


def write_thumbnail(source: Path, destination: Path, size_px: int = THUMB_SIZE_PX) -> bool:
    """Write `destination` once (kept if present); False when the source cannot be read."""
    if destination.exists():
        return True
    try:
        thumb = open_upright(source)
        thumb.thumbnail((size_px, size_px))
        thumb = thumb.convert("L") if thumb.mode not in ("L", "RGB") else thumb
    except (OSError, ValueError):
        return False
    with atomic_path(destination, SHARED, suffix=".png.tmp") as temp_path:
        thumb.save(temp_path, format="PNG")
    return True
