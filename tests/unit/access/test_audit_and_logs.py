"""Every disclosure audited, no patient id or server detail in logs and public answers, and
private files on disk (issue 12, audit and logs)."""

from __future__ import annotations

import logging
import runpy
import stat
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from mammosearch.cli.serve_commands import ACCESS_LOG_FORMAT
from mammosearch.config import Settings
from mammosearch.db.models import AuditEvent
from mammosearch.db.session import get_engine
from mammosearch.ingest.storage import check_image, store_image
from mammosearch.logs import QueryStringFilter
from tests.factories import make_image, make_patient, synthetic_image_bytes
from tests.unit.web_support import app_config
from web import create_app

ROOT = Path(__file__).resolve().parents[3]


def test_a_thumbnail_of_a_patients_case_is_an_audit_event(
    radiologist_client: FlaskClient, db: Session, web_settings: Settings
) -> None:
    image = make_image(db, web_settings, make_patient(db, "P77"), seed=3)
    assert radiologist_client.get(f"/cases/{image.id}/thumbnail").status_code == 200
    (event,) = db.scalars(select(AuditEvent).where(AuditEvent.action == "view_thumbnail"))
    assert (event.username, event.patient_id, event.image_id) == ("rad", image.patient_id, image.id)


def test_serve_logs_request_paths_without_query_strings_as_the_deployment_does() -> None:
    deployed = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))
    assert ACCESS_LOG_FORMAT == deployed["access_log_format"]
    assert "%(U)s" in ACCESS_LOG_FORMAT and "%(r)s" not in ACCESS_LOG_FORMAT
    record = logging.LogRecord(
        "werkzeug",
        logging.INFO,
        __file__,
        1,
        '127.0.0.1 - - "%s" %s %s',
        ("GET /search?patient_id=P12&k=5 HTTP/1.1", 200, "-"),
        None,
    )
    QueryStringFilter().filter(record)
    assert record.getMessage() == '127.0.0.1 - - "GET /search HTTP/1.1" 200 -'


def test_the_deployed_access_log_line_is_gunicorns_own() -> None:
    """The logger computes only the atoms the deployed format prints: the same line."""
    from datetime import timedelta
    from types import SimpleNamespace

    from gunicorn.glogging import Logger, SafeAtoms

    deployed = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))
    logger = object.__new__(deployed["MammosearchLogger"])  # no set-up: atoms() only
    log_format = deployed["access_log_format"]
    logger.cfg = SimpleNamespace(access_log_format=log_format)
    environ = {
        "REMOTE_ADDR": "10.0.0.7",
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/search",
        "QUERY_STRING": "patient_id=P1",
        "RAW_URI": "/api/v1/search?patient_id=P1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_AUTHORIZATION": "Bearer secret",
    }
    request = SimpleNamespace(headers=[("AUTHORIZATION", "Bearer secret")])
    for sent in (1234, 0, None):
        response = SimpleNamespace(status="200 OK", sent=sent, headers=[("Content-Type", "x")])
        took = timedelta(seconds=1, microseconds=234567)
        ours = log_format % SafeAtoms(logger.atoms(response, request, environ, took))
        theirs = log_format % SafeAtoms(Logger.atoms(logger, response, request, environ, took))
        assert ours == theirs
    assert ours == '10.0.0.7 "POST /api/v1/search" 200 - 1234ms'
    logger.cfg = SimpleNamespace(access_log_format='%(h)s "%(r)s" %({user-agent}i)s')
    assert "r" in logger.atoms(response, request, environ, took)  # another format: all atoms


def test_readyz_names_the_failed_check_without_host_or_port(
    web_settings: Settings, client: FlaskClient
) -> None:
    broken = web_settings.with_overrides(
        database_url="postgresql+psycopg://nobody@127.0.0.1:1/nowhere"
    )
    app = create_app(app_config(broken))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    error = response.get_json()["checks"]["database"]["error"]
    assert error == "database: not reachable (the server log has why)"
    assert "127.0.0.1" not in response.get_data(as_text=True)


def test_the_sqlite_database_and_the_image_store_are_private_to_their_owner(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'mammosearch.sqlite3'}"
    engine = get_engine(url)
    with engine.connect():
        pass
    engine.dispose()
    assert stat.S_IMODE((tmp_path / "new" / "mammosearch.sqlite3").stat().st_mode) == 0o600
    images_dir = tmp_path / "data" / "images"
    stored = store_image(images_dir, check_image(synthetic_image_bytes(1), "x.png"))
    for folder in (images_dir, stored.parent.parent, stored.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600


def test_dicom_registration_logs_no_file_name_at_info(
    tmp_path: Path,
    caplog,
    app: Flask,  # type: ignore[no-untyped-def]
) -> None:
    from mammosearch.db.models import Base
    from mammosearch.ingest.dicom_register import register_dicom
    from tests.dicom_samples import dicom_bytes, make_dataset, ramp

    engine = create_engine(f"sqlite:///{tmp_path / 'd.sqlite3'}")
    Base.metadata.create_all(engine)
    settings = Settings(data_dir=tmp_path / "data", database_url=str(engine.url))
    with Session(engine) as session, caplog.at_level(logging.INFO):
        register_dicom(
            session, dicom_bytes(make_dataset(ramp())), "/inbox/jane-doe/1.dcm", settings
        )
    infos = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert infos and not any("jane-doe" in line for line in infos)
