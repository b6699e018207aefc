"""Input that used to answer 500: ids past 2^63, JSON nested 100k deep (issue 12)."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from mammosearch.db.models import User
from mammosearch.users import create_api_token

HUGE_ID = str(2**63)  # one past the largest id a database integer holds


@pytest.mark.parametrize("url", [
    f"/cases/{HUGE_ID}", f"/cases/{HUGE_ID}/image", f"/cases/{HUGE_ID}/thumbnail",
    f"/api/v1/images/{HUGE_ID}", f"/api/v1/images/{HUGE_ID}/file", f"/cases/{'9' * 400}",
])
def test_an_id_past_the_database_integers_is_a_400_naming_it(
    radiologist_client: FlaskClient, url: str
) -> None:
    """Not a 500 from the database: the answer says what an id may be."""
    response = radiologist_client.get(url)
    assert response.status_code == 400
    assert b"not an id (ids are whole numbers up to 9223372036854775807)" in response.data
    if url.startswith("/api/"):
        assert "not an id" in response.get_json()["error"]


def test_the_largest_id_is_still_just_not_found(radiologist_client: FlaskClient) -> None:
    assert radiologist_client.get(f"/api/v1/images/{2**63 - 1}").status_code == 404


@pytest.fixture
def bearer(db: Session, radiologist: User) -> dict[str, str]:
    """An API token header for the radiologist (the API takes JSON without CSRF)."""
    token = create_api_token(db, radiologist)
    db.commit()
    return {"Authorization": f"Bearer {token}"}


def test_json_nested_100k_deep_is_a_400_with_a_clear_message(
    client: FlaskClient, bearer: dict[str, str]
) -> None:
    body = "[" * 100_000 + "]" * 100_000
    response = client.post(
        "/api/v1/search", data=body, content_type="application/json", headers=bearer
    )
    assert response.status_code == 400
    assert response.get_json() == {"error": "request body: JSON nested deeper than 64 levels"}


def test_brackets_inside_strings_are_not_nesting(
    client: FlaskClient, bearer: dict[str, str]
) -> None:
    """A deep-looking string is data, not depth: the request reaches the search checks."""
    body = '{"image_id": "' + "[" * 1000 + '"}'
    response = client.post(
        "/api/v1/search", data=body, content_type="application/json", headers=bearer
    )
    assert response.status_code == 400 and "nested" not in response.get_json()["error"]
