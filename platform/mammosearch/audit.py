"""The access audit: who searched, and who viewed which patient's images and reports, when."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mammosearch.db.models import AuditEvent, User

ACTIONS = (
    "login",
    "login_failed",
    "logout",
    "search",
    "view_image",
    "view_image_file",
    "view_report",
    "create_user",
    "create_token",
    "acknowledge_regression",
)
"""The actions recorded; one place, so the audit page can offer them as a filter."""


def record_access(
    session: Session,
    user: User | None,
    action: str,
    patient_id: int | None = None,
    image_id: int | None = None,
    detail: dict[str, Any] | None = None,
    remote_addr: str | None = None,
) -> AuditEvent:
    """Add one audit event (the caller commits, with the work it records)."""
    event = AuditEvent(
        user_id=user.id if user is not None else None,
        username=user.username if user is not None else None,
        action=action,
        patient_id=patient_id,
        image_id=image_id,
        detail=detail or {},
        remote_addr=remote_addr,
    )
    session.add(event)
    return event


def _filtered(statement, username: str | None, action: str | None, patient_id: int | None):  # type: ignore[no-untyped-def]
    if username:
        statement = statement.where(AuditEvent.username == username)
    if action:
        statement = statement.where(AuditEvent.action == action)
    if patient_id is not None:
        statement = statement.where(AuditEvent.patient_id == patient_id)
    return statement


def list_events(
    session: Session,
    limit: int = 100,
    offset: int = 0,
    username: str | None = None,
    action: str | None = None,
    patient_id: int | None = None,
) -> list[AuditEvent]:
    """Newest first, optionally only one user's, one action's or one patient's."""
    statement = _filtered(select(AuditEvent), username, action, patient_id)
    statement = statement.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
    return list(session.scalars(statement.limit(limit).offset(offset)))


def count_events(
    session: Session,
    username: str | None = None,
    action: str | None = None,
    patient_id: int | None = None,
) -> int:
    statement = _filtered(select(func.count(AuditEvent.id)), username, action, patient_id)
    return int(session.scalar(statement) or 0)
