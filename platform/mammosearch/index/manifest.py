"""The manifest: the one file that says which segments make up an index, written atomically.

A crash at any moment leaves either the old or the new manifest on disk, never a torn one:
the new text goes to a unique temp file, is fsynced, replaces the old name with
`os.replace`, and the directory is fsynced so the rename itself survives power loss.
Segment files are written (and fsynced) the same way *before* the manifest that names them.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
TEMP_SUFFIX = ".tmp"


class IndexCorruptError(RuntimeError):
    """The manifest or a segment it names cannot be read as written."""


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file name inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_file(path: Path, content: bytes | memoryview) -> tuple[int, str]:
    """Write a file that must not exist yet, fsync it; return (size in bytes, sha256)."""
    digest = hashlib.sha256(content).hexdigest()
    with open(path, "xb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    return len(content), digest


def sha256_of(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest at `path`, or None when the index has never been written."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        manifest: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError as error:
        raise IndexCorruptError(f"{path}: not valid JSON ({error})") from error
    if manifest.get("format") != MANIFEST_FORMAT:
        raise IndexCorruptError(
            f"{path}: manifest format {manifest.get('format')!r}, this code reads {MANIFEST_FORMAT}"
        )
    return manifest


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest at `path` atomically (temp file, fsync, os.replace, fsync dir)."""
    temp_path = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
    text = json.dumps(manifest, indent=1, sort_keys=True)
    try:
        write_new_file(temp_path, text.encode("utf-8"))
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
