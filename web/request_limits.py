"""Input a request cannot be allowed to carry: ids past the database's integers, JSON nested
past the parser's stack, query images past the decoding budget. Each is a 4xx that names the
input, never a 500 or an exhausted worker."""

from __future__ import annotations

import json
import threading
from typing import Any

from flask import Flask, current_app, g
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.routing import IntegerConverter

MAX_ID = 2**63 - 1  # BIGINT / SQLite INTEGER: a larger id cannot be in the archive
MAX_JSON_DEPTH = 64  # a search body is two levels deep; far past that is an attack or a bug


class BoundedIntConverter(IntegerConverter):
    """`<int:...>` in a URL, refused with 400 past MAX_ID instead of failing in the database."""

    def to_python(self, value: str) -> int:
        number: int = super().to_python(value)
        if number > MAX_ID:
            # Raised while the URL is matched: Flask answers it like an abort(400).
            raise BadRequest(
                f"{value[:30]}{'...' if len(value) > 30 else ''}: not an id "
                f"(ids are whole numbers up to {MAX_ID})"
            )
        return number


def _depth_exceeds(text: str, limit: int) -> bool:
    """True when brackets outside strings nest deeper than `limit` (linear, no recursion)."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


class BoundedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, refusing bodies nested deeper than MAX_JSON_DEPTH with a 400."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        text = s.decode("utf-8", "replace") if isinstance(s, bytes | bytearray) else s
        if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth_exceeds(
            text, MAX_JSON_DEPTH
        ):
            raise BadRequest(f"request body: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            return json.loads(s, **kwargs)
        except RecursionError as exc:  # a safety net: the depth check above comes first
            raise BadRequest("request body: JSON nested too deeply") from exc


class PixelBudget:
    """Decoded query pixels in flight across the process's request threads."""

    def __init__(self, total_pixels: int) -> None:
        self.total_pixels = total_pixels
        self.in_use = 0
        self._lock = threading.Lock()

    def try_reserve(self, pixels: int) -> bool:
        with self._lock:
            if self.in_use + pixels > self.total_pixels:
                return False
            self.in_use += pixels
            return True

    def release(self, pixels: int) -> None:
        with self._lock:
            self.in_use = max(0, self.in_use - pixels)


class DecodeRefused(HTTPException):
    """413: a query image would decode past the per-request cap or the shared budget."""

    code = 413

    def __init__(self, description: str, retry_after_s: int | None = None) -> None:
        super().__init__(description)
        self.retry_after_s = retry_after_s

    def get_headers(self, environ=None, scope=None):  # type: ignore[no-untyped-def]
        headers = super().get_headers(environ, scope)
        if self.retry_after_s is not None:
            headers.append(("Retry-After", str(self.retry_after_s)))
        return headers


def reserve_decode(name: str, pixels: int, max_pixels: int) -> None:
    """Hold `pixels` of the app's budget until the request ends, or raise DecodeRefused."""
    if pixels > max_pixels:
        raise DecodeRefused(
            f"{name}: {pixels} pixels to decode; a query may decode at most {max_pixels} "
            "(MAMMOSEARCH_MAX_IMAGE_PIXELS)"
        )
    budget: PixelBudget = current_app.extensions["mammosearch_pixel_budget"]
    if not budget.try_reserve(pixels):
        raise DecodeRefused(
            f"{name}: the server is decoding other images ({budget.in_use} of "
            f"{budget.total_pixels} pixels in use, MAMMOSEARCH_DECODE_BUDGET_PIXELS); "
            "try again in a few seconds",
            retry_after_s=5,
        )
    g.reserved_decode_pixels = getattr(g, "reserved_decode_pixels", 0) + pixels


def _release_decode(_error: BaseException | None) -> None:
    pixels = g.pop("reserved_decode_pixels", 0)
    if pixels:
        current_app.extensions["mammosearch_pixel_budget"].release(pixels)


def init_app(app: Flask) -> None:
    """Before the blueprints: their URL rules take the converter when they are added."""
    app.url_map.converters["int"] = BoundedIntConverter
    app.json = BoundedJSONProvider(app)
    settings = app.extensions["mammosearch_settings"]
    app.extensions["mammosearch_pixel_budget"] = PixelBudget(settings.decode_budget_pixels)
    app.teardown_request(_release_decode)
