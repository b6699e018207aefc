"""POST /api/v1/search with unit=case: cases as results, several files, archived files known.

On test_web_search's archive: patient A's left breast (images 1-3, BIRADS 2) and patient B's
right breast (images 4-6, BIRADS 4, malignant), each one case.
"""

from __future__ import annotations

import io
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from mammosearch.config import Settings
from tests.factories import synthetic_image_bytes
from tests.unit.web.test_api_schema import _validator
from tests.unit.web.test_web_search import api_token, archive, search_app  # noqa: F401  (fixtures)
from web.api.openapi import openapi_document


def _post(client: FlaskClient, token: str, **kwargs: Any) -> Any:
    return client.post("/api/v1/search", headers={"Authorization": f"Bearer {token}"}, **kwargs)


def _conforms(response: Any) -> None:
    validator = _validator(openapi_document(), "/search", "post", str(response.status_code))
    errors = [error.message for error in validator.iter_errors(response.get_json())]
    assert not errors, errors[:3]


def test_a_case_search_answers_each_breast_once_with_all_its_views(
    search_app: Flask,
    api_token: str,  # noqa: F811
) -> None:
    """An archived image's case queries; its own patient is left out by default."""
    client = search_app.test_client()
    response = _post(client, api_token, json={"unit": "case", "image_id": 1, "k": 5})
    assert response.status_code == 200, response.get_json()
    _conforms(response)
    body = response.get_json()
    assert body["unit"] == "case" and body["fusion"]
    assert body["query"]["case"]["patient_id"] == "A"
    assert [view["image_id"] for view in body["query"]["views"]] == [1, 2, 3]
    assert body["query"]["excluded_patient_ids"] == ["A"]
    [case] = body["results"]
    assert case["patient_id"] == "B" and case["side"] == "R" and case["birads"] == 4
    assert [view["image_id"] for view in case["views"]] == [4, 5, 6]
    assert case["best_view_image_id"] in (4, 5, 6) and case["best_query_view"].startswith("image")
    assert all(
        view["image_url"].endswith(f"/images/{view['image_id']}/file") for view in case["views"]
    )
    # the nearest cases vote; measured on images only, so listed, not put forward
    suggestion = body["suggested_birads"]
    assert suggestion["leading"] == 4 and suggestion["status"] == "unmeasured"
    assert suggestion["pathology"]["leading"] == "malignant"
    by_patient = _post(
        client, api_token, json={"unit": "case", "patient_id": "A", "breast": "L", "k": 5}
    ).get_json()
    assert by_patient["results"] == body["results"]
    by_case = _post(client, api_token, json={"unit": "case", "case_id": case["case_id"]})
    assert by_case.status_code == 200 and by_case.get_json()["query"]["case"]["patient_id"] == "B"


def test_several_files_are_one_case_and_archived_files_are_recognised(
    search_app: Flask,
    api_token: str,  # noqa: F811
) -> None:
    """Two files the archive holds (patient A's) are named, and A is left out."""
    client = search_app.test_client()
    data = {
        "unit": "case",
        "k": "5",
        "image": [
            (io.BytesIO(synthetic_image_bytes(0)), "first.png"),
            (io.BytesIO(synthetic_image_bytes(1)), "second.png"),
        ],
    }
    response = _post(client, api_token, data=data, content_type="multipart/form-data")
    assert response.status_code == 200, response.get_json()
    _conforms(response)
    body = response.get_json()
    assert body["query"]["uploads"] == ["first.png", "second.png"]
    assert [(known["file"], known["patient_id"]) for known in body["query"]["archived_as"]] == [
        ("first.png", "A"),
        ("second.png", "A"),
    ]
    assert [case["patient_id"] for case in body["results"]] == ["B"]


def test_an_archived_upload_at_image_level_is_named_and_its_patient_left_out(
    search_app: Flask,
    api_token: str,  # noqa: F811
) -> None:
    client = search_app.test_client()
    data = {"k": "6", "image": (io.BytesIO(synthetic_image_bytes(0)), "again.png")}
    body = _post(client, api_token, data=data, content_type="multipart/form-data").get_json()
    assert body["unit"] == "image"
    assert body["query"]["archived_as"] == {"patient_id": "A", "image_id": 1}
    assert {hit["patient_id"] for hit in body["results"]} == {"B"}
    data = {
        "k": "6",
        "exclude_same_patient": "0",
        "image": (io.BytesIO(synthetic_image_bytes(0)), "again.png"),
    }
    kept = _post(client, api_token, data=data, content_type="multipart/form-data").get_json()
    assert kept["results"][0]["image_id"] == 1 and kept["query"]["excluded_patient_ids"] == []


def test_case_queries_that_cannot_be_answered_say_why(
    search_app: Flask,
    api_token: str,  # noqa: F811
) -> None:
    client = search_app.test_client()
    mixed = {
        "unit": "case",
        "image": [
            (io.BytesIO(synthetic_image_bytes(50)), "P9_L_CM_CC.png"),
            (io.BytesIO(synthetic_image_bytes(51)), "P9_R_CM_MLO.png"),
        ],
    }
    image_unit = {
        "image": [
            (io.BytesIO(synthetic_image_bytes(50)), "one.png"),
            (io.BytesIO(synthetic_image_bytes(51)), "two.png"),
        ],
    }
    cases = [
        (
            dict(data=mixed, content_type="multipart/form-data"),
            "both breasts in one case query (L: P9_L_CM_CC.png; R: P9_R_CM_MLO.png)",
        ),
        (dict(data=image_unit, content_type="multipart/form-data"), "set unit=case"),
        (
            dict(json={"image_id": 1, "exlude_same_patient": True}),
            "exlude_same_patient: unknown field",
        ),
        (
            dict(json={"image_id": 1, "exclude_same_patient": "junk"}),
            "exclude_same_patient: 'junk' is not true or false",
        ),
        (dict(json={"patient_id": "A", "breast": "L"}), "a case query; set unit=case"),
        (dict(json={"unit": "case", "patient_id": "A"}), "breast: required"),
        (dict(json={"unit": "case", "fusion": "median", "image_id": 1}), "fusion"),
    ]
    for arguments, message in cases:
        response = _post(client, api_token, **arguments)
        assert response.status_code == 400, (message, response.get_json())
        assert message in response.get_json()["error"], response.get_json()
    missing = _post(client, api_token, json={"unit": "case", "patient_id": "Z", "breast": "L"})
    assert missing.status_code == 404 and "patient_id Z" in missing.get_json()["error"]


def test_the_audit_lists_the_cases_and_every_view_shown(
    search_app: Flask,
    api_token: str,
    archive: Settings,  # noqa: F811
) -> None:
    from sqlalchemy import select

    from mammosearch.db.models import AuditEvent
    from mammosearch.db.session import make_session_factory

    client = search_app.test_client()
    assert _post(client, api_token, json={"unit": "case", "image_id": 4}).status_code == 200
    session = make_session_factory(archive.database_url)()
    event = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert event.detail["unit"] == "case" and event.detail["result_image_ids"] == [1, 2, 3]
    assert len(event.detail["result_case_ids"]) == 1
    session.close()
