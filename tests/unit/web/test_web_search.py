"""Searching through the web page and the API with the real search service and backbone."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from mammosearch.access.users import create_api_token
from mammosearch.config import Settings
from mammosearch.db.models import AuditEvent, Image
from mammosearch.db.session import make_session_factory
from mammosearch.pipeline.process import process_pending
from mammosearch.search.filters import FILTER_FIELDS, FILTER_NAMES
from tests.factories import make_image, make_patient, make_user, synthetic_image_bytes
from tests.unit.web_support import app_config, fresh_sqlite, login, make_settings
from web import create_app


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Settings:
    """Six synthetic images of patients A (BIRADS 2, left) and B (BIRADS 4, right), indexed."""
    root = tmp_path_factory.mktemp("archive")
    settings = make_settings(root / "data", fresh_sqlite(sqlite_template, root / "db"))
    session = make_session_factory(settings.database_url)()
    patient_a, patient_b = make_patient(session, "A"), make_patient(session, "B")
    for seed in range(3):
        make_image(session, settings, patient_a, seed=seed, birads=2, side="L")
    for seed in range(3, 6):
        make_image(
            session, settings, patient_b, seed=seed, birads=4, side="R", pathology="Malignant"
        )
    make_user(session, "rad", "radiologist")
    session.close()
    summary = process_pending(settings)
    assert summary.indexed == 6, summary
    return settings


@pytest.fixture(scope="module")
def api_token(archive: Settings) -> str:
    """A bearer token of the API user `robot` (a radiologist)."""
    session = make_session_factory(archive.database_url)()
    token = create_api_token(session, make_user(session, "robot", "radiologist"))
    session.commit()
    session.close()
    return token


@pytest.fixture(scope="module")
def search_app(archive: Settings) -> Flask:
    """The app on the indexed archive (every test signs in: no sign-in rate limit to hit)."""
    return create_app(app_config(archive, LOGIN_RATE_LIMIT="1000 per minute"))


@pytest.fixture
def browser(search_app: Flask) -> FlaskClient:
    """A client signed in as the radiologist `rad`."""
    signed_in = search_app.test_client()
    login(signed_in, "rad")
    return signed_in


@pytest.fixture
def api(search_app: Flask, api_token: str) -> Iterator[tuple[FlaskClient, dict[str, str]]]:
    """A client and the bearer header of the API user `robot`."""
    yield search_app.test_client(), {"Authorization": f"Bearer {api_token}"}


def _upload(name: str, content: bytes) -> tuple[io.BytesIO, str]:
    return io.BytesIO(content), name


def test_upload_search_page_shows_k_results_with_birads(browser: FlaskClient) -> None:
    """The grid holds k results with BIRADS, the suggestion, the space and the query preview."""
    response = browser.post(
        "/search",
        data={"image": _upload("query.png", synthetic_image_bytes(13)), "k": "4", "metric": "l2"},
        content_type="multipart/form-data",
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 200, page
    assert page.count('class="result"') == 4
    assert page.count('<dd class="birads">') == 4 + 0  # the upload has no labels of its own
    assert 'id="birads-vote" data-status="unmeasured"' in page and "efficientnet-lite0" in page
    assert 'id="birads-suggested">No suggestion<' in page  # the space's vote is not measured
    assert 'src="data:image/jpeg;base64,' in page
    assert "UNTRAINED" not in page  # efficientnet-lite0 ships pretrained weights
    assert '<option value="consensus" selected>' in page  # the default order, as set
    assert "those whose BIRADS agrees with the vote come first" in page


def test_the_page_orders_results_as_the_form_chose(browser: FlaskClient, archive: Settings) -> None:
    """Order "most similar first" is kept in the form, said above the grid and audited."""
    response = browser.get(
        "/search", query_string={"image_id": "1", "k": "5", "ranking": "similarity"}
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 200, page
    assert '<option value="similarity" selected>' in page
    assert 'id="result-order">Most similar first.' in page
    session = make_session_factory(archive.database_url)()
    event = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "search").order_by(AuditEvent.id.desc())
    ).first()
    assert event.detail["ranking"] == "similarity"


def test_search_by_archived_image_can_exclude_its_patient(
    browser: FlaskClient, archive: Settings
) -> None:
    """exclude_same_patient leaves only the other patient's images; the search is audited."""
    response = browser.get(
        "/search",
        query_string={"image_id": "1", "unit": "image", "k": "5", "exclude_same_patient": "1"},
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 200, page
    assert set(re.findall(r"Patient (\w+) · image", page)) == {"B"}
    session = make_session_factory(archive.database_url)()
    event = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "search").order_by(AuditEvent.id.desc())
    ).first()
    query_patient = session.get(Image, 1).patient_id
    session.close()
    assert event.username == "rad" and event.image_id == 1
    assert event.patient_id == query_patient is not None  # whose image was looked at
    assert len(event.detail["result_image_ids"]) == 3 and event.detail["exclude_same_patient"]

    browser.get("/search", query_string={"image_id": "1", "k": "5"})  # patient read with the hits
    session = make_session_factory(archive.database_url)()
    event = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "search").order_by(AuditEvent.id.desc())
    ).first()
    session.close()
    assert (event.image_id, event.patient_id) == (1, query_patient)


