"""The files of one index directory: segments written once, loaded only after their checksum,
damaged ones quarantined, and files no manifest names deleted.

Nothing read back from disk is trusted without its checksum: a segment is re-hashed against
the manifest's sha256 before it is loaded (and by `verify`). One that is missing, differs,
or that FAISS cannot read is quarantined (moved to `quarantine/`, never served); its vectors
come back from the database, the truth (pipeline.verify_index).

Files no manifest names are garbage collected after the next successful write: crash
leftovers at once, files just retired by this write only on the write after (so a reader
that read the previous manifest a moment ago can still open them).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from mammosearch.durable.faults import fault_point
from mammosearch.index.manifest import (
    MANIFEST_NAME,
    TEMP_SUFFIX,
    IndexCorruptError,
    fsync_dir,
    sha256_of,
)
from mammosearch.index.segments import (
    FLAT,
    Segment,
    faiss_metric,
    load_segment,
    write_segment_file,
)

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".faiss"
QUARANTINE_DIR = "quarantine"


class SegmentDamaged(IndexCorruptError):
    """A segment named by the manifest is missing, differs from its sha256 or cannot be read."""


class SegmentStore:
    """The segment files under `root`, with the loaded segments and checked hashes it keeps."""

    def __init__(self, root: Path, dim: int, metric: str) -> None:
        self.root = root
        self.dim = dim
        self.metric = metric
        self._loaded: dict[str, Segment] = {}
        # file -> (inode, size, mtime) when its sha256 last matched (see problem())
        self._hashed: dict[str, tuple[int, int, int]] = {}

    # ---- reading -----------------------------------------------------------------------

    def segment(self, entry: dict[str, Any]) -> Segment:
        """The segment a manifest entry names: the one loaded before, else loaded checked.

        Raises FileNotFoundError when the file is missing, SegmentDamaged (after moving it
        to quarantine) when it differs from its entry or FAISS cannot read it.
        """
        segment = self._loaded.get(entry["file"])
        if segment is not None:
            return segment
        path = self.root / entry["file"]
        problem = self.problem(entry)
        if problem == "missing":
            raise FileNotFoundError(f"{path}: no such segment file")
        segment = None
        if problem is None:
            try:
                segment = load_segment(path, entry["factory"])
            except (RuntimeError, AttributeError, ValueError) as error:
                problem = f"FAISS cannot read it ({str(error).strip().splitlines()[0][:200]})"
            else:
                problem = self._segment_problem(segment, entry)
        if problem is None and segment is not None:
            return segment
        raise SegmentDamaged(f"{path}: {problem}; {self.quarantine(path)}")

    def keep_loaded(self, segments: Iterable[Segment]) -> None:
        """Keep exactly these segments loaded (those of the view now served)."""
        in_use = {segment.file: segment for segment in segments}
        for file_name in list(self._loaded):
            if file_name not in in_use:
                del self._loaded[file_name]
        for file_name in list(self._hashed):
            if file_name not in in_use:
                del self._hashed[file_name]
        self._loaded.update(in_use)

    def verify(self, entry: dict[str, Any]) -> str | None:
        """Check one segment file against its entry; on a problem, forget the loaded segment
        and quarantine a damaged file, and return the problem for the report."""
        path = self.root / entry["file"]
        problem = self.problem(entry)
        if problem is None:
            return None
        if problem != "missing":
            problem = f"{problem}; {self.quarantine(path)}"
        self._loaded.pop(entry["file"], None)
        self._hashed.pop(entry["file"], None)
        return f"{path}: {problem}"

    def problem(self, entry: dict[str, Any]) -> str | None:
        """What is wrong with a segment file against its manifest entry: "missing", a size or
        sha256 mismatch, or None when it is what the manifest says.

        A file not touched since its sha256 last matched (same inode, size, mtime) is not
        hashed again (the sweep verifies every 30 s; a 5 GB main index would be read whole
        each time). A new process hashes every file once.
        """
        path = self.root / entry["file"]
        try:
            stat = path.stat()
            if stat.st_size != entry["bytes"]:
                return f"{stat.st_size} bytes, manifest says {entry['bytes']}"
            identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            if entry.get("sha256") and self._hashed.get(entry["file"]) != identity:
                if sha256_of(path) != entry["sha256"]:
                    return "sha256 differs from the manifest"
                self._hashed[entry["file"]] = identity
        except FileNotFoundError:
            return "missing"
        except OSError as error:  # unreadable: as good as damaged
            return f"cannot be read ({error.strerror or error})"
        return None

    def quarantine(self, path: Path) -> str:
        """Move a damaged segment aside (one rename: atomic), so it is never served again;
        returns where it went, for the report."""
        aside_dir = self.root / QUARANTINE_DIR
        aside = aside_dir / f"{path.name}.{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
        try:
            aside_dir.mkdir(exist_ok=True)
            os.rename(path, aside)
            fsync_dir(self.root)
        except FileNotFoundError:
            return "already moved aside"
        except OSError as error:  # e.g. a read-only mount: still never served from here
            log.error("index %s: cannot quarantine %s (%s)", self.root, path.name, error)
            return f"not served (could not be moved aside: {error.strerror or error})"
        log.error("index %s: damaged segment %s quarantined as %s", self.root, path.name, aside)
        return f"quarantined as {aside}"

    def _segment_problem(self, segment: Segment, entry: dict[str, Any]) -> str | None:
        if len(segment.ids) != entry["count"]:
            return f"holds {len(segment.ids)} vectors, manifest says {entry['count']}"
        if segment.index.d != self.dim:
            return f"holds {segment.index.d}-d vectors, the index is {self.dim}-d"
        if segment.index.metric_type != faiss_metric(self.metric):
            return f"built for another metric than {self.metric!r}"
        return None

    # ---- writing (the caller holds the writer lock) ------------------------------------

    def write(
        self,
        version: int,
        kind: str,
        ids: np.ndarray,
        index: faiss.IndexIDMap2,
        factory: str = FLAT,
    ) -> tuple[dict[str, Any], Segment]:
        """Write a new segment file under a fresh unique name; its manifest entry and segment."""
        file_name = f"{kind}-{version:08d}-{uuid.uuid4().hex[:12]}{SEGMENT_SUFFIX}"
        size_bytes, sha256 = write_segment_file(self.root / file_name, index)
        written = (self.root / file_name).stat()
        self._hashed[file_name] = (written.st_ino, written.st_size, written.st_mtime_ns)
        fault_point("index:segment-written")
        entry = {
            "file": file_name,
            "kind": kind,
            "factory": factory,
            "count": len(ids),
            "bytes": size_bytes,
            "sha256": sha256,
            "deleted": [],
        }
        return entry, Segment(file=file_name, index=index, ids=ids.copy(), factory=factory)

    def remember(self, segments: Iterable[Segment]) -> None:
        """Keep segments just written loaded, so publishing them does not read them back."""
        for segment in segments:
            self._loaded[segment.file] = segment

    def collect_garbage(self, manifest: dict[str, Any], include_retired: bool) -> list[str]:
        """Delete files `manifest` does not name (nor, unless `include_retired`, retire) and
        that are not newer than it; returns their names."""
        keep = {entry["file"] for entry in manifest["segments"]}
        if not include_retired:
            keep |= set(manifest.get("retired", []))
        manifest_mtime_ns = (self.root / MANIFEST_NAME).stat().st_mtime_ns
        removed = []
        for path in self.root.iterdir():
            if not _is_index_file(path) or path.name in keep:
                continue
            try:
                if path.stat().st_mtime_ns > manifest_mtime_ns:
                    continue  # written after the manifest: not ours to judge
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path.name)
            self._loaded.pop(path.name, None)
        if removed:
            log.info("index %s: collected %d unreferenced files", self.root, len(removed))
        return removed

    def strays(self, manifest: dict[str, Any] | None) -> list[str]:
        """Files neither `manifest`'s segments nor its retired ones (an interrupted write's
        segments, temp manifests), sorted."""
        manifest = manifest or {"segments": [], "retired": []}
        keep = {entry["file"] for entry in manifest["segments"]}
        keep |= set(manifest.get("retired", []))
        if not self.root.is_dir():
            return []
        return sorted(
            path.name
            for path in self.root.iterdir()
            if path.name not in keep and _is_index_file(path)
        )

    def discard_strays(self, manifest: dict[str, Any] | None) -> list[str]:
        """Delete strays(); only under the writer lock, when no write is in flight and every
        stray is an abandoned one."""
        strays = self.strays(manifest)
        for name in strays:
            (self.root / name).unlink(missing_ok=True)
            self._loaded.pop(name, None)
        if strays:
            log.warning(
                "index %s: removed %d files of an interrupted write", self.root, len(strays)
            )
        return strays


def _is_index_file(path: Path) -> bool:
    """A segment file or a temp manifest: what garbage collection may judge."""
    return path.suffix == SEGMENT_SUFFIX or (
        path.name.startswith(f".{MANIFEST_NAME}.") and path.name.endswith(TEMP_SUFFIX)
    )
