"""The manifest: the one file that says which segments make up an index, written atomically.

A crash at any moment leaves either the old or the new manifest on disk, never a torn one:
the new text goes to a unique temp file, is fsynced, replaces the old name with
`os.replace`, and the directory is fsynced so the rename itself survives power loss.
Segment files are written (and fsynced) the same way *before* the manifest that names them.

Its `index_uid` names one index's history, so a directory swapped for a rebuilt index is
noticed even when the new manifest happens to carry the same version number.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
TEMP_SUFFIX = ".tmp"
SEALED, DELTA = "sealed", "delta"
"""Segment kinds: the one trained main index, and the small Flat segments of new appends."""
IDENTITY_KEYS = ("backbone", "weights_sha256", "pretrained", "preprocessing_version", "dim")
"""The parts of an embedding space's describe() that make two vectors comparable."""


class IndexCorruptError(RuntimeError):
    """The manifest or a segment it names cannot be read as written."""


class IndexMismatchError(ValueError):
    """An existing index was built for another dim, metric or embedding space."""


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


def index_uid(manifest: dict[str, Any] | None) -> str | None:
    return manifest.get("index_uid") if manifest else None


def next_manifest(
    previous: dict[str, Any] | None,
    *,
    dim: int,
    metric: str,
    factory: str,
    segment_size: int,
    identity: dict[str, Any] | None,
    segments: list[dict[str, Any]],
    retired: list[str],
) -> dict[str, Any]:
    """The manifest that follows `previous` (None: the first), naming these segment entries.

    `retired` lists the files this write stopped naming: garbage only after the next write,
    since a reader that read `previous` a moment ago may still be opening them.
    """
    old_identity = previous.get("identity") if previous else None
    return {
        "format": MANIFEST_FORMAT,
        "index_uid": index_uid(previous) or uuid.uuid4().hex,
        "version": (previous["version"] if previous else 0) + 1,
        "dim": dim,
        "metric": metric,
        "factory": factory,
        "segment_size": segment_size,
        "identity": identity if identity is not None else old_identity,
        "segments": segments,
        "retired": retired,
        "updated_at": datetime.now(UTC).isoformat(),
    }


def check_compatible(
    manifest: dict[str, Any],
    root: Path,
    dim: int,
    metric: str,
    identity: dict[str, Any] | None,
) -> None:
    """Raise IndexMismatchError when the index at `root` holds vectors not comparable with
    the ones it is opened for."""
    problems = []
    if manifest["dim"] != dim:
        problems.append(f"dim {manifest['dim']} (opened with {dim})")
    if manifest["metric"] != metric:
        problems.append(f"metric {manifest['metric']!r} (opened with {metric!r})")
    recorded = manifest.get("identity") or {}
    if identity is not None:
        for key in IDENTITY_KEYS:
            if key in recorded and key in identity and recorded[key] != identity[key]:
                problems.append(f"{key} {recorded[key]!r} (opened with {identity[key]!r})")
    if problems:
        raise IndexMismatchError(
            f"{root}: this index was built for {', '.join(problems)}; its vectors are"
            " not comparable. Rebuild it from the database or use another directory."
        )
