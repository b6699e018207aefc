"""The access audit: who searched, and who viewed which patient's images and reports, when."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from mammosearch.db.models import AuditEvent, Patient, utcnow

ACTIONS = (
    "login",
    "login_failed",
    "login_rate_limited",
    "logout",
    "change_password",
    "search",
    "view_image",
    "view_image_file",
    "view_thumbnail",
    "view_report",
    "create_user",
    "disable_user",
    "enable_user",
    "reset_password",
    "create_token",
    "revoke_token",
    "acknowledge_regression",
    "export_audit",
    "start_training",
    "check_auto_training",
    "activate_space",
    "rollback_space",
    "delete_space",
    "delete_model",
)
"""The actions recorded; one place, so the audit page can offer them as a filter."""


class Actor(Protocol):
    """Who did it: a users row, or a signed-in user that carries its id and name."""

    @property
    def id(self) -> int: ...

    @property
    def username(self) -> str: ...


def record_access(
    session: Session,
    user: Actor | None,
    action: str,
    patient_id: int | None = None,
    image_id: int | None = None,
    detail: dict[str, Any] | None = None,
    remote_addr: str | None = None,
) -> None:
    """Insert one audit event in the session's transaction (the caller commits, with the
    work it records). One prepared INSERT with the values as parameters, not a unit-of-work
    flush nor values baked into the statement (whose cache key walks the whole detail):
    every search writes one, and nothing reads the event back in the same request. Run on
    the session's connection, past the ORM's execution layer (a tenth of a search's CPU)."""
    session.connection().execute(
        _INSERT_EVENT,
        {
            "user_id": user.id if user is not None else None,
            "username": user.username if user is not None else None,
            "action": action,
            "patient_id": patient_id,
            "image_id": image_id,
            "detail": detail or {},
            "remote_addr": remote_addr,
            "created_at": utcnow(),
        },
    )


_INSERT_EVENT = insert(AuditEvent.__table__).inline()
"""inline(): no RETURNING of the new id, which nothing reads (a fifth of the INSERT's CPU)."""


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


@dataclass(frozen=True)
class AuditFilter:
    """What the audit page and its CSV export select: any of the patient's own ID (the
    source's, e.g. the sheet's Patient_ID), the user, the action and a range of UTC days."""

    patient: str | None = None  # Patient.source_patient_id, not the row id
    username: str | None = None
    action: str | None = None
    since: date | None = None  # first day included
    until: date | None = None  # last day included

    def where(self, statement):  # type: ignore[no-untyped-def]
        if self.patient:
            statement = statement.where(
                AuditEvent.patient_id.in_(
                    select(Patient.id).where(Patient.source_patient_id == self.patient)
                )
            )
        if self.username:
            statement = statement.where(AuditEvent.username == self.username)
        if self.action:
            statement = statement.where(AuditEvent.action == self.action)
        if self.since is not None:
            statement = statement.where(AuditEvent.created_at >= _midnight(self.since))
        if self.until is not None:
            statement = statement.where(
                AuditEvent.created_at < _midnight(self.until + timedelta(days=1))
            )
        return statement


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)  # naive UTC, as created_at is stored


@dataclass(frozen=True)
class AuditRow:
    """One event with the patient's own ID (what an auditor is asked about)."""

    event: AuditEvent
    source_patient_id: str | None


def _rows_statement(selection: AuditFilter):  # type: ignore[no-untyped-def]
    statement = select(AuditEvent, Patient.source_patient_id).outerjoin(
        Patient, Patient.id == AuditEvent.patient_id
    )
    return selection.where(statement).order_by(
        AuditEvent.created_at.desc(), AuditEvent.id.desc()
    )


def find_events(
    session: Session, selection: AuditFilter, limit: int = 100, offset: int = 0
) -> list[AuditRow]:
    """Newest first, those `selection` picks, each with the patient's own ID."""
    rows = session.execute(_rows_statement(selection).limit(limit).offset(offset))
    return [AuditRow(event, patient) for event, patient in rows]


def count_found(session: Session, selection: AuditFilter) -> int:
    return int(session.scalar(selection.where(select(func.count(AuditEvent.id)))) or 0)


def iter_found(session: Session, selection: AuditFilter, batch: int = 1000) -> Iterator[AuditRow]:
    """Every selected event, newest first, read `batch` at a time (an export of any size)."""
    offset = 0
    while True:
        rows = find_events(session, selection, limit=batch, offset=offset)
        yield from rows
        if len(rows) < batch:
            return
        offset += batch


def known_actions(session: Session) -> list[str]:
    """ACTIONS, then any other action the log holds (recorded by code that named its own)."""
    recorded = set(session.scalars(select(AuditEvent.action).distinct()))
    return [*ACTIONS, *sorted(recorded - set(ACTIONS))]
