"""An uploaded query image (JPEG, PNG or DICOM) -> a checked PIL image, or a clear rejection."""

from __future__ import annotations

import base64

from PIL import Image as PILImage
from werkzeug.datastructures import FileStorage

from mammosearch.config import Settings
from mammosearch.ingest.storage import ImageRejected
from mammosearch.search.case_search import QueryUpload
from mammosearch.search.query_image import pixels_to_decode, read_query_image
from web.imagefiles import thumbnail_bytes
from web.request_limits import reserve_decode


def has_upload(upload: FileStorage | None) -> bool:
    """A file was chosen (browsers send an empty, nameless part when none was)."""
    return upload is not None and bool(upload.filename)


def read_upload(upload: FileStorage | None, current: Settings) -> PILImage.Image:
    """Decode the upload fully (bomb-guarded); raise ImageRejected naming the file and why.

    Its pixels are counted from the header first and held against the process's decoding
    budget until the request ends (DecodeRefused, a 413, when over the cap or the budget).
    """
    if upload is None or not has_upload(upload):
        raise ImageRejected("no image uploaded: choose a JPEG, PNG or DICOM file")
    content, name = upload.read(), upload.filename or "upload"
    reserve_decode(name, pixels_to_decode(content, name), current.max_image_pixels)
    return read_query_image(content, name, current.max_image_pixels, current.accepted_modalities)


def read_query_uploads(files: list[FileStorage], current: Settings) -> list[QueryUpload]:
    """Every chosen file of a request's `image` parts, decoded and checked (as read_upload),
    each with its bytes: the core recognises an archived file by its sha256."""
    chosen = [upload for upload in files if has_upload(upload)]
    uploads = []
    for upload in chosen:
        content, name = upload.read(), upload.filename or "upload"
        reserve_decode(name, pixels_to_decode(content, name), current.max_image_pixels)
        image = read_query_image(
            content, name, current.max_image_pixels, current.accepted_modalities
        )
        uploads.append(QueryUpload(name, content, image))
    return uploads


def preview_data_url(picture: PILImage.Image, size_px: int = 256) -> str:
    """A small inline JPEG of the query: shown beside its results, never stored.

    `picture` is left as it is (the search embeds it at full size).
    """
    encoded = base64.b64encode(thumbnail_bytes(picture, size_px)).decode("ascii")
    return f"data:image/jpeg;base64,{encoded}"
