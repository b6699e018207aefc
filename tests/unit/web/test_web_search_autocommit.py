"""On PostgreSQL an API search runs its statements outside a transaction (no BEGIN and
COMMIT round trips); each of its writes, the audit event first, still lands."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from mammosearch.access.users import create_api_token
from mammosearch.config import Settings
from mammosearch.db.models import AuditEvent
from mammosearch.db.session import make_session_factory
from mammosearch.pipeline.process import process_pending
from tests.factories import make_image, make_patient, make_user
from tests.unit.web_support import app_config, make_settings
from web import create_app
from web.db import get_session

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_archive(pg_url: str, tmp_path: Path) -> tuple[Settings, str]:
    """Four indexed images of two patients on the real PostgreSQL, and an API token."""
    settings = make_settings(tmp_path / "data", pg_url)
    session = make_session_factory(pg_url)()
    for name, birads in (("A", 2), ("B", 4)):
        patient = make_patient(session, name)
        for seed in range(2):
            make_image(session, settings, patient, seed=seed + 2 * birads, birads=birads)
    token = create_api_token(session, make_user(session, "robot", "radiologist"))
    session.commit()
    session.close()
    assert process_pending(settings).indexed == 4
    return settings, token


def _autocommit(path: str, method: str, app) -> bool:  # type: ignore[no-untyped-def]
    with app.test_request_context(path, method=method):
        return bool(get_session().connection().connection.dbapi_connection.autocommit)


def test_only_the_api_search_session_commits_statement_by_statement(
    pg_archive: tuple[Settings, str],
) -> None:
    settings, token = pg_archive
    app = create_app(app_config(settings))
    assert _autocommit("/api/v1/search", "POST", app)
    assert not _autocommit("/api/v1/status", "GET", app)  # everything else: one transaction
    assert not _autocommit("/admin/users", "GET", app)

    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    session = make_session_factory(settings.database_url)()
    searches = select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "search")
    before = session.scalar(searches)
    response = client.post("/api/v1/search", json={"image_id": 1, "k": 3}, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert len(response.get_json()["results"]) == 3
    missing = client.post("/api/v1/search", json={"image_id": 999, "k": 3}, headers=headers)
    assert missing.status_code == 404
    session.rollback()  # a new snapshot
    assert session.scalar(searches) == before + 1  # the search is on record, the 404 is not
    event = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert event is not None and event.image_id == 1 and event.username == "robot"
    session.close()
