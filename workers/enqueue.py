"""Putting work on the queues, without flooding them with duplicates.

Each image handed out is marked in Redis (`enqueued:image:<id>`, expiring with the broker's
visibility timeout) so repeated dispatches and sweeps do not enqueue it again while its task
is still on its way; the embed task clears the mark as soon as it has claimed the images
(from then on the claim's lease in the database says who works on them, see
mammosearch.pipeline.claims), so a worker killed mid-batch leaves no mark behind. Index runs
are coalesced: a run is enqueued only when none is waiting for the space
(`index-requested:<space>`), and the run clears that key *before* it reads the rows, so work
committed after the read always causes another run. Nothing is lost by coalescing: a run
indexes everything unindexed.

Tasks are sent by name (the names workers/app.py routes), so this module and workers/tasks.py
do not import each other. `CeleryWorkQueue` is the core's WorkQueue port over these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mammosearch.config import Settings
from mammosearch.db.session import session_scope
from mammosearch.jobs.work_queue import QUEUES, DispatchSummary
from mammosearch.pipeline import embed_stage
from workers.app import celery_app, visibility_timeout_s
from workers.depths import queue_depths
from workers.locks import KEY_PREFIX, mark_once, redis_client

MAX_IMAGES_PER_DISPATCH = 100_000
INDEX_REQUEST_TTL_S = 600.0
EMBED_BATCH_TASK = "mammosearch.embed_batch"
INDEX_SPACE_TASK = "mammosearch.index_space"
IMPORT_FOLDER_TASK = "mammosearch.import_folder"
EVALUATE_TASK = "mammosearch.evaluate_active_space"


def enqueued_key(image_id: int) -> str:
    return f"{KEY_PREFIX}:enqueued:image:{image_id}"


def index_request_key(space_id: int) -> str:
    return f"{KEY_PREFIX}:index-requested:{space_id}"


def redis_url(settings: Settings) -> str:
    url = settings.redis_url or settings.celery_broker_url
    if not url or not url.startswith(("redis://", "rediss://", "unix://")):
        raise RuntimeError(
            f"CELERY_BROKER_URL={settings.celery_broker_url!r} is not Redis: set REDIS_URL "
            "for the workers' locks"
        )
    return url


def _send(task_name: str, args: list[object], settings: Settings) -> str:
    """Publish to the broker `settings` name (the app's own unless a caller passes others)."""
    if celery_app.conf.broker_url == settings.celery_broker_url:
        return celery_app.send_task(task_name, args=args).id
    with celery_app.connection_for_write(settings.celery_broker_url) as connection:
        return celery_app.send_task(task_name, args=args, connection=connection).id


def enqueue_pending(
    settings: Settings,
    image_ids: Sequence[int] | None = None,
    batch_size: int | None = None,
    force: bool = False,
) -> DispatchSummary:
    """Send `embed_batch` tasks for the pending images (or `image_ids`) not already on their
    way (`force`: their marks are cleared first, e.g. for claims whose holder died)."""
    if image_ids is None:
        with session_scope(settings.database_url) as session:
            image_ids = embed_stage.pending_image_ids(session, MAX_IMAGES_PER_DISPATCH)
    client = redis_client(redis_url(settings))
    if force and image_ids:
        client.delete(*(enqueued_key(image_id) for image_id in image_ids))
    ttl_s = visibility_timeout_s()
    fresh = [image_id for image_id in image_ids if mark_once(client, enqueued_key(image_id), ttl_s)]
    size = max(1, batch_size or settings.embed_batch_size)
    tasks = 0
    for start in range(0, len(fresh), size):
        chunk = fresh[start : start + size]
        try:
            _send(EMBED_BATCH_TASK, [chunk], settings)
        except Exception:
            client.delete(*(enqueued_key(image_id) for image_id in fresh[start:]))
            raise
        tasks += 1
    already_queued = len(image_ids) - len(fresh)
    return DispatchSummary(
        mode="broker", images=len(fresh), tasks=tasks, detail={"already_queued": already_queued}
    )


def forget_enqueued(settings: Settings, image_ids: Sequence[int]) -> None:
    """Clear the marks of images whose task ran, so a later sweep may hand them out again."""
    if image_ids:
        redis_client(redis_url(settings)).delete(*(enqueued_key(i) for i in image_ids))


def request_index(
    settings: Settings, space_id: int, force: bool = False, verify: bool = False
) -> bool:
    """Enqueue an index run for the space unless one is already waiting; True when sent.

    `verify`: the run then compares the indexes with the database and repairs them.
    """
    client = redis_client(redis_url(settings))
    key = index_request_key(space_id)
    if force:
        client.set(key, "1", ex=int(INDEX_REQUEST_TTL_S))
    elif not mark_once(client, key, INDEX_REQUEST_TTL_S):
        return False
    try:
        _send(INDEX_SPACE_TASK, [space_id, verify] if verify else [space_id], settings)
    except Exception:
        client.delete(key)
        raise
    return True


def enqueue_import(settings: Settings, folder: str) -> str:
    """Send a CDD-CESM folder import to the ingest queue; returns the task id."""
    return _send(IMPORT_FOLDER_TASK, [folder], settings)


class CeleryWorkQueue:
    """The core's WorkQueue over the Celery queues of the broker `settings` name."""

    mode = "broker"

    def __init__(self, settings: Settings) -> None:
        if not settings.celery_broker_url:
            raise ValueError("CeleryWorkQueue: CELERY_BROKER_URL is not set (no broker to use)")
        self.settings = settings

    def enqueue_embedding(
        self, image_ids: Sequence[int] | None = None, force: bool = False
    ) -> DispatchSummary:
        return enqueue_pending(self.settings, image_ids=image_ids, force=force)

    def request_index(self, space_id: int, force: bool = False, verify: bool = False) -> bool:
        return request_index(self.settings, space_id, force=force, verify=verify)

    def enqueue_evaluation(
        self,
        label: str = "birads",
        trigger: str = "schedule",
        task_id: str | None = None,
        progress: Any = None,
    ) -> str:
        """To the `evaluate` queue; the task reports progress in its own state instead."""
        return _send(EVALUATE_TASK, [label, None, trigger], self.settings)

    def depths(self) -> dict[str, Any]:
        return queue_depths(celery_app, self.settings.celery_broker_url, QUEUES)


EMBED_INTO_SPACE_TASK = "mammosearch.embed_into_space"
TRAIN_MODEL_TASK = "mammosearch.train_model"


def enqueue_space_embedding(settings: Settings, backbone: str, image_ids: Sequence[int]) -> int:
    """Re-embedding into `backbone`'s space, in embed-batch-sized tasks; returns how many."""
    batch = max(1, settings.embed_batch_size)
    ids = list(image_ids)
    for start in range(0, len(ids), batch):
        _send(EMBED_INTO_SPACE_TASK, [backbone, ids[start : start + batch]], settings)
    return (len(ids) + batch - 1) // batch


def enqueue_training(settings: Settings, job_id: str) -> str:
    """A training job to the `train` queue; returns the task id."""
    return _send(TRAIN_MODEL_TASK, [job_id], settings)


def task_progress(settings: Settings, task_id: str) -> dict[str, Any] | None:
    """A task's state and last progress meta from the result backend; None without one."""
    if not settings.celery_result_backend:
        return None
    result = celery_app.AsyncResult(task_id)
    try:
        state, info = result.state, result.info
    except Exception as exc:  # noqa: BLE001 - an unreachable backend: say so, do not fail
        return {"state": "UNKNOWN", "error": f"result backend unreachable: {exc}"}
    if isinstance(info, BaseException):
        return {"state": state, "error": str(info)}
    return {"state": state, "meta": info if isinstance(info, dict) else {}}