def test_api_search_by_upload(api: tuple[FlaskClient, dict[str, str]]) -> None:
    """Multipart `image`: results with labels, suggested BIRADS, stage timings, the space."""
    client, headers = api
    response = client.post(
        "/api/v1/search",
        headers=headers,
        content_type="multipart/form-data",
        data={"image": _upload("q.png", synthetic_image_bytes(4)), "k": "3"},
    )
    body = response.get_json()
    assert response.status_code == 200, body
    assert len(body["results"]) == 3
    first = body["results"][0]
    for key in (
        "image_id",
        "patient_id",
        "distance",
        "similarity",
        "birads",
        "pathology",
        "side",
        "view",
        "findings",
        "image_url",
    ):
        assert key in first
    assert set(body["timing_ms"]) >= {"embed", "index", "join", "total"}
    assert body["embedding_space"]["backbone"] == "efficientnet-lite0"
    assert body["suggested_birads"]["leading"] in (2, 4)
    assert body["suggested_birads"]["status"] == "unmeasured"
    assert body["suggested_birads"]["birads"] is None


def test_api_search_by_image_id_with_filters(api: tuple[FlaskClient, dict[str, str]]) -> None:
    """JSON image_id + side=R: only right-side images; the query image is not its own result."""
    client, headers = api
    body = client.post(
        "/api/v1/search", headers=headers, json={"image_id": 4, "k": 10, "side": "R"}
    ).get_json()
    assert [hit["side"] for hit in body["results"]] == ["R", "R"]
    assert 4 not in [hit["image_id"] for hit in body["results"]]


def test_api_search_by_dicom_upload(api: tuple[FlaskClient, dict[str, str]]) -> None:
    """A DICOM query is read with mammosearch.ingest.dicom and searched like a picture."""
    from tests.dicom_samples import dicom_bytes, make_dataset, ramp

    client, headers = api
    response = client.post(
        "/api/v1/search",
        headers=headers,
        content_type="multipart/form-data",
        data={"image": _upload("query.dcm", dicom_bytes(make_dataset(ramp(128, 96)))), "k": "2"},
    )
    assert response.status_code == 200, response.get_json()
    assert len(response.get_json()["results"]) == 2


def test_bad_upload_is_a_message_not_a_500(
    browser: FlaskClient, api: tuple[FlaskClient, dict[str, str]]
) -> None:
    """A file that is no image: the page says why (400), the API says why in JSON (400)."""
    page = browser.post(
        "/search",
        data={"image": _upload("notes.png", b"PK\x03\x04 not an image")},
        content_type="multipart/form-data",
    )
    assert page.status_code == 400
    assert "notes.png: not an image Pillow can read" in page.get_data(as_text=True)
    client, headers = api
    response = client.post(
        "/api/v1/search",
        headers=headers,
        content_type="multipart/form-data",
        data={"image": _upload("scan.dcm", b"\0" * 200)},
    )
    assert response.status_code == 400 and "scan.dcm" in response.get_json()["error"]


