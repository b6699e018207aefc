"""Every /api/v1 answer, recorded from the real routes, matches the generated OpenAPI schema.

The document is generated from the request and response models; its bodies forbid unknown
fields, so a route that answers with a field the document does not describe fails here.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from flask import Flask
from jsonschema import Draft202012Validator

from mammosearch.access.users import create_api_token
from mammosearch.config import Settings
from mammosearch.db.models import EvaluationRun
from mammosearch.db.session import make_session_factory
from mammosearch.search.request import MAX_K, SearchRequest
from tests.factories import make_user, synthetic_image_bytes
from tests.unit.web.test_web_search import archive, search_app  # noqa: F401  (fixtures)
from web.api.openapi import openapi_document


def _validator(document: dict[str, Any], path: str, method: str, status: str) -> Any:
    answer = document["paths"][path][method]["responses"][status]
    if "$ref" in answer:  # a shared response, e.g. the error body
        answer = document["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    schema = answer["content"]["application/json"]["schema"]
    return Draft202012Validator({**schema, "components": document["components"]})


@pytest.fixture(scope="module")
def headers(archive: Settings) -> dict[str, dict[str, str]]:  # noqa: F811
    session = make_session_factory(archive.database_url)()
    tokens = {
        role: create_api_token(session, make_user(session, f"schema-{role}", role))
        for role in ("radiologist", "admin")
    }
    session.add(
        EvaluationRun(
            protocol="patient-excluded",
            label="birads",
            metric="cosine",
            status="done",
            metrics={"precision@5": 0.4},
            queries=6,
        )
    )
    session.commit()
    session.close()
    return {role: {"Authorization": f"Bearer {token}"} for role, token in tokens.items()}


def test_every_route_answers_as_its_schema_says(
    search_app: Flask,
    headers: dict[str, dict[str, str]],  # noqa: F811
) -> None:
    document = openapi_document()
    client = search_app.test_client()
    radiologist, admin = headers["radiologist"], headers["admin"]
    upload = {"image": (io.BytesIO(synthetic_image_bytes(1)), "q.png"), "k": "3"}
    calls = [
        ("/search", "post", client.post("/api/v1/search", data=upload, headers=radiologist)),
        (
            "/search",
            "post",
            client.post(
                "/api/v1/search",
                headers=radiologist,
                json={"image_id": 1, "k": 4, "side": "right", "exclude_same_patient": True},
            ),
        ),
        (
            "/search",
            "post",
            client.post(
                "/api/v1/search", json={"image_id": 1, "k": MAX_K + 1}, headers=radiologist
            ),
        ),
        (
            "/search",
            "post",
            client.post("/api/v1/search", json={"image_id": 10**6}, headers=radiologist),
        ),
        ("/search", "post", client.post("/api/v1/search", json={"image_id": 1})),
        ("/images/{image_id}", "get", client.get("/api/v1/images/1", headers=radiologist)),
        ("/images/{image_id}", "get", client.get("/api/v1/images/999", headers=radiologist)),
        ("/status", "get", client.get("/api/v1/status", headers=admin)),
        ("/status", "get", client.get("/api/v1/status", headers=radiologist)),
        ("/evaluations", "get", client.get("/api/v1/evaluations", headers=admin)),
        ("/evaluations/{run_id}", "get", client.get("/api/v1/evaluations/1", headers=admin)),
        ("/evaluations/{run_id}", "get", client.get("/api/v1/evaluations/99", headers=admin)),
    ]
    seen = set()
    for path, method, response in calls:
        status = str(response.status_code)
        assert status in document["paths"][path][method]["responses"], (path, status)
        errors = [
            error.message
            for error in _validator(document, path, method, status).iter_errors(response.get_json())
        ]
        assert not errors, (path, status, errors[:3])
        seen.add((path, status))
    assert {
        ("/search", "200"),
        ("/search", "400"),
        ("/search", "404"),
        ("/search", "401"),
        ("/images/{image_id}", "200"),
        ("/status", "200"),
        ("/status", "403"),
        ("/evaluations", "200"),
        ("/evaluations/{run_id}", "200"),
    } <= seen
    pixels = client.get("/api/v1/images/1/file", headers=radiologist)
    assert pixels.status_code == 200
    assert pixels.mimetype in {
        media.split(";")[0]
        for media in document["paths"]["/images/{image_id}/file"]["get"]["responses"]["200"][
            "content"
        ]
    }


def test_the_document_states_the_limits_the_server_enforces() -> None:
    """k's maximum, the sides and the filters come from the model the server validates with."""
    request = openapi_document()["components"]["schemas"]["SearchRequest"]["properties"]
    assert request["k"]["maximum"] == MAX_K
    assert set(SearchRequest.model_fields) == set(request)
    assert "source_file_name" in openapi_document()["components"]["schemas"]["Hit"]["properties"]
