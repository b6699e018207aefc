"""A query file's bytes (JPEG, PNG or DICOM) -> the checked image a search embeds.

One reader for the pages, the API and the CLI, so the same file gives the same vector
(and the same neighbours) whichever way it arrives.
"""

from __future__ import annotations

import io
from collections.abc import Collection

from PIL import Image as PILImage

from mammosearch.ingest.dicom import looks_like_dicom, read_dicom, stated_pixels
from mammosearch.ingest.storage import ImageRejected, check_image, open_upright


def read_query_image(
    content: bytes, name: str, max_pixels: int, modalities: Collection[str] | None = None
) -> PILImage.Image:
    """Decode `content` fully (bomb-guarded); raise ImageRejected naming `name` and why.

    `modalities`: the DICOM Modality values a query may have (settings.accepted_modalities),
    the same as the archive takes, so a CT cannot be searched against mammograms.

    The image returned is the caller's own: nothing else holds it, so a preview made from
    it must work on a copy (see web.imagefiles.thumbnail_bytes).
    """
    if not content:
        raise ImageRejected(f"{name}: empty file")
    if looks_like_dicom(name, content):
        return read_dicom(content, name, max_pixels=max_pixels, modalities=modalities).image
    checked = check_image(content, name, max_pixels=max_pixels)
    return open_upright(checked.content)


def pixels_to_decode(content: bytes, name: str) -> int:
    """Pixels decoding `content` would produce, from its header alone (0: unreadable header;
    the reader then rejects it)."""
    if looks_like_dicom(name, content):
        return stated_pixels(content)
    try:
        with PILImage.open(io.BytesIO(content)) as opened:
            width, height = opened.size
    except Exception:  # noqa: BLE001 - read_query_image says what is wrong with it
        return 0
    return width * height
