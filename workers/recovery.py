"""A restarted worker takes back at once the claims its previous run left behind.

Its earlier processes are gone (the worker was killed, as an OOM kill or a node restart
does), so the claims they held are dead: they are released and handed out again now,
without waiting for their lease to run out (mammosearch.pipeline.claims).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready

from mammosearch.config import get_settings
from mammosearch.db.session import session_scope
from mammosearch.pipeline import claims

log = logging.getLogger(__name__)


def reclaim_previous_run(node: str) -> list[int]:
    """Release the claims of `node`'s earlier runs and enqueue their images again."""
    from workers.enqueue import CeleryWorkQueue

    settings = get_settings()
    with session_scope(settings.database_url) as session:
        released = claims.release_previous_runs(session, claims.holder_name(node))
    if released:
        CeleryWorkQueue(settings).enqueue_embedding(released, force=True)
        log.warning(
            "%s restarted: %d images of its previous run handed out again", node, len(released)
        )
    return released


@worker_ready.connect
def _reclaim_on_start(sender: Any = None, **_: Any) -> None:
    node = getattr(sender, "hostname", None)
    if not node:
        return
    try:
        reclaim_previous_run(node)
    except Exception:  # the sweep releases them when their lease ends
        log.exception("%s: could not take back the claims of its previous run", node)
