"""The JSON API: images, status, evaluations, errors, and its OpenAPI description."""

from __future__ import annotations

from flask.testing import FlaskClient

from mammosearch.access.users import create_api_token
from mammosearch.db.models import EvaluationRun
from tests.factories import add_polygon, make_image, make_patient, make_user
from web.api.openapi import openapi_document


def _bearer(db, username: str, role: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    token = create_api_token(db, make_user(db, username, role))
    db.commit()
    return {"Authorization": f"Bearer {token}"}


def test_openapi_document_is_valid_openapi_3_1(client: FlaskClient, db) -> None:  # type: ignore[no-untyped-def]
    """openapi-spec-validator accepts the served document, which names every API route."""
    from openapi_spec_validator import validate

    validate(openapi_document())
    served = client.get("/api/v1/openapi.json", headers=_bearer(db, "reader", "radiologist"))
    assert served.status_code == 200
    paths = set(served.get_json()["paths"])
    assert {
        "/search",
        "/images/{image_id}",
        "/images/{image_id}/file",
        "/status",
        "/evaluations",
    } <= paths


def test_image_metadata_and_file(client: FlaskClient, db, web_settings) -> None:  # type: ignore[no-untyped-def]
    """One case's labels with the source patient id and outlines; the pixels behind a token."""
    headers = _bearer(db, "rad", "radiologist")
    patient = make_patient(db, "P42")
    image = make_image(db, web_settings, patient, seed=1, birads=4, pathology="Malignant")
    add_polygon(db, image, [1, 2, 3], [4, 5, 6])
    body = client.get(f"/api/v1/images/{image.id}", headers=headers).get_json()
    assert body["patient_id"] == "P42" and body["birads"] == 4
    assert body["segmentations"][0]["all_points_x"] == [1, 2, 3]
    pixels = client.get(f"/api/v1/images/{image.id}/file", headers=headers)
    assert pixels.status_code == 200 and pixels.data.startswith(b"\x89PNG")
    assert client.get(f"/api/v1/images/{image.id}/file").status_code == 401


def test_api_errors_are_json(client: FlaskClient, db) -> None:  # type: ignore[no-untyped-def]
    """404 for an unknown image, 403 for the wrong role, 404 for an unknown path: all JSON."""
    headers = _bearer(db, "rad", "radiologist")
    missing = client.get("/api/v1/images/999", headers=headers)
    assert missing.status_code == 404
    assert missing.get_json() == {"error": "image 999: not in the archive"}
    forbidden = client.get("/api/v1/status", headers=headers)
    assert forbidden.status_code == 403 and "radiologist" in forbidden.get_json()["error"]
    assert client.get("/api/v1/nothing", headers=headers).get_json()["error"]


def test_status_counts_images(client: FlaskClient, db, web_settings) -> None:  # type: ignore[no-untyped-def]
    """GET /api/v1/status is collect_status as JSON."""
    headers = _bearer(db, "boss", "admin")
    make_image(db, web_settings, make_patient(db), seed=2)
    body = client.get("/api/v1/status", headers=headers).get_json()
    assert body["images"]["pending"] == 1


def test_evaluations_newest_first(client: FlaskClient, db) -> None:  # type: ignore[no-untyped-def]
    """EvaluationRun rows with their metrics, newest first; one run by id; unknown id 404."""
    headers = _bearer(db, "boss", "admin")
    for value in (0.1, 0.2):
        db.add(EvaluationRun(protocol="p", label="birads", metric="l2", metrics={"map": value}))
        db.commit()
    runs = client.get("/api/v1/evaluations", headers=headers).get_json()["evaluations"]
    assert [run["metrics"]["map"] for run in runs] == [0.2, 0.1]
    one = client.get(f"/api/v1/evaluations/{runs[0]['id']}", headers=headers).get_json()
    assert one["metrics"] == {"map": 0.2}
    assert client.get("/api/v1/evaluations/999", headers=headers).status_code == 404


def test_search_request_errors_name_the_input(client: FlaskClient, db) -> None:  # type: ignore[no-untyped-def]
    """Bad k, metric, side or missing input: 400 with the parameter named."""
    headers = _bearer(db, "rad", "radiologist")
    cases = [
        ({"image_id": 1, "k": "many"}, "k: 'many' is not a whole number"),
        ({"image_id": 1, "metric": "hamming"}, "metric: 'hamming' is not indexed"),
        ({"image_id": 1, "side": "X"}, "side:"),
        ({"image_id": 1, "birads_min": 5, "birads_max": 2}, "birads_min 5 is above birads_max 2"),
        ({"image_id": 1, "ranking": "best"}, "ranking: 'best' is not one of similarity, consensus"),
        ({}, "image_id: required"),
    ]
    for body, message in cases:
        response = client.post("/api/v1/search", json=body, headers=headers)
        assert response.status_code == 400, body
        assert message in response.get_json()["error"], body
    assert client.post("/api/v1/search", json={"image_id": 999}, headers=headers).status_code == 404
    no_file = client.post("/api/v1/search", data={"k": "3"}, headers=headers)
    assert no_file.status_code == 400 and "no image uploaded" in no_file.get_json()["error"]
