"""The ingestion page (admin): images per status, the lag, failures, the work queues, the
active embedding space and its indexes, and the last import. Routes on the admin blueprint."""

from __future__ import annotations

from typing import Any

from flask import render_template

from mammosearch.ingest.import_record import last_import
from mammosearch.jobs.status import collect_status, index_sizes
from mammosearch.jobs.work_queue import QUEUES
from web.blueprints.admin import bp
from web.configuration import settings, work_queue
from web.db import get_session
from web.public_names import public_json

STATUS_LABELS = {
    "pending": "Waiting to be embedded",
    "claimed": "Being embedded now",
    "embedded": "Embedded, waiting for the index",
    "indexed": "Searchable (indexed)",
    "failed": "Failed",
}
QUEUE_LABELS = {
    "ingest": "Ingest (register new files)",
    "embed": "Embed (compute vectors)",
    "index": "Index (append to FAISS)",
    "evaluate": "Evaluate (retrieval quality)",
    "train": "Train (learned embeddings)",
}


def queue_rows(depths: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """One row per work queue, with its waiting tasks or None, and why none is known."""
    reason: str | None
    if depths.get("mode") != "broker":
        reason = "no broker configured: work runs at once in the process that asks for it"
    else:
        reason = depths.get("error")
    waiting = depths.get("queues") or {}
    rows = [
        {"queue": queue, "label": QUEUE_LABELS.get(queue, queue), "waiting": waiting.get(queue)}
        for queue in (*QUEUES, *sorted(set(waiting) - set(QUEUES)))
    ]
    return rows, reason


@bp.get("/ingestion")
def ingestion() -> str:
    session = get_session()
    current = settings()
    status = public_json(  # no server paths
        collect_status(session, work_queue(), current.claim_lease_s)
    )
    queues, queue_reason = queue_rows(status.get("tasks") or {})
    return render_template(
        "admin/ingestion.html",
        images=status["images"],
        status_labels=STATUS_LABELS,
        lag=status["lag"],
        failures=status["failures"],
        abandoned_claims=status["abandoned_claims"],
        queue_mode=(status.get("tasks") or {}).get("mode"),
        queues=queues,
        queue_reason=queue_reason,
        spaces=public_json(index_sizes(session, current)),
        last_import=public_json(last_import(session)),
    )
