"""The Celery tasks: each a thin wrapper over the core, safe to run twice.

Routes (workers/app.py): ingest <- import_folder, scan_watch_dirs, follow_orthanc, reconcile;
embed <- embed_batch; index <- index_space (run that queue with concurrency 1; the Redis lock
keyed by space id holds even when it is not); evaluate <- evaluate_active_space; train <-
train_model, auto_train (beat), switch_space.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import redis
from celery import shared_task
from sqlalchemy.exc import OperationalError

from mammosearch.config import get_settings
from mammosearch.db.models import EmbeddingSpace
from mammosearch.db.session import make_session_factory, session_scope
from mammosearch.embed import serving
from mammosearch.index import IndexBusy
from mammosearch.pipeline import claims, embed_stage, index_stage
from workers.enqueue import (
    CeleryWorkQueue,
    forget_enqueued,
    index_request_key,
    redis_url,
    request_index,
)
from workers.locks import KEY_PREFIX, LockBusy, index_lock_name, redis_client, work_lock

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (OperationalError, redis.exceptions.ConnectionError)
RETRY_TRANSIENT: dict[str, Any] = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": True,  # 1 s, 2 s, 4 s, ... with jitter
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 8,
}
INDEX_LOCK_WAIT_S = 10.0
INDEX_LOCK_RETRY_S = 5
INDEX_LOCK_MAX_RETRIES = 120


def _lock_name(kind: str, identity: str) -> str:
    return f"{KEY_PREFIX}:lock:{kind}:{identity}"


@shared_task(bind=True, name="mammosearch.embed_batch", **RETRY_TRANSIENT)
def embed_batch(self: Any, image_ids: list[int]) -> dict[str, Any]:
    """Claim a batch of pending images (a lease renewed while it runs), embed them, then ask
    for an index run of their space."""
    settings = get_settings()
    lease = embed_stage.Lease(
        settings.database_url, claims.holder_name(self.request.hostname), settings.claim_lease_s
    )
    forgotten: list[bool] = []

    def claimed_now(claimed: list[int]) -> None:
        forget_enqueued(settings, image_ids)  # from here the claim, not the mark, says who works
        forgotten.append(True)
        self.update_state(state="PROGRESS", meta={"stage": "embedding", "images": len(claimed)})

    try:
        embedder = serving.serving_embedder(settings)
        with session_scope(settings.database_url) as session:
            space = serving.open_serving_space(session, settings)
            space_id = space.id
            result = embed_stage.embed_in_batches(
                session, image_ids, embedder, space, len(image_ids),
                lease=lease, on_claimed=claimed_now,
            )  # fmt: skip
    finally:
        if not forgotten:  # failed before the claim: the sweep may hand them out again
            forget_enqueued(settings, image_ids)
    # Also when nothing was claimed: a redelivered batch may have embedded before its worker
    # died and never asked for the index run.
    request_index(settings, space_id)
    return {
        "space_id": space_id,
        "embedded": len(result.embedded),
        "skipped": len(result.unclaimed) + len(result.skipped),
        "failed": result.failed,
    }


@shared_task(bind=True, name="mammosearch.index_space", **RETRY_TRANSIENT)
def index_space(self: Any, space_id: int, verify: bool = False) -> dict[str, Any]:
    """Append the space's embedded-but-unindexed vectors to its indexes; one writer at a time.

    `verify` (the sweep's runs): then compare the indexes with the database and repair.
    """
    settings = get_settings()
    client = redis_client(redis_url(settings))
    client.delete(index_request_key(space_id))  # embeds committed from now on ask for a new run
    try:
        with work_lock(client, index_lock_name(space_id), wait_s=INDEX_LOCK_WAIT_S):
            with session_scope(settings.database_url) as session:
                space = session.get(EmbeddingSpace, space_id)
                if space is None:
                    log.warning("index_space: no embedding space %s", space_id)
                    return {"space_id": space_id, "indexed": 0}
                self.update_state(state="PROGRESS", meta={"stage": "indexing"})
                # Image status follows the serving space only (a re-embedding space does not).
                serving_now = serving.serving_space(session, settings)
                follows = serving_now is None or serving_now.id == space.id
                indexed = index_stage.index_space(
                    session, settings, space, update_status=follows, lock_wait_s=INDEX_LOCK_WAIT_S
                )
                if verify:
                    report = index_stage.verify_index(
                        session, settings, space, repair=True, lock_wait_s=INDEX_LOCK_WAIT_S
                    )
                    return {
                        "space_id": space_id,
                        "indexed": indexed,
                        "verify_clean": report["clean"],
                        "repaired_rows": report.get("repaired_rows", 0),
                    }
    except (LockBusy, IndexBusy) as exc:
        raise self.retry(
            exc=exc, countdown=INDEX_LOCK_RETRY_S, max_retries=INDEX_LOCK_MAX_RETRIES
        ) from exc
    return {"space_id": space_id, "indexed": indexed}


@shared_task(bind=True, name="mammosearch.import_folder", **RETRY_TRANSIENT)
def import_folder(self: Any, folder: str) -> dict[str, Any]:
    """Import a CDD-CESM folder (sheet + images), then enqueue its images' embedding."""
    from mammosearch.ingest.cdd_cesm import import_cdd_cesm

    settings = get_settings()
    client = redis_client(redis_url(settings))
    try:
        with work_lock(client, _lock_name("import", str(Path(folder).resolve())), ttl_s=60):
            self.update_state(state="PROGRESS", meta={"stage": "importing", "folder": folder})
            with session_scope(settings.database_url) as session:
                summary = import_cdd_cesm(
                    session, Path(folder), settings, settings.birads_rule, progress=False
                )
    except LockBusy as exc:  # the same folder is being imported: try again after it
        raise self.retry(exc=exc, countdown=30, max_retries=20) from exc
    dispatched = CeleryWorkQueue(settings).enqueue_embedding()
    return {"import": summary.counts(), "enqueued_images": dispatched.images}


@shared_task(name="mammosearch.scan_watch_dirs", **RETRY_TRANSIENT)
def scan_watch_dirs() -> dict[str, Any]:
    """Pick up new files in every MAMMOSEARCH_WATCH_DIRS folder (a busy folder is skipped)."""
    from mammosearch.ingest.watch import scan_directory

    settings = get_settings()
    client = redis_client(redis_url(settings))
    scanned: dict[str, Any] = {}
    for directory in settings.watch_dirs:
        try:
            with work_lock(client, _lock_name("watch", str(directory.resolve())), ttl_s=60):
                scanned[str(directory)] = scan_directory(settings, directory).counts()
        except LockBusy:
            scanned[str(directory)] = "busy: another worker is scanning it"
    if any(isinstance(c, dict) and c.get("registered") for c in scanned.values()):
        CeleryWorkQueue(settings).enqueue_embedding()
    return scanned


@shared_task(name="mammosearch.follow_orthanc", **RETRY_TRANSIENT)
def follow_orthanc() -> dict[str, Any]:
    """Read Orthanc's change feed from the stored cursor; enqueue the new images."""
    from mammosearch.ingest.orthanc import follow_orthanc as follow

    settings = get_settings()
    if not settings.orthanc_url:
        return {"created": 0, "reason": "MAMMOSEARCH_ORTHANC_URL is not set"}
    client = redis_client(redis_url(settings))
    try:
        with work_lock(client, _lock_name("orthanc", settings.orthanc_url), ttl_s=60):
            session_factory = make_session_factory(settings.database_url)
            created = follow(session_factory, settings.orthanc_url, settings)
    except LockBusy:
        return {"created": 0, "reason": "busy: another worker follows this Orthanc"}
    if created:
        CeleryWorkQueue(settings).enqueue_embedding()
    return {"created": created}


@shared_task(name="mammosearch.reconcile", **RETRY_TRANSIENT)
def reconcile() -> dict[str, Any]:
    """The periodic sweep: re-enqueue work the broker lost (see mammosearch.jobs.reconcile)."""
    from mammosearch.jobs.reconcile import reconcile as sweep

    settings = get_settings()
    summary = sweep(settings, CeleryWorkQueue(settings))
    return {
        "pending_images": summary.pending_images,
        "unindexed_spaces": summary.unindexed_spaces,
        "released_claims": len(summary.expired_claims),
        "verified_spaces": summary.verified_spaces,
    }


@shared_task(bind=True, name="mammosearch.evaluate_active_space", **RETRY_TRANSIENT)
def evaluate_active_space(
    self: Any,
    label: str = "birads",
    metric: str | None = None,
    trigger: str = "schedule",
    unmeasured_only: bool = False,
) -> dict[str, Any]:
    """Re-evaluation of every active space (mammosearch.evaluate does the work): runs stored
    with `trigger` ("schedule" from beat, "web" from the evaluations page), regressions
    flagged, progress in the task state; `unmeasured_only`: the spaces whose neighbour vote
    was never measured."""
    from mammosearch.evaluate.scheduled import run_scheduled_evaluations

    settings = get_settings()
    client = redis_client(redis_url(settings))
    try:
        with work_lock(client, _lock_name("evaluate", "active-spaces"), ttl_s=60):
            run_ids = run_scheduled_evaluations(
                settings,
                lambda meta: self.update_state(state="PROGRESS", meta=meta),
                label=label,
                metrics=[metric] if metric else None,
                task_id=self.request.id,
                trigger=trigger,
                unmeasured_only=unmeasured_only,
            )
    except LockBusy:
        return {"run_ids": [], "reason": "busy: a scheduled evaluation is running"}
    return {"run_ids": run_ids}


@shared_task(bind=True, name="mammosearch.embed_into_space", **RETRY_TRANSIENT)
def embed_into_space(self: Any, backbone: str, image_ids: list[int]) -> dict[str, Any]:
    """Re-embedding: vectors of `image_ids` in `backbone`'s space, then an index run for it."""
    settings = get_settings()
    embedder = serving.embedder_for(settings, backbone)
    with session_scope(settings.database_url) as session:
        from mammosearch.embed.spaces import get_or_create_space

        space = get_or_create_space(session, embedder)
        session.commit()
        space_id = space.id
        result = embed_stage.embed_in_batches(
            session, image_ids, embedder, space, len(image_ids), update_status=False
        )
    request_index(settings, space_id)
    return {"space_id": space_id, "embedded": len(result.embedded), "failed": result.failed}


@shared_task(bind=True, name="mammosearch.train_model")
def train_model(self: Any, job_id: str) -> dict[str, Any]:
    """A training job (its record under DATA_DIR/models/jobs); registers, never activates."""
    from mammosearch.train.jobs import run_job

    return run_job(get_settings(), job_id)


@shared_task(name="mammosearch.auto_train")
def auto_train() -> dict[str, Any]:
    """Beat's periodic check (mammosearch.train.auto): train, judge and switch when due.

    Low CPU priority; one run at a time under the core's lock in the data directory, so a
    second delivery while one trains returns at once with `busy`.
    """
    from mammosearch.train import auto

    auto.lower_priority()
    record = auto.run_auto_train(get_settings())
    return {"state": record.get("state"), "summary": auto.summary_line(record)}


@shared_task(name="mammosearch.switch_space")
def switch_space(backbone: str | None = None) -> dict[str, Any]:
    """An admin's switch from the Models page: re-embed and activate `backbone`, or roll back
    to the space that served before (None)."""
    from mammosearch.train import auto

    settings = get_settings()
    record = (
        auto.rollback(settings) if backbone is None else auto.activate_model(settings, backbone)
    )
    return {"state": record.get("state"), "summary": auto.summary_line(record)}


@shared_task(name="mammosearch.quantize_space")
def quantize_space(backbone: str, precision: str) -> dict[str, Any]:
    """`models quantize` from the Models page: build and check a base space's variant; the
    record (mammosearch.pipeline.quantize_jobs) says whether it was kept."""
    from mammosearch.pipeline.quantize_jobs import run_quantize

    record = run_quantize(get_settings(), backbone, precision)
    return {"state": record.get("state"), "kept": record.get("kept")}
