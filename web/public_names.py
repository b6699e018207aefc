"""Server file paths -> names fit to show: pages and API answers never reveal the server's
directory layout (a weights file is named by its package or its file name)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from flask import Flask

# An absolute POSIX path inside free text: "/" then segments up to a space, quote or bracket.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[^\s/()'\",;]+/)*[^\s/()'\",;]+")
_PACKAGE_DIRS = {"site-packages", "dist-packages"}


def _public_path(match: re.Match[str]) -> str:
    parts = PurePosixPath(match.group(0)).parts
    for index, part in enumerate(parts[:-2]):
        if part in _PACKAGE_DIRS:
            return f"{parts[index + 1]} package ({parts[-1]})"
    return parts[-1]


def public_text(text: str | None) -> str | None:
    """`text` with each absolute path replaced: '…/site-packages/pkg/…/w.pth' -> 'pkg package
    (w.pth)', any other path -> its file name; text without a path is returned unchanged."""
    if not text:
        return text
    return _ABSOLUTE_PATH.sub(_public_path, text)


def public_json(value: Any) -> Any:
    """`value` (JSON-like) with `public_text` applied to every string in it."""
    if isinstance(value, str):
        return public_text(value)
    if isinstance(value, Mapping):
        return {key: public_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [public_json(item) for item in value]
    return value


def public_space(space: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An embedding space's description as pages and the API show it."""
    if space is None:
        return None
    shown = dict(space)
    shown["weights_source"] = public_text(shown.get("weights_source"))
    return shown


def init_app(app: Flask) -> None:
    """`{{ text | public_text }}` and `{{ value | public_json }}` in templates."""
    app.add_template_filter(public_text, "public_text")
    app.add_template_filter(public_json, "public_json")
