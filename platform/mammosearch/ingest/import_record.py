"""The last import's summary, kept in the database so the ingestion page can show it.

Stored as a row of source_cursors (a name -> JSON store) under LAST_IMPORT: one row,
replaced by each import, so no table of its own is needed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from mammosearch.db.models import SourceCursor, utcnow

LAST_IMPORT = "ingest:last-import"


def record_import(session: Session, source: str, summary: dict[str, Any]) -> None:
    """Remember `summary` (counts and a few lines, no server paths) as the last import."""
    row = session.get(SourceCursor, LAST_IMPORT)
    value = {"source": source, "finished_at": utcnow().isoformat(), **summary}
    if row is None:
        session.add(SourceCursor(name=LAST_IMPORT, value=value))
    else:
        row.value = value
    session.commit()


def last_import(session: Session) -> dict[str, Any] | None:
    row = session.get(SourceCursor, LAST_IMPORT)
    return dict(row.value) if row is not None else None
