"""Claims on images being embedded: who holds which, under a lease kept in the database.

A process claims a batch before embedding it: its rows go from `pending` to `claimed`,
`updated_at` is the lease's last renewal and `error` names the holder (no failure is
current while a claim holds; the column is reset when the image moves on). A heartbeat
renews the lease while the batch runs. A claim whose lease ran out belongs to a process
that died: the reconcile sweep hands it out again, and a restarted worker gives up the
claims of its previous run at once. Neither waits for the broker's visibility timeout, and
a late redelivery of the original task finds nothing left to claim.

Holders are named `<node>#<run>/<pid>`: the node (a Celery node name, or the host), a run
id drawn once per process tree (prefork children inherit it) and the process id. A holder
on this host (the embedded default: `ingest`, `embed`, `serve`) whose process is gone is
known dead at once, without waiting for its lease: `release_abandoned` gives its claims back.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, case, literal, select, update
from sqlalchemy.orm import Session

from mammosearch.db.models import Image, ImageStatus, utcnow
from mammosearch.db.session import session_scope

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 30.0
"""A claim not renewed for this long is taken to be dead (MAMMOSEARCH_CLAIM_LEASE_S)."""

CLAIM_NOTE = "claimed by "
RUN_ID = uuid.uuid4().hex[:12]
"""Drawn at import, before a prefork pool forks: one per worker start, shared by its children."""


def holder_name(node: str | None = None) -> str:
    """This process's holder name: `<node>#<run>/<pid>` (node defaults to the host name)."""
    return f"{node or socket.gethostname()}#{RUN_ID}/{os.getpid()}"


def _note(holder: str) -> str:
    return f"{CLAIM_NOTE}{holder}"


def _cutoff(lease_s: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=lease_s)


def claim(
    session: Session,
    image_ids: Sequence[int],
    holder: str,
    lease_s: float = DEFAULT_LEASE_S,
    max_attempts: int = 3,
) -> list[int]:
    """Claim what is free among `image_ids`, counting one attempt each; commits.

    Free: pending, claimed under an expired lease, or already claimed by `holder` (its own
    retry). An image past `max_attempts` is failed instead: a batch that kills its process
    every time (a poison image, an out-of-memory) gives up rather than loop. Returns the
    ids now held by `holder`, ascending.
    """
    if not image_ids:
        return []
    ids = sorted(set(image_ids))
    claimable = (Image.status == ImageStatus.PENDING) | (
        (Image.status == ImageStatus.CLAIMED)
        & ((Image.updated_at < _cutoff(lease_s)) | (Image.error == _note(holder)))
    )
    exhausted = Image.attempts + 1 > max_attempts
    rows = session.execute(
        update(Image)
        .where(Image.id.in_(ids), claimable)
        .values(
            attempts=Image.attempts + 1,
            status=case(
                (exhausted, literal(ImageStatus.FAILED.value)),
                else_=literal(ImageStatus.CLAIMED.value),
            ),
            error=case(
                (
                    exhausted,
                    literal(
                        f"gave up after {max_attempts} attempts (the process embedding it died or "
                        "its task was lost each time; see the worker log)"
                    ),
                ),
                else_=literal(_note(holder)),
            ),
            updated_at=utcnow(),
        )
        .returning(Image.id, Image.status)
        .execution_options(synchronize_session=False)
    ).all()
    session.commit()
    return sorted(row.id for row in rows if row.status == ImageStatus.CLAIMED)


