"""An uploaded query image (JPEG, PNG or DICOM) -> a checked PIL image, or a clear rejection."""

from __future__ import annotations

import base64
import io

from PIL import Image as PILImage
from werkzeug.datastructures import FileStorage

from mammosearch.ingest.dicom import looks_like_dicom
from mammosearch.ingest.storage import ImageRejected, check_image
from web.imagefiles import thumbnail_bytes


def read_upload(upload: FileStorage | None, max_pixels: int) -> PILImage.Image:
    """Decode the upload fully (bomb-guarded); raise ImageRejected naming the file and why."""
    if upload is None or not upload.filename:
        raise ImageRejected("no image uploaded: choose a JPEG, PNG or DICOM file")
    name = upload.filename
    content = upload.read()
    if looks_like_dicom(name, content):
        from mammosearch.ingest.dicom import read_dicom

        return read_dicom(content, name, max_pixels=max_pixels).image
    check_image(content, name, max_pixels=max_pixels)
    with PILImage.open(io.BytesIO(content)) as opened:
        opened.load()
        return opened.copy()


def preview_data_url(picture: PILImage.Image, size_px: int = 256) -> str:
    """A small inline JPEG of the query: shown beside its results, never stored."""
    encoded = base64.b64encode(thumbnail_bytes(picture, size_px)).decode("ascii")
    return f"data:image/jpeg;base64,{encoded}"
