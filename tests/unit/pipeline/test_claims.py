"""Claims: one holder per image, a lease that a live holder renews and a dead one loses."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import Image, ImageStatus, utcnow
from mammosearch.pipeline import claims
from tests.factories import make_bare_images, make_patient


def _pending(session: Session, count: int) -> list[int]:
    patient = make_patient(session, f"c{time.monotonic_ns()}", commit=False)
    return make_bare_images(session, patient, count)


def _age_claims(session: Session, ids: list[int], seconds: float) -> None:
    """Pretend the claims' last renewal was `seconds` ago."""
    session.execute(
        update(Image)
        .where(Image.id.in_(ids))
        .values(updated_at=utcnow() - timedelta(seconds=seconds))
    )
    session.commit()


def _statuses(session: Session, ids: list[int]) -> dict[int, str]:
    session.expire_all()
    return dict(session.execute(select(Image.id, Image.status).where(Image.id.in_(ids))).all())


def test_a_live_claim_has_one_holder_and_says_who(session: Session) -> None:
    ids = _pending(session, 3)
    assert claims.claim(session, ids, "node-a#r1/1") == ids
    assert claims.claim(session, ids, "node-b#r2/2") == []  # a second delivery gets nothing
    session.expire_all()
    image = session.get(Image, ids[0])
    assert image.status == ImageStatus.CLAIMED and image.error == "claimed by node-a#r1/1"
    assert image.attempts == 1


def test_an_expired_lease_is_released_by_the_sweep_and_claimable_again(session: Session) -> None:
    ids = _pending(session, 2)
    claims.claim(session, ids, "node-a#r1/1", lease_s=30)
    assert claims.release_expired(session, lease_s=30) == []  # still fresh
    _age_claims(session, ids, 31)
    assert claims.release_expired(session, lease_s=30) == ids
    assert set(_statuses(session, ids).values()) == {ImageStatus.PENDING}
    assert "lease expired" in session.get(Image, ids[0]).error
    assert claims.claim(session, ids, "node-b#r2/2") == ids


def test_an_expired_claim_can_be_taken_over_directly(session: Session) -> None:
    ids = _pending(session, 1)
    claims.claim(session, ids, "node-a#r1/1", lease_s=30)
    _age_claims(session, ids, 31)
    assert claims.claim(session, ids, "node-b#r2/2", lease_s=30) == ids


def test_renewing_keeps_a_claim_alive_past_its_first_lease(session: Session) -> None:
    ids = _pending(session, 2)
    claims.claim(session, ids, "node-a#r1/1", lease_s=30)
    _age_claims(session, ids, 29)
    assert claims.renew(session, ids, "node-a#r1/1") == 2
    assert claims.renew(session, ids, "node-b#r2/2") == 0  # only the holder renews
    assert claims.release_expired(session, lease_s=30) == []


def test_the_heartbeat_renews_while_the_block_runs(settings: Settings, session: Session) -> None:
    ids = _pending(session, 1)
    claims.claim(session, ids, "node-a#r1/1", lease_s=0.6)
    with claims.holding(settings.database_url, ids, "node-a#r1/1", lease_s=0.6):
        time.sleep(1.5)  # more than two leases: only the heartbeat keeps it alive
        assert claims.release_expired(session, lease_s=0.6) == []
    time.sleep(0.8)
    assert claims.release_expired(session, lease_s=0.6) == ids


def test_a_failing_block_gives_its_claims_back(settings: Settings, session: Session) -> None:
    ids = _pending(session, 2)
    claims.claim(session, ids, "node-a#r1/1")
    try:
        with claims.holding(settings.database_url, ids, "node-a#r1/1"):
            raise RuntimeError("backbone crashed")
    except RuntimeError:
        pass
    assert set(_statuses(session, ids).values()) == {ImageStatus.PENDING}


def test_a_restarted_node_releases_its_previous_run_at_once(session: Session) -> None:
    old, mine, other = _pending(session, 1), _pending(session, 1), _pending(session, 1)
    claims.claim(session, old, "celery@host#run1/10")
    claims.claim(session, mine, "celery@host#run2/11")
    claims.claim(session, other, "celery@elsewhere#run1/10")
    assert claims.release_previous_runs(session, "celery@host#run2/99") == old
    assert _statuses(session, mine + other) == {
        mine[0]: ImageStatus.CLAIMED,
        other[0]: ImageStatus.CLAIMED,
    }


def test_the_holders_own_retry_reclaims_and_counts_until_it_gives_up(session: Session) -> None:
    ids = _pending(session, 1)
    for _ in range(3):
        assert claims.claim(session, ids, "node-a#r1/1", max_attempts=3) == ids
    assert claims.claim(session, ids, "node-a#r1/1", max_attempts=3) == []
    assert _statuses(session, ids) == {ids[0]: ImageStatus.FAILED}


def test_a_claim_whose_holder_on_this_host_is_gone_is_abandoned_at_once(session: Session) -> None:
    """Not after the lease: the holder's pid on this host no longer runs. A live holder's
    claim (this process), another host's, and a Celery node's wait for their lease."""
    import socket

    gone_pid = _a_free_pid()
    host = socket.gethostname()
    dead, alive, elsewhere, node = (_pending(session, 1) for _ in range(4))
    claims.claim(session, dead, f"{host}#r0/{gone_pid}")
    claims.claim(session, alive, claims.holder_name())
    claims.claim(session, elsewhere, f"other-host#r1/{gone_pid}")
    claims.claim(session, node, f"celery@{host}#r2/{gone_pid}")
    assert claims.abandoned(session) == dead
    assert claims.release_abandoned(session) == dead
    assert "its holder process is gone" in session.get(Image, dead[0]).error
    _age_claims(session, elsewhere + node, claims.DEFAULT_LEASE_S + 1)
    assert claims.release_abandoned(session) == sorted(elsewhere + node)
    assert _statuses(session, alive) == {alive[0]: ImageStatus.CLAIMED}


def _a_free_pid() -> int:
    """The pid of a child that has exited and been reaped (free until the kernel reuses it)."""
    import subprocess

    child = subprocess.Popen(["true"])  # noqa: S607
    child.wait()
    return child.pid
