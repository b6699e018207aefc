"""driver_rows: the hot statements read through the driver's cursor give what SQLAlchemy's
execute gives, value for value and name for name, on SQLite and PostgreSQL; a connection lost
mid-read is SQLAlchemy's error, and the pool replaces it."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from mammosearch.access.users import _TOKEN_WITH_USER, create_api_token, token_sha256
from mammosearch.config import Settings
from mammosearch.db.driver_rows import driver_rows
from mammosearch.db.models import ApiToken, Report, utcnow
from mammosearch.db.session import make_session_factory
from mammosearch.search.service import REPORT_EXCERPT_CHARS, _hits_statement
from tests.factories import make_image, make_patient, make_user


def _archive(session: Session, settings: Settings) -> list[int]:
    ids = []
    for offset, (name, birads) in enumerate((("P1", 2), ("P2", 5))):
        patient = make_patient(session, name)
        ids += [
            make_image(session, settings, patient, seed=2 * offset + seed, birads=birads).id
            for seed in range(2)
        ]
        for version in ("first", "latest"):  # the excerpt is the latest's first characters
            session.add(
                Report(
                    patient_id=patient.id,
                    source_file=f"{name}.docx",
                    sha256=version[0] * 64,
                    text=f"{version} report of {name}: " + "finding " * 200,
                )
            )
    session.commit()
    return ids


def test_rows_equal_sqlalchemys_by_position_and_by_name(
    session: Session, settings: Settings
) -> None:
    ids = _archive(session, settings)
    user = make_user(session, "reader", "radiologist")
    token = create_api_token(session, user, name="PACS bridge")
    api_token = session.query(ApiToken).one()
    api_token.expires_at = utcnow() + timedelta(days=3)
    api_token.last_used_at = utcnow()
    session.commit()
    connection = session.connection()
    cases = [
        (_hits_statement(connection.dialect.name), {"ids": [*ids, 999_999]}),
        (_TOKEN_WITH_USER, {"token_sha256": token_sha256(token)}),
    ]
    for statement, params in cases:
        expected = connection.execute(statement, params).all()
        rows = driver_rows(connection, statement, params)
        assert expected, "the statement must read rows for the comparison to mean anything"
        assert sorted(map(tuple, rows), key=repr) == sorted(map(tuple, expected), key=repr)
        names = list(connection.execute(statement, params).keys())
        for row, same in zip(sorted(rows, key=repr), sorted(expected, key=repr), strict=True):
            for position, name in enumerate(names):
                assert row[position] == same[position]
                if name.isidentifier() and names.count(name) == 1:
                    assert getattr(row, name) == getattr(same, name), name
    excerpts = {
        row.source_patient_id: row.report_excerpt for row in driver_rows(connection, *cases[0])
    }
    assert excerpts["P2"].startswith("latest report of P2: finding")
    assert len(excerpts["P2"]) == REPORT_EXCERPT_CHARS  # the statement's constants bound
    found = driver_rows(connection, _TOKEN_WITH_USER, {"token_sha256": token_sha256(token)})[0]
    assert (found.name, found.username, found.role) == ("PACS bridge", "reader", "radiologist")
    assert found.expires_at > found.last_used_at  # timestamps as datetimes, comparable
    assert driver_rows(connection, _TOKEN_WITH_USER, {"token_sha256": "0" * 64}) == []


@pytest.mark.postgres
def test_a_connection_lost_mid_read_is_sqlalchemys_error_and_is_replaced(pg_url: str) -> None:
    factory = make_session_factory(pg_url)
    session = factory()
    connection = session.connection()
    backend = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with make_session_factory(pg_url, autocommit=True)() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        gone = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
        deadline = time.monotonic() + 30
        while admin.scalar(gone, {"pid": backend}) and time.monotonic() < deadline:
            time.sleep(0.05)  # the server ends the backend asynchronously
    statement = _hits_statement("postgresql")
    with pytest.raises(DBAPIError) as raised:
        driver_rows(connection, statement, {"ids": [1]})
    assert raised.value.connection_invalidated
    assert "images" in str(raised.value)  # names the statement
    session.close()
    with factory() as fresh:  # the pool hands out a live connection again
        fresh_connection = fresh.connection()
        assert fresh_connection.execute(text("SELECT pg_backend_pid()")).scalar_one() != backend
        assert driver_rows(fresh_connection, statement, {"ids": [1]}) == []
