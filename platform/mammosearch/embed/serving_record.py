"""Which backbone serves the archive: DATA_DIR/serving-space.json, written by `spaces activate`.

With MAMMOSEARCH_BACKBONE left at `auto`, every process (web, workers, CLI) embeds and
searches with the activated backbone; an explicit MAMMOSEARCH_BACKBONE pins a process to its
own. The file is replaced atomically, and re-read whenever it changes, so a switch reaches
running processes at their next request without a restart.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mammosearch.durable.atomic_files import atomic_write_bytes

SERVING_FILE = "serving-space.json"
_cache: dict[Path, tuple[int, dict[str, Any] | None]] = {}


def serving_path(data_dir: Path) -> Path:
    return Path(data_dir) / SERVING_FILE


def read_serving(data_dir: Path) -> dict[str, Any] | None:
    """The activation record, or None when no space was ever activated."""
    path = serving_path(data_dir)
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    cached = _cache.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    record: dict[str, Any] | None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = None
    _cache[path] = (stamp, record)
    return record


def serving_backbone(configured: str, data_dir: Path) -> str:
    """`configured` unless it is `auto` and a space was activated: then the activated one."""
    if configured != "auto":
        return configured
    record = read_serving(data_dir)
    return str(record["backbone"]) if record and record.get("backbone") else configured


def write_serving(data_dir: Path, backbone: str, space: dict[str, Any]) -> dict[str, Any]:
    """Record `backbone` (and its space) as the serving one, in one atomic replace."""
    record = {
        "backbone": backbone,
        "space": space,
        "activated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_bytes(serving_path(data_dir), json.dumps(record, indent=2).encode())
    return record
