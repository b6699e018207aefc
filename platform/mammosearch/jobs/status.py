"""What the system holds and how far the pipeline has got; shared by the CLI and the web."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace, Image, ImageStatus
from mammosearch.jobs.work_queue import WorkQueue

RECENT_FAILURES = 10


def image_status_counts(session: Session) -> dict[str, int]:
    """Images in total and per lifecycle status (every status named, zero when none)."""
    counts = {status.value: 0 for status in ImageStatus}
    for status, count in session.execute(select(Image.status, func.count()).group_by(Image.status)):
        counts[str(status)] = count
    return {"total": sum(counts.values()), **counts}


def ingestion_lag(session: Session) -> dict[str, Any]:
    """How long the oldest pending image has waited: the ingestion lag (None when none wait)."""
    oldest = session.execute(
        select(Image.id, Image.created_at)
        .where(Image.status == ImageStatus.PENDING)
        .order_by(Image.created_at, Image.id)
        .limit(1)
    ).first()
    if oldest is None:
        return {"oldest_pending_image_id": None, "oldest_pending_age_s": None}
    created_at = oldest.created_at
    if created_at.tzinfo is None:  # SQLite returns naive datetimes (stored as UTC)
        created_at = created_at.replace(tzinfo=UTC)
    age_s = (datetime.now(UTC) - created_at).total_seconds()
    return {"oldest_pending_image_id": oldest.id, "oldest_pending_age_s": round(age_s, 1)}


def recent_failures(session: Session, limit: int = RECENT_FAILURES) -> list[dict[str, Any]]:
    """The last failed images, newest first, with the reason each failed."""
    rows = session.execute(
        select(Image.id, Image.source_file_name, Image.error, Image.attempts, Image.updated_at)
        .where(Image.status == ImageStatus.FAILED)
        .order_by(Image.updated_at.desc(), Image.id.desc())
        .limit(limit)
    ).all()
    return [
        {
            "image_id": row.id,
            "file": row.source_file_name,
            "error": row.error,
            "attempts": row.attempts,
            "failed_at": row.updated_at.isoformat() if row.updated_at else None,
        }
        for row in rows
    ]


def collect_status(
    session: Session, queue: WorkQueue | None = None, lease_s: float | None = None
) -> dict[str, Any]:
    """`{"images": {...}, "lag": {...}, "failures": [...], "tasks": {...}}`; extend per section.

    images: counts per status; lag: age of the oldest pending image; failures: the last
    failed images with reasons; abandoned_claims: claimed images nobody holds (a killed
    process's; `lease_s`: the claim lease setting); tasks: waiting tasks per queue, as
    `queue.depths()` reports them (only when the caller passes the queue its entry point chose).
    """
    from mammosearch.pipeline import claims

    report: dict[str, Any] = {
        "images": image_status_counts(session),
        "lag": ingestion_lag(session),
        "failures": recent_failures(session),
        "abandoned_claims": len(
            claims.abandoned(session, claims.DEFAULT_LEASE_S if lease_s is None else lease_s)
        ),
    }
    if queue is not None:
        report["tasks"] = queue.depths()
    return report


def index_sizes(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """Each active space with its indexes: vectors, bytes on disk and FAISS factories, read
    from the manifests alone (no segment is loaded, so a status page stays cheap)."""
    from mammosearch.index.manifest import MANIFEST_NAME, IndexCorruptError, read_manifest

    spaces = session.scalars(
        select(EmbeddingSpace).where(EmbeddingSpace.active.is_(True)).order_by(EmbeddingSpace.id)
    )
    described = []
    for space in spaces:
        indexes = []
        for metric in settings.index_metrics:
            root = settings.layout.index_root(space.id, metric)  # where open_index keeps it
            entry: dict[str, Any] = {"metric": metric, "configured_factory": settings.index_factory}
            try:
                manifest = read_manifest(root / MANIFEST_NAME)
            except (IndexCorruptError, OSError) as error:
                entry["error"] = str(error)
                indexes.append(entry)
                continue
            segments = (manifest or {}).get("segments", [])
            entry.update(
                built=manifest is not None,
                vectors=sum(s["count"] - len(s.get("deleted", ())) for s in segments),
                bytes=sum(int(s.get("bytes", 0)) for s in segments),
                segments=len(segments),
                factories=sorted({str(s.get("factory", "Flat")) for s in segments}),
            )
            indexes.append(entry)
        described.append({**space.describe(), "created_at": space.created_at, "indexes": indexes})
    return described