def test_decompression_bomb_is_refused(archive: Settings, api_token: str) -> None:
    """An image over max_image_pixels is refused (413) with the limit named, before decoding."""
    app = create_app(app_config(archive.with_overrides(max_image_pixels=1000)))
    client = app.test_client()
    response = client.post(
        "/api/v1/search",
        headers={"Authorization": f"Bearer {api_token}"},
        content_type="multipart/form-data",
        data={"image": _upload("big.png", synthetic_image_bytes(1))},
    )
    assert response.status_code == 413
    assert "MAMMOSEARCH_MAX_IMAGE_PIXELS" in response.get_json()["error"]


def test_oversized_upload_is_413(archive: Settings, api_token: str) -> None:
    """Over max_upload_bytes: 413 with the limit, as a page and as JSON."""
    app = create_app(app_config(archive, MAX_CONTENT_LENGTH=10_000))
    big = synthetic_image_bytes(1) + b"\0" * 20_000
    api_response = app.test_client().post(
        "/api/v1/search",
        headers={"Authorization": f"Bearer {api_token}"},
        content_type="multipart/form-data",
        data={"image": _upload("big.png", big)},
    )
    assert api_response.status_code == 413
    assert "upload too large" in api_response.get_json()["error"]
    browser = app.test_client()
    login(browser, "rad")
    page = browser.post(
        "/search", content_type="multipart/form-data", data={"image": _upload("big.png", big)}
    )
    assert page.status_code == 413 and b"upload too large" in page.data


def test_search_latency_is_exported_per_stage(browser: FlaskClient, search_app: Flask) -> None:
    """After a search /metrics holds the stage histogram; no patient id appears in it."""
    browser.get("/search", query_string={"image_id": "2", "k": "2"})
    metrics = search_app.test_client().get("/metrics").get_data(as_text=True)
    assert 'mammosearch_search_stage_seconds_count{stage="index"}' in metrics
    assert 'mammosearch_images{status="indexed"} 6.0' in metrics
    assert "mammosearch_index_vectors" in metrics
    assert "patient" not in metrics.lower()


def test_untrained_space_is_flagged_on_the_page(search_app: Flask) -> None:
    """A space without pretrained weights shows a visible UNTRAINED warning."""
    with search_app.test_request_context():
        macros = search_app.jinja_env.get_template("_macros.html").module
        banner = str(
            macros.space_banner(
                {
                    "backbone": "densenet121",
                    "pretrained": False,
                    "weights_sha256": "0" * 64,
                    "weights_source": "random",
                    "preprocessing_version": 1,
                    "dim": 1024,
                }
            )
        )
    assert "UNTRAINED weights" in banner and "space-untrained" in banner


def test_an_upload_and_an_image_id_at_once_are_refused(
    browser: FlaskClient, api: tuple[FlaskClient, dict[str, str]]
) -> None:
    """Two queries in one request: 400 naming both (page and API), instead of using the id."""
    data = {"image_id": "2", "k": "3"}
    page = browser.post(
        "/search",
        content_type="multipart/form-data",
        data={**data, "image": _upload("query.png", synthetic_image_bytes(3))},
    )
    text = page.get_data(as_text=True)
    assert page.status_code == 400
    assert "give one query, not both" in text and "query.png" in text
    assert 'id="results"' not in text  # nothing was searched
    client, headers = api
    response = client.post(
        "/api/v1/search",
        headers=headers,
        content_type="multipart/form-data",
        data={**data, "image": _upload("query.png", synthetic_image_bytes(3))},
    )
    assert response.status_code == 400
    assert "give one query, not both" in response.get_json()["error"]


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("view", "LATERAL", "CC, MLO"),
        ("pathology", "cancer", "Normal, Benign, Malignant"),
        ("modality", "CESM", "subtracted"),
    ],
)
def test_unknown_filter_values_are_refused_naming_the_allowed_ones(
    browser: FlaskClient,
    api: tuple[FlaskClient, dict[str, str]],
    name: str,
    value: str,
    allowed: str,
) -> None:
    """view=LATERAL, pathology=cancer, modality=CESM: 400 listing the choices, not 0 results."""
    client, headers = api
    response = client.post(
        "/api/v1/search", headers=headers, json={"image_id": 1, "k": 3, name: value}
    )
    error = response.get_json()["error"]
    assert response.status_code == 400
    assert f"{name}: {value!r} is not known; choose" in error and allowed in error
    page = browser.get("/search", query_string={"image_id": "1", name: value})
    assert page.status_code == 400 and allowed in page.get_data(as_text=True)


