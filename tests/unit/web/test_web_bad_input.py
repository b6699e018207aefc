"""Input that used to answer 500 or exhaust memory: ids past 2^63, JSON nested 100k deep,
query images past the decoded-pixel cap or the shared budget (issue 12)."""

from __future__ import annotations

import io

import pytest
from flask.testing import FlaskClient
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from mammosearch.access.users import create_api_token
from mammosearch.config import Settings
from mammosearch.db.models import User
from tests.unit.web_support import app_config, login
from web import create_app

HUGE_ID = str(2**63)  # one past the largest id a database integer holds


@pytest.mark.parametrize(
    "url",
    [
        f"/cases/{HUGE_ID}",
        f"/cases/{HUGE_ID}/image",
        f"/cases/{HUGE_ID}/thumbnail",
        f"/api/v1/images/{HUGE_ID}",
        f"/api/v1/images/{HUGE_ID}/file",
        f"/cases/{'9' * 400}",
    ],
)
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


# --- Decoded pixels: per request and across concurrent requests ---------------------------
def _png_upload(width: int, height: int) -> tuple[io.BytesIO, str]:
    """A real PNG file of width x height (tiny on disk, large once decoded)."""
    buffer = io.BytesIO()
    PILImage.new("L", (width, height), 0).save(buffer, format="PNG")
    buffer.seek(0)
    return buffer, "big.png"


@pytest.fixture
def small_budget_client(web_settings: Settings, radiologist: User) -> FlaskClient:
    """Signed in on an app whose query cap is 1 megapixel and shared budget 1.5 megapixels."""
    app = create_app(
        app_config(
            web_settings.with_overrides(max_image_pixels=1_000_000, decode_budget_pixels=1_500_000)
        )
    )
    signed_in = app.test_client()
    assert login(signed_in, radiologist.username).status_code == 302
    return signed_in


def test_a_query_over_the_pixel_cap_is_a_413_before_it_is_decoded(
    small_budget_client: FlaskClient, bearer: dict[str, str]
) -> None:
    response = small_budget_client.application.test_client().post(
        "/api/v1/search",
        data={"image": _png_upload(2000, 1000)},
        content_type="multipart/form-data",
        headers=bearer,
    )
    assert response.status_code == 413
    assert response.get_json()["error"] == (
        "big.png: 2000000 pixels to decode; a query may decode at most 1000000 "
        "(MAMMOSEARCH_MAX_IMAGE_PIXELS)"
    )


def test_a_query_past_the_shared_budget_is_a_413_to_retry_and_the_budget_is_given_back(
    small_budget_client: FlaskClient, bearer: dict[str, str]
) -> None:
    """Pixels held by requests in flight count; each request returns what it held."""
    app = small_budget_client.application
    budget = app.extensions["mammosearch_pixel_budget"]
    assert budget.try_reserve(1_000_000)  # another request decoding a large image now
    busy = app.test_client().post(
        "/api/v1/search",
        data={"image": _png_upload(1000, 1000)},
        content_type="multipart/form-data",
        headers=bearer,
    )
    assert busy.status_code == 413 and busy.headers["Retry-After"] == "5"
    assert (
        "the server is decoding other images (1000000 of 1500000 pixels in use"
        in (busy.get_json()["error"])
    )
    budget.release(1_000_000)
    page = small_budget_client.post(
        "/search", data={"image": _png_upload(1000, 1000)}, content_type="multipart/form-data"
    )
    assert page.status_code != 413
    assert budget.in_use == 0
