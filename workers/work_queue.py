"""Which WorkQueue an entry point hands the core: Celery with a broker, in-process without.

Celery is imported only when a broker is configured, so the embedded default (no broker)
never loads it.
"""

from __future__ import annotations

from mammosearch.config import Settings
from mammosearch.jobs.work_queue import InProcessQueue, WorkQueue


def work_queue_for(settings: Settings, progress: bool = False) -> WorkQueue:
    """CELERY_BROKER_URL set: the Celery queues; unset: the pipeline runs in the caller.

    `progress` shows a progress bar while the in-process pipeline embeds.
    """
    if not settings.celery_broker_url:
        return InProcessQueue(settings, progress=progress)
    from workers.enqueue import CeleryWorkQueue

    return CeleryWorkQueue(settings)