def test_filter_values_match_regardless_of_case(api: tuple[FlaskClient, dict[str, str]]) -> None:
    """mlo, MALIGNANT and Subtracted are the archive's MLO, Malignant and subtracted."""
    client, headers = api
    body = client.post(
        "/api/v1/search",
        headers=headers,
        json={
            "image_id": 1,
            "k": 3,
            "pathology": "MALIGNANT",
            "modality": "Subtracted",
        },
    ).get_json()
    assert {hit["pathology"] for hit in body["results"]} == {"Malignant"}


def test_a_search_error_page_does_not_call_the_archive_empty(browser: FlaskClient) -> None:
    """A refused search keeps the form and the recent cases; no 'no searchable case yet'."""
    page = browser.get("/search", query_string={"image_id": "1", "k": "many"})
    text = page.get_data(as_text=True)
    assert page.status_code == 400 and "k: &#39;many&#39; is not a whole number" in text
    assert "no searchable case yet" not in text and 'id="recent-cases"' in text


def test_the_form_offers_the_archive_s_filter_values(browser: FlaskClient) -> None:
    """Modality, view and pathology are choices from the archive, the chosen one kept."""
    page = browser.get("/search?modality=subtracted").get_data(as_text=True)
    assert '<option value="subtracted" selected>' in page
    assert '<option value="MLO" >' in page and '<option value="Malignant" >' in page


def test_the_form_s_filters_are_the_filter_table_s_rows(browser: FlaskClient) -> None:
    """One labelled input per FILTER_FIELDS row, in its order; a chosen value stays, compared
    as the filter compares it (side=r is right, view=mlo is MLO)."""
    page = browser.get("/search?side=r&view=mlo&birads_max=4").get_data(as_text=True)
    rendered = re.findall(r'<(?:select|input type="number") name="(\w+)" id="\1"', page)
    assert [name for name in rendered if name in FILTER_NAMES] == list(FILTER_NAMES)
    assert all(f"<label>{field.label}" in page for field in FILTER_FIELDS)
    assert '<option value="R" selected>right</option>' in page
    assert '<option value="MLO" selected>MLO</option>' in page
    assert 'name="birads_max" id="birads_max" min="0" max="6" value="4"' in page


def test_similarity_is_shown_as_a_rank_and_a_readable_figure(browser: FlaskClient) -> None:
    """cosine: a percentage; L2: the rank and the distance, never a 0.0x 'similarity'."""
    cosine = browser.get(
        "/search", query_string={"image_id": "1", "unit": "image", "k": "3", "metric": "cosine"}
    )
    assert re.search(r"#1 · \d+% similar", cosine.get_data(as_text=True))
    l2 = browser.get(
        "/search", query_string={"image_id": "1", "unit": "image", "k": "3", "metric": "l2"}
    )
    text = l2.get_data(as_text=True)
    assert "#1 of 3 · distance" in text and "similarity 0." not in text


