"""What a killed process leaves behind, found and cleared: claims nobody holds, temp files.

The embedded default has no sweep: `ingest`, `embed` (pipeline.process_pending) and `serve`
call `release_interrupted_work` first; the sweep (reconcile) calls it too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from mammosearch.config import Settings
from mammosearch.db.session import session_scope
from mammosearch.pipeline import claims

log = logging.getLogger(__name__)

STRAY_TEMP_MIN_AGE_S = 900.0
"""A temp file (`*.tmp`) under images/ or indexes/ untouched this long belongs to a killed
writer: every writer there writes its temp file in one go, in well under a minute, and
renames or removes it at once."""


@dataclass(frozen=True)
class InterruptedWork:
    """What a killed process left behind and was cleared up."""

    released_claims: list[int] = field(default_factory=list)
    removed_temp_files: list[str] = field(default_factory=list)


def stray_temp_files(settings: Settings, min_age_s: float = STRAY_TEMP_MIN_AGE_S) -> list[Path]:
    """Temp files under images/ and indexes/ older than `min_age_s`: a killed writer's."""
    cutoff = time.time() - min_age_s
    found = []
    for directory in (settings.images_dir, settings.index_dir):
        if not directory.is_dir():
            continue
        for path in directory.rglob("*.tmp"):
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    found.append(path)
            except FileNotFoundError:
                continue  # its writer finished meanwhile
    return sorted(found)


def release_interrupted_work(settings: Settings) -> InterruptedWork:
    """Claims nobody holds go back to pending, a killed writer's temp files are removed.

    The embedded default has no sweep: `ingest`, `embed` and `serve` call this first.
    """
    with session_scope(settings.database_url) as session:
        released = claims.release_abandoned(session, settings.claim_lease_s)
    removed = []
    for path in stray_temp_files(settings):
        path.unlink(missing_ok=True)
        removed.append(str(path))
    if removed:
        log.warning("removed %d temp files left by a killed process: %s", len(removed), removed[:5])
    return InterruptedWork(released_claims=released, removed_temp_files=removed)
