"""Asking for a damaged index to be rebuilt from the database, from the web process.

With a broker the workers repair (an index run with verify, under the space's writer lock).
In the embedded default there is no worker and no sweep: the server itself runs the repair,
in one background thread per space, so "being repaired" is true whoever noticed the damage
(a search, /readyz).
"""

from __future__ import annotations

import logging
import threading

from mammosearch.jobs.work_queue import WorkQueue

log = logging.getLogger(__name__)

RETRY_AFTER_S = 10
"""What a 503 for an index being repaired tells clients to wait before asking again."""

_repairing: set[int] = set()
_repairing_lock = threading.Lock()


def request_repair(queue: WorkQueue, space_id: int) -> None:
    """Have `space_id`'s indexes verified against the database and repaired, once at a time."""
    if queue.mode != "in-process":
        try:
            queue.request_index(space_id, verify=True)
        except Exception:  # noqa: BLE001 - the sweep asks again; the 503 stands either way
            log.warning("could not ask the workers to repair space %s", space_id, exc_info=True)
        return
    with _repairing_lock:
        if space_id in _repairing:
            return
        _repairing.add(space_id)

    def _repair() -> None:
        try:
            queue.request_index(space_id, force=True, verify=True)
            log.warning("indexes of space %s repaired from the database", space_id)
        except Exception:  # noqa: BLE001 - the next search or /readyz asks again
            log.exception("repairing the indexes of space %s failed", space_id)
        finally:
            with _repairing_lock:
                _repairing.discard(space_id)

    threading.Thread(target=_repair, name=f"repair space {space_id}", daemon=True).start()
