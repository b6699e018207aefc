"""The admin's models page: spaces and their progress, registered models, training jobs."""

from __future__ import annotations

import re
import time

from flask.testing import FlaskClient

from mammosearch.train.jobs import list_jobs
from tests.unit.web_support import make_image, make_patient


def _csrf(client: FlaskClient) -> str:
    page = client.get("/admin/models").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_models_page_lists_spaces_models_and_a_training_form(admin_client: FlaskClient) -> None:
    page = admin_client.get("/admin/models")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Embedding spaces" in text and "Registered models" in text
    assert "Start training" in text and "No training job yet" in text


def test_radiologists_cannot_see_or_start_training(radiologist_client: FlaskClient) -> None:
    assert radiologist_client.get("/admin/models").status_code in (302, 403)
    answer = radiologist_client.post("/admin/models/train", data={"name": "x"})
    assert answer.status_code in (302, 400, 403)


def test_a_bad_training_request_is_refused_with_the_reason(admin_client: FlaskClient, app) -> None:  # type: ignore[no-untyped-def]
    token = _csrf(admin_client)
    answer = admin_client.post(
        "/admin/models/train",
        data={"name": "../evil", "labels": "birads", "epochs": "500", "csrf_token": token},
        follow_redirects=True,
    )
    text = answer.get_data(as_text=True)
    assert "Training not started" in text and "epochs: between 1 and 200" in text
    assert list_jobs(app.extensions["mammosearch_settings"]) == []


def test_a_training_job_records_its_failure_where_the_page_shows_it(  # type: ignore[no-untyped-def]
    admin_client: FlaskClient, app, db
) -> None:
    """An archive without labels: the job fails, and its record says why."""
    settings = app.extensions["mammosearch_settings"]
    make_image(db, settings, make_patient(db), birads=None)
    token = _csrf(admin_client)
    answer = admin_client.post(
        "/admin/models/train",
        data={"name": "first-model", "labels": "birads", "csrf_token": token},
    )
    assert answer.status_code == 302
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        jobs = list_jobs(settings)
        if jobs and jobs[0]["state"] == "failed":
            break
        time.sleep(0.2)
    assert jobs[0]["state"] == "failed" and "birads" in jobs[0]["error"]
    status = admin_client.get(f"/admin/models/jobs/{jobs[0]['id']}").get_json()
    assert status["name"] == "first-model"
    assert admin_client.get("/admin/models/jobs/not-a-job").status_code == 404
