"""Checking an incoming image and storing it content-addressed under the data directory."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from mammosearch.durable.atomic_files import atomic_write_bytes

ACCEPTED_FORMATS = {"JPEG", "PNG", "TIFF", "BMP"}
EXIF_ORIENTATION_TAG = 0x0112
_QUARTER_TURNS = {5, 6, 7, 8}
"""EXIF orientations that turn the picture by 90 degrees: width and height swap."""


class ImageRejected(ValueError):
    """An input that cannot become an image; the message names the input and the problem."""


@dataclass(frozen=True)
class CheckedImage:
    content: bytes
    sha256: str
    format: str
    width: int
    height: int
    suffix: str


def _describe_start(content: bytes) -> str:
    """The first bytes, readable: "'PK' + 0304" (a zip), "'<!DO'" (HTML), or hex."""
    head = content[:4]
    text = head.decode("latin-1")
    printable_len = next(
        (i for i, char in enumerate(text) if not (char.isascii() and char.isprintable())),
        len(text),
    )
    if printable_len == len(head):
        return repr(text)
    if printable_len >= 2:
        return f"{text[:printable_len]!r} + {head[printable_len:].hex()}"
    return head.hex()


def allow_pixels(max_pixels: int) -> None:
    """Raise Pillow's process-wide bomb limit to `max_pixels` (never lower it).

    Pillow refuses images over twice its own limit before `check_image` sees their size,
    so a configured MAMMOSEARCH_MAX_IMAGE_PIXELS above that needs the global raised. Entry
    points call this once at start-up, before threads serve, never per image.
    """
    if max_pixels <= 0:
        raise ValueError(f"MAMMOSEARCH_MAX_IMAGE_PIXELS: {max_pixels} is not a positive count")
    if PILImage.MAX_IMAGE_PIXELS is not None and PILImage.MAX_IMAGE_PIXELS < max_pixels:
        PILImage.MAX_IMAGE_PIXELS = max_pixels


def check_image(content: bytes, name: str, max_pixels: int = 100_000_000) -> CheckedImage:
    """Open and fully decode `content`; raise ImageRejected naming `name` and the reason.

    Thread-safe: `max_pixels` is compared with the header's size before any pixel is
    decoded; Pillow's global limit and the warnings filters are left as they are.
    """
    if not content:
        raise ImageRejected(f"{name}: empty file")
    if max_pixels <= 0:
        raise ValueError("max_pixels must be positive")
    too_large = f"limit is {max_pixels} pixels (MAMMOSEARCH_MAX_IMAGE_PIXELS)"
    try:
        with PILImage.open(io.BytesIO(content)) as img:
            fmt = img.format or "unknown"
            if fmt not in ACCEPTED_FORMATS:
                raise ImageRejected(f"{name}: unsupported image format {fmt}")
            width, height = img.size
            if img.getexif().get(EXIF_ORIENTATION_TAG) in _QUARTER_TURNS:
                width, height = height, width  # the size as shown, upright
            if width * height > max_pixels:
                raise ImageRejected(f"{name}: image too large ({width}x{height} px); {too_large}")
            img.load()  # decode every pixel: truncated files fail here, not later
    except ImageRejected:
        raise
    except PILImage.DecompressionBombError as exc:  # over twice Pillow's own global limit
        raise ImageRejected(f"{name}: image too large ({exc}); {too_large}") from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected(
            f"{name}: not an image Pillow can read (starts with {_describe_start(content)})"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"{name}: corrupt or truncated image ({exc})") from exc
    if width < 16 or height < 16:
        raise ImageRejected(f"{name}: image is only {width}x{height} px")
    suffix = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "BMP": ".bmp"}[fmt]
    return CheckedImage(
        content=content,
        sha256=hashlib.sha256(content).hexdigest(),
        format=fmt,
        width=width,
        height=height,
        suffix=suffix,
    )


def open_upright(source: Path | bytes) -> PILImage.Image:
    """Decode a JPEG/PNG/TIFF/BMP file (or its bytes) fully, as a viewer shows it: EXIF
    orientation applied. Every reader of uploads and stored files comes here, so a photo
    rotated by its tag embeds, trains and previews upright, once, the same everywhere.

    Raises what Pillow raises (OSError for an unreadable file); the image is the caller's.
    """
    with PILImage.open(source if isinstance(source, Path) else io.BytesIO(source)) as opened:
        opened.load()
        return ImageOps.exif_transpose(opened)  # a copy, turned when the tag says so


def stored_path_for(images_dir: Path, sha256: str, suffix: str) -> Path:
    """Content-addressed location: images/ab/cd/abcd...<suffix>."""
    return images_dir / sha256[:2] / sha256[2:4] / f"{sha256}{suffix}"


def store_image(images_dir: Path, checked: CheckedImage) -> Path:
    """Store the checked image once; storing the same content again is a no-op."""
    path = stored_path_for(images_dir, checked.sha256, checked.suffix)
    if not path.exists():
        _private_dirs(images_dir, path.parent)
        atomic_write_bytes(path, checked.content)  # mkstemp: the file itself is 0600
    return path


def _private_dirs(images_dir: Path, folder: Path) -> None:
    """The image store and its fan-out folders, created readable by the owner only (0700)."""
    parts = folder.relative_to(images_dir).parts
    images_dir.parent.mkdir(parents=True, exist_ok=True)
    for depth in range(len(parts) + 1):
        try:
            images_dir.joinpath(*parts[:depth]).mkdir(mode=0o700)
        except FileExistsError:
            pass
