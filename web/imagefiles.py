"""Stored images for the browser: the file itself, or a cached JPEG thumbnail / PNG rendition."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage
from werkzeug.exceptions import NotFound

from mammosearch.config import Settings
from mammosearch.db.models import Image
from mammosearch.durable.atomic_files import atomic_write_bytes
from mammosearch.embed.preprocess import to_grayscale_8bit
from mammosearch.ingest.full_depth import windowed
from mammosearch.ingest.storage import open_upright

BROWSER_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


def stored_file(settings: Settings, image: Image) -> Path:
    """The image's stored file (relative paths are under the data dir); 404 when it is gone."""
    path = Path(image.stored_path)
    if not path.is_absolute():
        path = settings.data_dir / path
    if not path.is_file():
        raise NotFound(f"image {image.id}: stored file is missing")
    return path


def _open(path: Path) -> PILImage.Image:
    if path.suffix.lower() in {".dcm", ".dicom"}:
        from mammosearch.ingest.dicom import read_dicom

        return read_dicom(path.read_bytes(), path.name).image
    return open_upright(path)


def _for_display(picture: PILImage.Image) -> PILImage.Image:
    """8-bit grey or RGB; deeper greys by the rule search uses (scaled, not clipped)."""
    if picture.mode in {"L", "RGB"}:
        return picture
    if picture.mode.startswith("I") or picture.mode == "F":
        return to_grayscale_8bit(picture)
    return picture.convert("RGB")


def browser_file(settings: Settings, image: Image) -> tuple[Path, str]:
    """A file a browser can show: the stored JPEG/PNG, or a cached PNG rendition of it."""
    path = stored_file(settings, image)
    mimetype = BROWSER_SUFFIXES.get(path.suffix.lower())
    if mimetype:
        return path, mimetype
    rendition = settings.data_dir / "thumbnails" / image.sha256[:2] / f"{image.sha256}_full.png"
    if not rendition.exists():
        buffer = io.BytesIO()
        _for_display(_open(path)).save(buffer, format="PNG")
        atomic_write_bytes(rendition, buffer.getvalue())
    return rendition, "image/png"


@dataclass(frozen=True)
class DisplayWindow:
    """A window over a full-depth original, in its stored units (center, width)."""

    center: float
    width: float


def full_depth_file(settings: Settings, image: Image) -> Path | None:
    """The image's 16-bit original (mammosearch.ingest.full_depth), if it has one on disk."""
    depth = image.full_depth or {}
    if not depth.get("path"):
        return None
    path = Path(depth["path"])
    path = path if path.is_absolute() else settings.data_dir / path
    return path if path.is_file() else None


def full_resolution(
    settings: Settings, image: Image, window: DisplayWindow | None
) -> tuple[Path | bytes, str]:
    """Every pixel the archive has of `image`, for the viewer: a file path or PNG bytes.

    An 8-bit original (CDD-CESM JPEG, a stored PNG) is sent as it is. A DICOM original
    deeper than 8 bits is windowed here, on all its bits, and sent as an 8-bit PNG at full
    resolution. Why on the server rather than a 16-bit PNG windowed in the browser: the
    deep-zoom viewer (OpenSeadragon) draws 8-bit tiles, a browser's canvas cannot hold
    16 bits, and a reader widening the window past what the first rendering kept expects
    the skin line and the pectoral muscle back, as on their PACS; the pane previews the new
    window at once on the pixels it has, and the re-rendered full-depth pixels replace
    them when the window settles. The default window (the file's own) is cached.
    """
    deep = full_depth_file(settings, image)
    if deep is None:
        return browser_file(settings, image)
    if window is None:
        center, width = (image.full_depth or {}).get("window") or (32767.5, 65536)
        cached = settings.data_dir / "thumbnails" / image.sha256[:2] / f"{image.sha256}_deep.png"
        if not cached.exists():
            atomic_write_bytes(cached, _png(windowed(deep, center, width)))
        return cached, "image/png"
    return _png(windowed(deep, window.center, window.width)), "image/png"


def _png(picture: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)  # 10+ megapixels: fast zlib
    return buffer.getvalue()


VIEWER_MAX_SIDE_PX = 6000
"""An uploaded query larger than this is scaled down for the viewer (mammograms are ~4000)."""


@dataclass(frozen=True)
class ViewerImage:
    url: str  # a data: URL (the page's CSP allows data: images and nothing else off-site)
    width: int
    height: int


def viewer_data_url(picture: PILImage.Image) -> ViewerImage:
    """An uploaded query at full resolution for the viewer, kept in the page, not on disk.

    JPEG at quality 95: a fifth of a PNG's size for a 10-megapixel mammogram, with no
    difference visible under window/level. Works on a copy: the caller's image is untouched.
    """
    shown = _for_display(picture).copy()
    if max(shown.size) > VIEWER_MAX_SIDE_PX:
        shown.thumbnail((VIEWER_MAX_SIDE_PX, VIEWER_MAX_SIDE_PX))
    buffer = io.BytesIO()
    shown.save(buffer, format="JPEG", quality=95)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return ViewerImage(f"data:image/jpeg;base64,{encoded}", shown.width, shown.height)


def thumbnail_bytes(picture: PILImage.Image, size_px: int) -> bytes:
    """A JPEG at most `size_px` on its long side; `picture` itself is not changed.

    `_for_display` hands back `picture` itself when it is already grey or RGB, and
    `thumbnail` shrinks in place: without the copy an uploaded query was embedded shrunken.
    """
    small = _for_display(picture)
    small = small.copy() if small is picture else small
    small.thumbnail((size_px, size_px))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def thumbnail_file(settings: Settings, image: Image, size_px: int) -> Path:
    """A JPEG at most `size_px` on its long side, made once and kept under data_dir/thumbnails.

    Keyed by the content hash, so a relabelled image keeps its thumbnail.
    """
    path = settings.data_dir / "thumbnails" / image.sha256[:2] / f"{image.sha256}_{size_px}.jpg"
    if not path.exists():
        atomic_write_bytes(path, thumbnail_bytes(_open(stored_file(settings, image)), size_px))
    return path
