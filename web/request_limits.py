"""Input a request cannot be allowed to carry: ids past the database's integers, JSON nested
past the parser's stack. Each is a 400 that names the input, never a 500."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter

MAX_ID = 2**63 - 1  # BIGINT / SQLite INTEGER: a larger id cannot be in the archive
MAX_JSON_DEPTH = 64  # a search body is two levels deep; far past that is an attack or a bug


class BoundedIntConverter(IntegerConverter):
    """`<int:...>` in a URL, refused with 400 past MAX_ID instead of failing in the database."""

    def to_python(self, value: str) -> int:
        number = super().to_python(value)
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


def init_app(app: Flask) -> None:
    """Before the blueprints: their URL rules take the converter when they are added."""
    app.url_map.converters["int"] = BoundedIntConverter
    app.json = BoundedJSONProvider(app)
