"""The reconciliation sweep: work the broker lost is found again in the database.

The database is the truth. An image still `pending`, or a vector still unindexed, some while
after it was written means its task was lost (broker restarted, message dropped, worker
killed before redelivery); the sweep hands that work out again. Handing it out twice is safe:
embedding skips images that already have a vector, and indexing skips ids already indexed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import Image, ImageEmbedding, ImageStatus
from mammosearch.db.session import session_scope
from mammosearch.work_queue import WorkQueue

DEFAULT_GRACE_S = 120.0
"""Work younger than this is assumed to be still on its way, not lost."""

MAX_IMAGES_PER_SWEEP = 100_000
"""One sweep re-enqueues at most this many images; the next sweep takes the rest."""


@dataclass(frozen=True)
class StaleWork:
    """Work left undone for longer than the grace period."""

    pending_image_ids: list[int]
    unindexed_space_ids: list[int]


@dataclass(frozen=True)
class ReconcileSummary:
    mode: str  # "broker" or "in-process"
    pending_images: int
    unindexed_spaces: list[int]
    detail: dict[str, Any] = field(default_factory=dict)


def find_stale_work(
    session: Session, grace_s: float = DEFAULT_GRACE_S, limit: int = MAX_IMAGES_PER_SWEEP
) -> StaleWork:
    """Pending images and spaces with unindexed vectors not touched for `grace_s` seconds."""
    cutoff = datetime.now(UTC) - timedelta(seconds=grace_s)
    pending_ids = session.scalars(
        select(Image.id)
        .where(Image.status == ImageStatus.PENDING, Image.updated_at <= cutoff)
        .order_by(Image.id)
        .limit(limit)
    ).all()
    space_ids = session.scalars(
        select(ImageEmbedding.space_id)
        .where(ImageEmbedding.indexed.is_(False), ImageEmbedding.created_at <= cutoff)
        .distinct()
        .order_by(ImageEmbedding.space_id)
    ).all()
    return StaleWork(pending_image_ids=list(pending_ids), unindexed_space_ids=list(space_ids))


def reconcile(
    settings: Settings, queue: WorkQueue, grace_s: float = DEFAULT_GRACE_S
) -> ReconcileSummary:
    """Hand stale work to `queue` again: embedding of old pending images, index runs of
    spaces with old unindexed vectors (in-process: the pipeline runs over them here)."""
    with session_scope(settings.database_url) as session:
        stale = find_stale_work(session, grace_s)
    enqueued = queue.enqueue_embedding(stale.pending_image_ids)
    index_requested = [
        space_id
        for space_id in stale.unindexed_space_ids
        if queue.request_index(space_id, force=True)
    ]
    return ReconcileSummary(
        mode=queue.mode,
        pending_images=len(stale.pending_image_ids),
        unindexed_spaces=stale.unindexed_space_ids,
        detail={
            "enqueued_images": enqueued.images,
            "embed_tasks": enqueued.tasks,
            "embedding": enqueued.detail,
            "index_requested": index_requested,
        },
    )
