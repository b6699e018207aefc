"""The reconciliation sweep: work the broker lost is found again in the database.

The database is the truth. A claim whose lease ran out (its worker died mid-batch), an image
still `pending`, or a vector still unindexed, some while after it was written, means its
task was lost (broker restarted, message dropped, worker killed); the sweep hands that work
out again, without waiting for the broker's visibility timeout. Handing it out twice is
safe: a claim admits one holder, embedding skips images that already have a vector, and
indexing skips ids already indexed. Every sweep also asks for each space's indexes to be
verified against the database and repaired (on the index writer, under its lock).
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
from mammosearch.jobs.work_queue import WorkQueue
from mammosearch.pipeline.interrupted import release_interrupted_work

DEFAULT_GRACE_S = 15.0
"""Work younger than this is assumed to be still on its way, not lost. Short: the queue's
marks already keep work on its way from being enqueued twice, so this only bounds how soon
work lost with the broker's data (Redis restarted without persistence) is sent again."""

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
    expired_claims: list[int] = field(default_factory=list)
    verified_spaces: list[int] = field(default_factory=list)


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


def indexed_space_ids(session: Session) -> list[int]:
    """Spaces that have vectors, hence indexes to keep true to the database."""
    return list(
        session.scalars(
            select(ImageEmbedding.space_id).distinct().order_by(ImageEmbedding.space_id)
        )
    )


def reconcile(
    settings: Settings,
    queue: WorkQueue,
    grace_s: float = DEFAULT_GRACE_S,
    verify: bool = True,
) -> ReconcileSummary:
    """Hand stale work to `queue` again: the images of expired claims and old pending ones
    to embed, index runs of spaces with old unindexed vectors, and (`verify`) a verify and
    repair of every space's indexes (in-process: the pipeline runs over them here)."""
    expired = release_interrupted_work(settings).released_claims
    with session_scope(settings.database_url) as session:
        stale = find_stale_work(session, grace_s)
        spaces = indexed_space_ids(session) if verify else []
    released = queue.enqueue_embedding(expired, force=True) if expired else None
    fresh_pending = [i for i in stale.pending_image_ids if i not in set(expired)]
    enqueued = queue.enqueue_embedding(fresh_pending)
    index_requested = [
        space_id
        for space_id in sorted(set(stale.unindexed_space_ids) | set(spaces))
        if queue.request_index(space_id, force=True, verify=space_id in spaces)
    ]
    return ReconcileSummary(
        mode=queue.mode,
        pending_images=len(stale.pending_image_ids),
        unindexed_spaces=stale.unindexed_space_ids,
        detail={
            "enqueued_images": enqueued.images + (released.images if released else 0),
            "embed_tasks": enqueued.tasks + (released.tasks if released else 0),
            "embedding": enqueued.detail,
            "released_claims": len(expired),
            "index_requested": index_requested,
        },
        expired_claims=expired,
        verified_spaces=spaces,
    )