def test_every_archived_query_has_an_address_that_reproduces_its_results(
    browser: FlaskClient, api: tuple[FlaskClient, dict[str, str]]
) -> None:
    """The form's post goes to the GET address; that address (bookmark, share, back) shows the
    same results and says it; the API's answer carries it; an upload says it has none."""
    posted = browser.post(
        "/search",
        data={
            "image_id": "1",
            "k": "4",
            "side": "R",
            "ranking": "similarity",
            "exclude_same_patient": "1",
        },
    )
    assert posted.status_code == 303
    address = posted.headers["Location"]
    assert address.startswith("/search?") and "image_id=1" in address and "k=4" in address
    assert "side=R" in address and "exclude_same_patient=1" in address and "unit=image" in address

    page = browser.get(address).get_data(as_text=True)
    assert page.count('class="result"') == 3  # patient B's three right images
    assert f'id="results-url" href="{address.replace("&", "&amp;")}"' in page
    assert '<option value="R" selected>' in page and 'value="4"' in page

    client, headers = api
    body = client.post(
        "/api/v1/search",
        json={
            "image_id": 1,
            "k": 4,
            "side": "R",
            "ranking": "similarity",
            "exclude_same_patient": True,
        },
        headers=headers,
    ).get_json()
    assert body["url"] == f"http://localhost{address}"
    assert [hit["image_id"] for hit in body["results"]] == [
        int(i) for i in re.findall(r'data-image-id="(\d+)"', page)
    ]
    cases = client.post(
        "/api/v1/search", json={"image_id": 1, "unit": "case"}, headers=headers
    ).get_json()
    assert cases["url"] == "http://localhost/search?metric=cosine&image_id=1&unit=case"

    upload = browser.post(
        "/search",
        content_type="multipart/form-data",
        data={"image": _upload("q.png", synthetic_image_bytes(40)), "k": "2"},
    )
    assert upload.status_code == 200
    assert "An uploaded image has no address" in upload.get_data(as_text=True)


def test_a_case_search_page_shows_cases_with_their_views_and_can_bring_the_patient_back(
    browser: FlaskClient,
) -> None:
    """unit=case: one result per breast with every view, the query's patient left out by
    default with a link that includes them; each result hangs its views beside the query's."""
    page = browser.get("/search", query_string={"image_id": "1", "unit": "case"})
    text = page.get_data(as_text=True)
    assert page.status_code == 200, text
    assert text.count('class="result case-result"') == 1  # patient B's right breast
    assert text.count('<figure class="best-view">') == 1 and "3 views" in text
    assert 'id="excluded-patients"' in text
    include = re.search(r'id="include-query-patient" href="([^"]+)"', text).group(1)
    assert "exclude_same_patient=0" in include
    again = browser.get(include.replace("&amp;", "&")).get_data(as_text=True)
    assert 'id="excluded-patients"' not in again  # (patient A's only case is the query itself)
    assert re.search(r'id="exclude_same_patient" value="1"\s*>', again)  # unticked now
    views = re.search(r'data-compare-views="([^"]+)"', text).group(1).replace("&#34;", '"')
    assert '"CC": {"src": "/cases/' in views and "#1 · R CC" in views
    assert 'id="compare-query-cc"' in text and 'data-src="/cases/1/full"' in text


def test_an_uploaded_file_the_archive_holds_is_named_and_its_patient_left_out(
    browser: FlaskClient,
) -> None:
    """The same bytes as image 4 (patient B): the page says so, B's cases are left out, and
    the box that brings them back is ticked (the page's own choice, visible)."""
    page = browser.post(
        "/search",
        content_type="multipart/form-data",
        data={
            "image": _upload("again.png", synthetic_image_bytes(3)),
            "unit": "case",
            "exclude_same_patient": ["1", "0"],
        },
    )
    text = page.get_data(as_text=True)
    assert page.status_code == 200, text
    assert re.search(r"again.png: archived as patient B, <a href=\"/cases/4\">image 4</a>", text)
    assert 'id="excluded-patients">Patient B' in text
    assert re.findall(r'<p class="patient">Patient (\w+) ·', text) == ["A"]
    assert "An uploaded image has no address" in text


def test_an_address_without_unit_searches_cases_as_the_form_shows(browser: FlaskClient) -> None:
    """`/search?image_id=1` typed by hand: cases, the query's patient left out, as the form's
    "cases" and its ticked box say (the API's default unit is image)."""
    text = browser.get("/search", query_string={"image_id": "1"}).get_data(as_text=True)
    assert text.count('class="result case-result"') == 1  # patient B's right breast
    assert 'id="excluded-patients"' in text
    assert re.search(r'<option value="case"\s+selected', text)
    image = browser.get("/search", query_string={"image_id": "1", "unit": "image"})
    assert 'class="result case-result"' not in image.get_data(as_text=True)
