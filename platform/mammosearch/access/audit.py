"""The access audit: who searched, and who viewed which patient's images and reports, when."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import Boolean, ColumnElement, Select, Table, func, insert, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

from mammosearch.db.models import AuditEvent, Image, Patient, utcnow

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
    "view_recent_cases",
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

SHOWN_IMAGE_KEYS = {
    "search": "result_image_ids",
    "view_image": "other_image_ids",
    "view_recent_cases": "shown_image_ids",
}
"""Page events and the detail key listing the images the page showed (its `image_id` is
shown too). A page is recorded once with what it showed; the thumbnails it then loads are not
logged again one by one (one user's six minutes of browsing wrote 495 thumbnail events)."""

PAGE_THUMBNAILS_WINDOW = timedelta(minutes=15)
"""How long after a page event its thumbnails count as recorded by it; later loads (a page
left open, then scrolled) are logged again, which keeps the log complete, never short."""


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


_INSERT_EVENT = insert(cast(Table, AuditEvent.__table__)).inline()
"""inline(): no RETURNING of the new id, which nothing reads (a fifth of the INSERT's CPU)."""


def shown_image_ids(action: str, image_id: int | None, detail: dict[str, Any]) -> set[int]:
    """The images a page event says its page showed (none for other actions)."""
    key = SHOWN_IMAGE_KEYS.get(action)
    if key is None:
        return set()
    listed = {int(value) for value in detail.get(key) or ()}
    return listed | ({image_id} if image_id is not None else set())


def record_thumbnail_view(
    session: Session,
    user: Actor | None,
    patient_id: int,
    image_id: int,
    detail: dict[str, Any] | None = None,
    remote_addr: str | None = None,
) -> bool:
    """Record a thumbnail shown, unless the user's latest page event (within
    PAGE_THUMBNAILS_WINDOW) already lists its image. True when an event was written."""
    if user is not None:
        latest = session.execute(
            select(AuditEvent.action, AuditEvent.image_id, AuditEvent.detail)
            .where(
                AuditEvent.user_id == user.id,
                AuditEvent.action.in_(SHOWN_IMAGE_KEYS),
                AuditEvent.created_at >= utcnow() - PAGE_THUMBNAILS_WINDOW,
            )
            .order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
            .limit(1)
        ).first()
        if latest is not None and image_id in shown_image_ids(*latest):
            return False
    record_access(
        session, user, "view_thumbnail", patient_id=patient_id, image_id=image_id,
        detail=detail, remote_addr=remote_addr,
    )  # fmt: skip
    return True


def record_rewindowed_file(
    session: Session,
    user: Actor | None,
    patient_id: int,
    image_id: int,
    detail: dict[str, Any] | None = None,
    remote_addr: str | None = None,
) -> bool:
    """Record an image file re-rendered at another window, unless the user's file view of
    that image (within PAGE_THUMBNAILS_WINDOW) is already recorded: dragging the window
    over one image asks for it many times, and it is one viewing. True when written."""
    if user is not None:
        seen = session.scalar(
            select(AuditEvent.id)
            .where(
                AuditEvent.user_id == user.id,
                AuditEvent.action == "view_image_file",
                AuditEvent.image_id == image_id,
                AuditEvent.created_at >= utcnow() - PAGE_THUMBNAILS_WINDOW,
            )
            .limit(1)
        )
        if seen is not None:
            return False
    record_access(
        session, user, "view_image_file", patient_id=patient_id, image_id=image_id,
        detail=detail, remote_addr=remote_addr,
    )  # fmt: skip
    return True


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


class PageShowed(ColumnElement[bool]):
    """True for a page event whose detail lists one of `image_ids` (a select of ids): the
    search, case or recent-cases page that showed a patient's image without logging each
    thumbnail. JSON arrays are read with each database's own function (compiled below)."""

    type = Boolean()
    inherit_cache = False  # holds a statement; not worth a cache key of its own

    def __init__(self, image_ids: Select[Any]) -> None:
        self.image_ids = image_ids


def _page_showed_sql(compiler: SQLCompiler, element: PageShowed, elements_of: str) -> str:
    """OR over the page actions: its action, and one of its listed ids in `image_ids`."""
    image_ids = compiler.process(element.image_ids, asfrom=False)
    table = compiler.preparer.format_table(AuditEvent.__table__)
    clauses = [
        f"({table}.action = '{action}' AND EXISTS (SELECT 1 FROM "
        f"{elements_of.format(detail=f'{table}.detail', key=key)} WHERE shown_id IN "
        f"({image_ids})))"
        for action, key in SHOWN_IMAGE_KEYS.items()
    ]
    return "(" + " OR ".join(clauses) + ")"


@compiles(PageShowed, "postgresql")
def _page_showed_postgresql(element: PageShowed, compiler: SQLCompiler, **kw: Any) -> str:
    return _page_showed_sql(
        compiler, element,
        "(SELECT CAST(value AS INTEGER) AS shown_id FROM json_array_elements_text(CASE WHEN "
        "json_typeof({detail} -> '{key}') = 'array' THEN {detail} -> '{key}' END)) AS shown",
    )  # fmt: skip


@compiles(PageShowed, "sqlite")
def _page_showed_sqlite(element: PageShowed, compiler: SQLCompiler, **kw: Any) -> str:
    return _page_showed_sql(
        compiler, element, "(SELECT value AS shown_id FROM json_each({detail}, '$.{key}'))"
    )


_Statement = TypeVar("_Statement", bound="Select[*tuple[Any, ...]]")


@dataclass(frozen=True)
class AuditFilter:
    """What the audit page and its CSV export select: any of the patient's own ID (the
    source's, e.g. the sheet's Patient_ID), the user, the action and a range of UTC days."""

    patient: str | None = None  # Patient.source_patient_id, not the row id
    username: str | None = None
    action: str | None = None
    since: date | None = None  # first day included
    until: date | None = None  # last day included

    def where(self, statement: _Statement) -> _Statement:
        if self.patient:
            patient_ids = select(Patient.id).where(Patient.source_patient_id == self.patient)
            statement = statement.where(
                or_(
                    AuditEvent.patient_id.in_(patient_ids),
                    PageShowed(select(Image.id).where(Image.patient_id.in_(patient_ids))),
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


def _rows_statement(selection: AuditFilter) -> Select[AuditEvent, str | None]:
    statement = select(AuditEvent, Patient.source_patient_id).outerjoin(
        Patient, Patient.id == AuditEvent.patient_id
    )
    return selection.where(statement).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())


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
