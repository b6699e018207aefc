"""Small PNG thumbnails of stored images for the report's per-query table."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image as PILImage

THUMB_SIZE_PX = 112


def write_thumbnail(source: Path, destination: Path, size_px: int = THUMB_SIZE_PX) -> bool:
    """Write `destination` once (kept if present); False when the source cannot be read."""
    if destination.exists():
        return True
    try:
        with PILImage.open(source) as opened:
            opened.thumbnail((size_px, size_px))
            thumb = opened.convert("L") if opened.mode not in ("L", "RGB") else opened.copy()
    except (OSError, ValueError):
        return False
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=destination.parent, suffix=".png.tmp")
    os.close(handle)
    try:
        thumb.save(temp_name, format="PNG")
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, destination)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return True
