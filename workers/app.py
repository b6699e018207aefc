"""The one Celery app, configured from the same settings as everything else.

`celery -A workers.app:celery_app worker` and `mammosearch worker` start the same app.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging
from kombu import Queue

from mammosearch.config import Settings, get_settings
from mammosearch.ingest.storage import allow_pixels
from mammosearch.jobs.work_queue import QUEUES
from mammosearch.logs import configure_logging
from workers.schedule import beat_schedule

TASK_ROUTES = {
    "mammosearch.import_folder": {"queue": "ingest"},
    "mammosearch.scan_watch_dirs": {"queue": "ingest"},
    "mammosearch.follow_orthanc": {"queue": "ingest"},
    "mammosearch.reconcile": {"queue": "ingest"},
    "mammosearch.embed_batch": {"queue": "embed"},
    "mammosearch.index_space": {"queue": "index"},
    "mammosearch.evaluate_active_space": {"queue": "evaluate"},
    "mammosearch.embed_into_space": {"queue": "embed"},
    "mammosearch.train_model": {"queue": "train"},
    "mammosearch.auto_train": {"queue": "train"},
    "mammosearch.switch_space": {"queue": "train"},
    "mammosearch.quantize_space": {"queue": "train"},
}


def visibility_timeout_s() -> float:
    """Seconds before a delivered but unacknowledged task goes back on its queue.

    This is how the task of a worker killed mid-batch is redelivered (acks_late). It must
    exceed the longest task, or a slow task runs twice (harmless here, but wasted).
    Read from MAMMOSEARCH_TASK_VISIBILITY_TIMEOUT_S.
    """
    return get_settings().task_visibility_timeout_s


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery's configuration for `settings` (no broker: memory://, tasks never leave)."""
    visibility_s = visibility_timeout_s()
    return {
        "broker_url": settings.celery_broker_url or "memory://",
        "result_backend": settings.celery_result_backend,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": visibility_s,
            # Sweep for abandoned (unacked) messages often enough to honour the timeout.
            "unacked_restore_interval": max(1, min(10, int(visibility_s / 4))),
            "unacked_restore_throttle": 1,
        },
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "task_default_queue": "ingest",
        "task_routes": TASK_ROUTES,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 24 * 3600,
        "task_track_started": True,
        # A task is acknowledged when it ends, so a killed worker's task is redelivered...
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # ...and a worker holds no more than the task it runs.
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "beat_schedule": beat_schedule(settings),
        "beat_schedule_filename": str(settings.data_dir / "celerybeat-schedule"),
        "timezone": "UTC",
    }


@setup_logging.connect
def _use_mammosearch_logging(**_: Any) -> None:
    """Workers and beat log through mammosearch.logs (JSON, scrubbed), not Celery's handlers.

    A receiver on this signal tells Celery not to install its own root and task handlers.
    """
    configure_logging()


def create_celery_app(settings: Settings | None = None) -> Celery:
    """A Celery app for `settings` (default: the process settings)."""
    settings = settings or get_settings()
    allow_pixels(settings.max_image_pixels)  # Pillow's global, once per process
    # workers.recovery: a restarted worker takes back its previous run's claims at once.
    app = Celery("mammosearch", include=["workers.tasks", "workers.recovery"])
    app.conf.update(celery_config(settings))
    app.set_default()
    return app


celery_app = create_celery_app()
