"""The writer lock of one embedding space's indexes, owned by the core, taken by every writer.

Appends (index worker, in-process pipeline), removals, verify --repair, compaction and
rebuilds all write a space's metric indexes; each takes this lock first, whoever calls it
(CLI, worker, web), so a rebuild never races an append. It is an flock on
`<index_dir>/space-<id>/.writer.lock`: released by the kernel when its holder dies (kill -9
included), shared by every process that sees the same index volume. Re-entrant within a
thread, so a locked operation may call another (verify --repair appends). The file holds a
line naming the current holder, for the message of whoever waits (mammosearch.durable.file_lock).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from mammosearch.config import space_index_dir
from mammosearch.durable.file_lock import LockHeld, exclusive_file_lock

LOCK_FILE_NAME = ".writer.lock"

_held = threading.local()  # lock path -> depth, for the current thread


class IndexBusy(RuntimeError):
    """Another writer holds the space's index lock; try again later."""


def lock_path(index_dir: Path, space_id: int) -> Path:
    return space_index_dir(index_dir, space_id) / LOCK_FILE_NAME


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
    held_lock = ExitStack()
    try:  # only taking the lock is translated: the block's own errors pass through
        held_lock.enter_context(exclusive_file_lock(path, purpose, wait_s))
    except LockHeld as held:
        raise IndexBusy(
            f"indexes of space {space_id}: held by {held.holder} ({path}); {purpose} retries later"
        ) from None
    with held_lock:
        depths[key] = 1
        try:
            yield
        finally:
            depths.pop(key, None)
