"""check_image's pixel limit: per call, before decoding, and safe under many threads."""

from __future__ import annotations

import io
import struct
import sys
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image as PILImage

from mammosearch.ingest.storage import ImageRejected, allow_pixels, check_image


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(np.full((height, width), 128, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` pixels, with no pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_the_limit_is_per_call_and_leaves_pillow_and_warnings_alone() -> None:
    """A 64x64 image passes a large limit and is refused by a small one; no global changes."""
    content = _png(64, 64)
    pillow_limit, filters = PILImage.MAX_IMAGE_PIXELS, list(warnings.filters)
    assert check_image(content, "ok.png", max_pixels=10_000).width == 64
    refused = r"^big.png: image too large \(64x64 px\); limit is 1000 pixels"
    with pytest.raises(ImageRejected, match=refused):
        check_image(content, "big.png", max_pixels=1000)
    assert PILImage.MAX_IMAGE_PIXELS == pillow_limit and warnings.filters == filters


def test_threads_with_different_limits_each_get_their_own_answer() -> None:
    """Under gunicorn's threads, one request's limit never leaks into another's check."""
    content = _png(64, 64)

    def verdict(max_pixels: int) -> bool:
        try:
            check_image(content, "x.png", max_pixels=max_pixels)
        except ImageRejected:
            return False
        return True

    limits = [1000, 10_000] * 500
    pillow_limit, switch_interval_s = PILImage.MAX_IMAGE_PIXELS, sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            verdicts = list(pool.map(verdict, limits))
    finally:
        sys.setswitchinterval(switch_interval_s)
    assert verdicts == [limit == 10_000 for limit in limits]
    assert PILImage.MAX_IMAGE_PIXELS == pillow_limit


def test_a_header_claiming_a_huge_image_is_refused_before_decoding() -> None:
    """Pillow's own bomb error (over twice its global limit) becomes a named rejection."""
    with pytest.raises(ImageRejected, match=r"^bomb.png: image too large .*limit is 1000 pixels"):
        check_image(_png_header_only(40_000, 40_000), "bomb.png", max_pixels=1000)


def test_the_start_up_limit_only_ever_raises_pillows(monkeypatch: pytest.MonkeyPatch) -> None:
    """allow_pixels lifts Pillow's global to the configured limit and never lowers it."""
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1_000_000)
    allow_pixels(5_000_000)
    assert PILImage.MAX_IMAGE_PIXELS == 5_000_000
    allow_pixels(1000)  # e.g. a test app with a tiny limit: the other apps keep theirs
    assert PILImage.MAX_IMAGE_PIXELS == 5_000_000
    with pytest.raises(ValueError, match="MAMMOSEARCH_MAX_IMAGE_PIXELS: 0"):
        allow_pixels(0)
