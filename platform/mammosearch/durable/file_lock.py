"""An exclusive flock on a file that names its holder: one writer or job at a time, everywhere.

Released by the kernel when its holder dies (kill -9 included) and shared by every process
that sees the same volume, so the CLI, a worker and the web service all wait for the same
lock. The file holds a line naming the current holder, for the message of whoever waits.
Users: the index writer lock (index/writer_lock.py) and the auto-training job (train/auto.py).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

POLL_S = 0.05


class LockHeld(RuntimeError):
    """Another process holds the lock; `holder` is its line from the lock file."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path}: held by {holder}")
        self.path, self.holder = path, holder


def holder_line(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "an unnamed holder"
    except OSError:
        return "an unnamed holder"


@contextmanager
def exclusive_file_lock(path: Path, purpose: str, wait_s: float | None = None) -> Iterator[None]:
    """Hold `path`'s flock for the block; `wait_s=None` waits, else LockHeld after `wait_s`."""
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
                    raise LockHeld(path, holder_line(path)) from None
                time.sleep(POLL_S)
        since = datetime.now(UTC).isoformat(timespec="seconds")
        os.ftruncate(descriptor, 0)
        os.pwrite(
            descriptor,
            f"{purpose} by pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode(),
            0,
        )
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def is_held(path: Path) -> bool:
    """Whether some process (this one included) holds `path`'s lock now."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # never taken
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return False
    finally:
        os.close(descriptor)
