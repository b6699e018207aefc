"""Operations endpoints: liveness, readiness with its checks, Prometheus metrics."""

from __future__ import annotations

import re

from flask.testing import FlaskClient

from tests.conftest import REDIS_TEST_URL
from tests.factories import make_image, make_patient
from tests.unit.web_support import app_config
from web import create_app


def test_healthz_needs_nothing(web_settings) -> None:  # type: ignore[no-untyped-def]
    """Liveness answers even when the database is unreachable."""
    broken = web_settings.with_overrides(database_url="postgresql+psycopg://postgres@127.0.0.1:1/x")
    client = create_app(app_config(broken)).test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_is_200_when_database_answers(client: FlaskClient) -> None:
    """Database SELECT 1 and a readable (or not yet created) index directory."""
    response = client.get("/readyz")
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["checks"]["database"]["ok"] and body["checks"]["index_dir"]["ok"]
    assert "broker" not in body["checks"]


def test_readyz_is_503_with_the_failing_check(web_settings) -> None:  # type: ignore[no-untyped-def]
    """An unreachable database or broker: 503 and the check that failed says why."""
    broken = web_settings.with_overrides(
        database_url="postgresql+psycopg://postgres@127.0.0.1:1/none",
        celery_broker_url="redis://127.0.0.1:1/0",
    )
    response = create_app(app_config(broken)).test_client().get("/readyz")
    body = response.get_json()
    assert response.status_code == 503
    database = body["checks"]["database"]
    assert not database["ok"] and "database:" in database["error"]
    assert not body["checks"]["broker"]["ok"]


def test_readyz_pings_the_real_redis_broker(web_settings) -> None:  # type: ignore[no-untyped-def]
    """With CELERY_BROKER_URL on the running Redis the broker check passes."""
    app = create_app(app_config(web_settings.with_overrides(celery_broker_url=REDIS_TEST_URL)))
    body = app.test_client().get("/readyz").get_json()
    assert body["checks"]["broker"] == {"ok": True}


def test_metrics_are_open_and_hold_no_patient_ids(client: FlaskClient, db, web_settings) -> None:  # type: ignore[no-untyped-def]
    """Images per status, lag, request counts by endpoint name; paths with ids never appear."""
    make_image(db, web_settings, make_patient(db, "SECRET-PATIENT-77"), seed=1)
    client.get("/cases/12345")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'mammosearch_images{status="pending"} 1.0' in text
    assert "mammosearch_ingestion_lag_seconds" in text
    assert 'mammosearch_http_requests_total{endpoint="cases.case_page"' in text
    assert "SECRET-PATIENT-77" not in text
    # The id may only match inside a sample's value (a timestamp such as 1.79660481234e+09),
    # never in a label: labels name endpoints, not paths.
    labels = " ".join(re.findall(r"\{[^}]*\}", text))
    assert "12345" not in labels and "/cases/" not in labels


def test_without_a_configured_key_the_session_key_is_random_stored_and_shared(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from web.configuration import stored_secret_key

    first = stored_secret_key(tmp_path / "data")
    assert len(first) == 64 and first == stored_secret_key(tmp_path / "data")
    assert (tmp_path / "data" / "secret_key").stat().st_mode & 0o077 == 0
    assert stored_secret_key(tmp_path / "other") != first
