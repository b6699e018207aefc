"""Work a killed process left in the embedded default (no broker, no sweep) is finished by
the next `ingest`, `embed` or `serve`, with production defaults: no shortened lease.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from sqlalchemy import select, update

from mammosearch.cli.serve_commands import _start_embedded_sweep
from mammosearch.config import Settings
from mammosearch.db.models import Image, ImageStatus
from mammosearch.db.session import make_session_factory
from mammosearch.pipeline.interrupted import STRAY_TEMP_MIN_AGE_S
from tests.unit.index.test_index_damage import _cli, archive, copy  # noqa: F401 - fixtures
from tests.unit.web_support import app_config
from web import create_app

DEADLINE_S = 30.0


def _claimed_by_a_killed_process(settings: Settings, count: int) -> list[int]:
    """`count` images claimed (lease fresh) by a process then killed with SIGKILL."""
    session = make_session_factory(settings.database_url)()
    ids = list(session.scalars(select(Image.id).order_by(Image.id).limit(count)))
    session.execute(update(Image).where(Image.id.in_(ids)).values(status=ImageStatus.PENDING))
    session.commit()
    session.close()
    script = textwrap.dedent(
        f"""
        import time
        from mammosearch.pipeline import claims
        from mammosearch.db.session import session_scope
        with session_scope({settings.database_url!r}) as session:
            print(claims.claim(session, {ids!r}, claims.holder_name()), flush=True)
        time.sleep(120)
        """
    )
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    holder = subprocess.Popen(
        [sys.executable, "-c", script], env=environment, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == str(ids)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    return ids


def _statuses(settings: Settings, ids: list[int]) -> set[str]:
    session = make_session_factory(settings.database_url)()
    try:
        return {str(s) for s in session.scalars(select(Image.status).where(Image.id.in_(ids)))}
    finally:
        session.close()


def test_a_killed_runs_claims_are_counted_then_released_by_the_next_embed(copy: Settings) -> None:  # noqa: F811
    """status and verify count claims nobody holds; embed releases them at once (the holder's
    pid is gone), not after the lease, and finishes them."""
    ids = _claimed_by_a_killed_process(copy, 2)
    assert _statuses(copy, ids) == {"claimed"}
    status = _cli("status")
    assert "claimed but held by nobody: 2" in status.output, status.output
    verified = _cli("index", "verify")
    assert verified.exit_code == 1 and "claimed but held by nobody: 2" in verified.output
    embedded = _cli("embed", "--no-progress")
    assert embedded.exit_code == 0, embedded.output
    assert _statuses(copy, ids) == {"indexed"}
    assert "held by nobody" not in _cli("status").output
    assert _cli("index", "verify").exit_code == 0


def test_the_embedded_server_releases_a_killed_runs_claims(copy: Settings) -> None:  # noqa: F811
    """`serve` without a broker sweeps on its own: claims of a dead process are finished."""
    ids = _claimed_by_a_killed_process(copy, 2)
    _start_embedded_sweep(create_app(app_config(copy)))
    deadline = time.monotonic() + DEADLINE_S
    while _statuses(copy, ids) != {"indexed"} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _statuses(copy, ids) == {"indexed"}


def test_a_killed_writers_temp_files_are_collected_once_old(copy: Settings) -> None:  # noqa: F811
    """Old `*.tmp` files in images/ and indexes/ go; one a writer may still be filling stays."""
    old_image_temp = copy.images_dir / ".P1_0.png.k1ll3d.tmp"
    old_index_temp = next(copy.index_dir.glob("space-*/cosine")) / ".manifest.json.ab12.tmp"
    fresh_temp = copy.images_dir / ".P1_1.png.wr1t1ng.tmp"
    long_ago = time.time() - STRAY_TEMP_MIN_AGE_S - 60
    for path in (old_image_temp, old_index_temp, fresh_temp):
        path.write_bytes(b"partial")
    for path in (old_image_temp, old_index_temp):
        os.utime(path, (long_ago, long_ago))
    assert _cli("embed", "--no-progress").exit_code == 0
    assert not old_image_temp.exists() and not old_index_temp.exists()
    assert fresh_temp.exists()


def test_a_claim_of_a_live_process_is_left_alone(copy: Settings) -> None:  # noqa: F811
    """This process's own claim (alive, lease fresh) is not taken for abandoned."""
    from mammosearch.pipeline import claims

    session = make_session_factory(copy.database_url)()
    image_id = session.scalars(select(Image.id).order_by(Image.id)).first()
    session.execute(update(Image).where(Image.id == image_id).values(status=ImageStatus.PENDING))
    session.commit()
    assert claims.claim(session, [image_id], claims.holder_name()) == [image_id]
    assert claims.abandoned(session) == []
    assert claims.release_abandoned(session) == []
    session.close()
