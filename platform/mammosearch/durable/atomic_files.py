"""Write-then-rename, once: a reader sees the old file or the new one, never a partial one.

Every file the product writes for others to read (records, reports, figures, thumbnails,
models, weights, images) goes through here: a temp file beside the target, fsync, then
`os.replace`. A failure or Ctrl-C removes the temp file and leaves the old target as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PRIVATE = 0o600  # mkstemp's own mode: readable by the owner only
SHARED = 0o644  # for files another service (the web server) reads


@contextmanager
def atomic_path(path: Path, mode: int = PRIVATE, suffix: str = ".tmp") -> Iterator[Path]:
    """A temp path beside `path` for a writer that wants a file name (savefig, ONNX export);
    it replaces `path` when the block ends without an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    try:
        yield Path(temp_name)
        with open(temp_name, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_writer(path: Path, mode: int = PRIVATE, suffix: str = ".tmp") -> Iterator[object]:
    """A binary handle for streaming into `path` (e.g. a download); same guarantees."""
    with atomic_path(path, mode, suffix) as temp_path, open(temp_path, "wb") as handle:
        yield handle


def atomic_write_bytes(path: Path, content: bytes, mode: int = PRIVATE) -> None:
    """Write `content` to `path` atomically."""
    with atomic_path(path, mode) as temp_path:
        temp_path.write_bytes(content)


def atomic_write_text(path: Path, text: str, mode: int = PRIVATE) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def read_json_record(path: Path) -> dict[str, Any]:
    """A small JSON state file (a job's or a run's record); `{}` when absent or unreadable:
    such files are rewritten whole at the next step, so a torn or missing one means "none"."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_json_record(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Replace the record atomically (a reader never sees half of it); returns it."""
    atomic_write_bytes(path, json.dumps(record, indent=2, default=str).encode())
    return record
