"""The writer lock of one embedding space's indexes, owned by the core, taken by every writer.

Appends (index worker, in-process pipeline), removals, verify --repair, compaction and
rebuilds all write a space's metric indexes; each takes this lock first, whoever calls it
(CLI, worker, web), so a rebuild never races an append. It is an flock on
`<index_dir>/space-<id>/.writer.lock`: released by the kernel when its holder dies (kill -9
included), shared by every process that sees the same index volume. Re-entrant within a
thread, so a locked operation may call another (verify --repair appends). The file holds a
line naming the current holder, for the message of whoever waits.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

LOCK_FILE_NAME = ".writer.lock"
POLL_S = 0.05

_held = threading.local()  # lock path -> depth, for the current thread


class IndexBusy(RuntimeError):
    """Another writer holds the space's index lock; try again later."""


def lock_path(index_dir: Path, space_id: int) -> Path:
    return Path(index_dir) / f"space-{space_id}" / LOCK_FILE_NAME


def _holder_line(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "an unnamed writer"
    except OSError:
        return "an unnamed writer"


@contextmanager
def space_writer_lock(
    index_dir: Path, space_id: int, purpose: str, wait_s: float | None = None
) -> Iterator[None]:
    """Hold the writer lock of space `space_id` for the block.

    `wait_s=None` waits as long as it takes; otherwise IndexBusy after `wait_s` seconds.
    """
    path = lock_path(index_dir, space_id)
    depths: dict[str, int] = _held.__dict__.setdefault("depths", {})
    key = str(path)
    if depths.get(key):
        depths[key] += 1
        try:
            yield
        finally:
            depths[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise IndexBusy(
                        f"indexes of space {space_id}: held by {_holder_line(path)}"
                        f" ({path}); {purpose} retries later"
                    ) from None
                time.sleep(POLL_S)
        since = datetime.now(UTC).isoformat(timespec="seconds")
        os.ftruncate(descriptor, 0)
        os.pwrite(
            descriptor,
            f"{purpose} by pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode(),
            0,
        )
        depths[key] = 1
        try:
            yield
        finally:
            depths.pop(key, None)
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)
