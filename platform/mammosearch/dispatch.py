"""Moving registered images forward: onto the Celery queues, or through the pipeline right here.

With a broker configured (CELERY_BROKER_URL) the work is enqueued for the workers; without one
(the embedded default) the same pipeline runs in the calling process. Callers do not care which:
they call `dispatch_pending(settings)` after registering images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mammosearch.config import Settings, get_settings
from mammosearch.db.models import Image, ImageStatus

QUEUES = ("ingest", "embed", "index", "evaluate")
"""The work queues, in the order the data flows; workers/app.py routes every task to one."""

@dataclass(frozen=True)
class DispatchSummary:
    """What one dispatch did: enqueued tasks (broker) or ran the pipeline (in-process)."""

    mode: str  # "broker" or "in-process"
    images: int  # images enqueued, or images the in-process pipeline handled
    tasks: int = 0  # tasks sent to the broker
    detail: dict[str, Any] = field(default_factory=dict)


def dispatch_pending(
    settings: Settings | None = None, image_ids: Sequence[int] | None = None
) -> DispatchSummary:
    """Enqueue embedding of pending images (or of `image_ids`), or run the pipeline here."""
    settings = settings or get_settings()
    if settings.tasks_in_process:
        from mammosearch import pipeline

        summary = pipeline.process_pending(settings)
        return DispatchSummary(
            mode="in-process", images=summary.embedded + summary.failed, detail=summary.to_dict()
        )
    # The core never imports Celery; the workers package does, so only load it when enqueuing.
    from workers.enqueue import enqueue_pending

    return enqueue_pending(settings, image_ids=image_ids)


def claim_for_embedding(
    session: Session, image_ids: Sequence[int], max_attempts: int | None = None
) -> list[int]:
    """Count one more attempt for each still-pending image; fail those past `max_attempts`.

    Run (and committed) before the embedding starts, so a batch that kills its worker every
    time (a poison image, an out-of-memory) gives up after `max_attempts` deliveries
    (default: pipeline.MAX_ATTEMPTS) instead of being redelivered forever. Returns the ids
    still worth embedding.
    """
    if not image_ids:
        return []
    from mammosearch.pipeline import MAX_ATTEMPTS

    max_attempts = max_attempts or MAX_ATTEMPTS
    pending = Image.status == ImageStatus.PENDING
    session.execute(
        update(Image)
        .where(Image.id.in_(list(image_ids)), pending)
        .values(attempts=Image.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Image)
        .where(Image.id.in_(list(image_ids)), pending, Image.attempts > max_attempts)
        .values(
            status=ImageStatus.FAILED,
            error=f"gave up after {max_attempts} attempts (the worker died or the task was "
            "lost each time; see the worker log)",
            updated_at=datetime.now(UTC),
        )
        .execution_options(synchronize_session=False)
    )
    return list(
        session.scalars(
            select(Image.id).where(Image.id.in_(list(image_ids)), pending).order_by(Image.id)
        )
    )