def renew(session: Session, image_ids: Sequence[int], holder: str) -> int:
    """Extend `holder`'s leases on `image_ids` to now; commits. Returns how many it holds."""
    if not image_ids:
        return 0
    result = session.execute(
        update(Image)
        .where(
            Image.id.in_(list(image_ids)),
            Image.status == ImageStatus.CLAIMED,
            Image.error == _note(holder),
        )
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    # an UPDATE's result is a CursorResult; Session.execute types it as Result
    return cast("CursorResult[Any]", result).rowcount


def release(session: Session, image_ids: Sequence[int], holder: str) -> list[int]:
    """Give `holder`'s claims on `image_ids` back (pending again); commits. Returns them."""
    return _release(
        session,
        (Image.id.in_(list(image_ids)), Image.error == _note(holder)),
        "released by its holder",
    )


def release_expired(session: Session, lease_s: float = DEFAULT_LEASE_S) -> list[int]:
    """Claims whose lease ran out go back to pending (their holder died); commits."""
    return _release(session, (Image.updated_at < _cutoff(lease_s),), "lease expired")


def _dead_here(note: str) -> bool:
    """Whether a claim note names a holder on this host whose process no longer runs (or is
    this very process, under an earlier run id: the pid was reused)."""
    holder = note.removeprefix(CLAIM_NOTE)
    node, _, rest = holder.partition("#")
    run, _, pid_text = rest.partition("/")
    if node != socket.gethostname() or not pid_text.isdigit():
        return False  # another host's, or a Celery node's: its lease decides
    pid = int(pid_text)
    if pid == os.getpid():
        return run != RUN_ID
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def abandoned(session: Session, lease_s: float = DEFAULT_LEASE_S) -> list[int]:
    """Claimed images nobody holds: the lease ran out, or the holder's process on this host
    is gone (a killed `ingest` or `embed`). What `status` and `index verify` count."""
    rows = session.execute(
        select(Image.id, Image.error, Image.updated_at).where(Image.status == ImageStatus.CLAIMED)
    ).all()
    cutoff = _cutoff(lease_s)
    return sorted(
        row.id for row in rows if _as_utc(row.updated_at) < cutoff or _dead_here(row.error or "")
    )


def release_abandoned(session: Session, lease_s: float = DEFAULT_LEASE_S) -> list[int]:
    """Give back every claim nobody holds (`abandoned`); commits. What the embedded default
    (no sweep) runs at the start of `ingest`, `embed` and `serve`, and the sweep too."""
    released = release_expired(session, lease_s)
    notes = session.scalars(
        select(Image.error).where(Image.status == ImageStatus.CLAIMED).distinct()
    ).all()
    dead = [note for note in notes if note and _dead_here(note)]
    if dead:
        released += _release(session, (Image.error.in_(dead),), "its holder process is gone")
    return sorted(released)


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite: naive UTC


def release_previous_runs(session: Session, holder: str) -> list[int]:
    """Claims of `holder`'s node from an earlier run (its processes are gone); commits.

    What a restarted worker calls first, so it does not wait for the leases to run out.
    """
    node = holder.split("#", 1)[0]
    run = holder.split("#", 1)[1].split("/", 1)[0] if "#" in holder else ""
    return _release(
        session,
        (
            Image.error.startswith(_note(f"{node}#"), autoescape=True),
            ~Image.error.startswith(_note(f"{node}#{run}/"), autoescape=True),
        ),
        "its worker restarted",
    )


def _release(session: Session, conditions: tuple[ColumnElement[bool], ...], why: str) -> list[int]:
    ids = session.scalars(
        update(Image)
        .where(Image.status == ImageStatus.CLAIMED, *conditions)
        .values(
            status=ImageStatus.PENDING,
            error=literal(f"{why}, handed out again (was ") + Image.error + literal(")"),
            updated_at=utcnow(),
        )
        .returning(Image.id)
        .execution_options(synchronize_session=False)
    ).all()
    session.commit()
    if ids:
        log.warning("released %d claimed images (%s): %s", len(ids), why, sorted(ids)[:20])
    return sorted(ids)


def held_by(session: Session, image_ids: Sequence[int], holder: str) -> list[int]:
    """Which of `image_ids` `holder` still holds."""
    return list(
        session.scalars(
            select(Image.id).where(
                Image.id.in_(list(image_ids)),
                Image.status == ImageStatus.CLAIMED,
                Image.error == _note(holder),
            )
        )
    )


@contextmanager
def holding(
    database_url: str, image_ids: Sequence[int], holder: str, lease_s: float = DEFAULT_LEASE_S
) -> Iterator[None]:
    """Renew `holder`'s leases every `lease_s`/3 while the block runs (its own session).

    On an exception the claims still held are released, so the retry or the next sweep
    need not wait for the lease.
    """
    stop = threading.Event()

    def _heartbeat() -> None:
        while not stop.wait(lease_s / 3):
            try:
                with session_scope(database_url) as session:
                    renew(session, image_ids, holder)
            except Exception:  # a database hiccup: try again at the next beat
                log.warning("renewing the claims of %s failed", holder, exc_info=True)

    thread = threading.Thread(target=_heartbeat, name=f"lease {holder}", daemon=True)
    thread.start()
    try:
        yield
    except BaseException:
        stop.set()
        thread.join()
        try:
            with session_scope(database_url) as session:
                release(session, image_ids, holder)
        except Exception:
            log.warning("releasing the claims of %s failed; their lease will", holder)
        raise
    finally:
        stop.set()
        thread.join()
