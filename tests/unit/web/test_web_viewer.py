"""The viewer and the case page: the vendored viewer, the patient's whole study, where a
case was found, the archive-viewer link for DICOM images, the side-by-side comparison."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.session import make_session_factory
from mammosearch.pipeline.process import process_pending
from tests.factories import add_report, make_image, make_patient, make_user, synthetic_image_bytes
from tests.unit.web_support import app_config, fresh_sqlite, login, make_settings
from web import create_app
from web.imagefiles import viewer_data_url

VIEWER_JS = "/static/vendor/openseadragon/openseadragon.min.js"
OHIF = "https://pacs.example/ohif/viewer?StudyInstanceUIDs={study_instance_uid}"


def _case_links(page: str) -> set[int]:
    return {int(found) for found in re.findall(r'href="/cases/(\d+)"', page)}


def test_the_vendored_viewer_is_served_with_its_licence(
    radiologist_client: FlaskClient, db: Session, web_settings: Settings
) -> None:
    """OpenSeadragon's built file and BSD licence come from our own static folder."""
    library = radiologist_client.get(VIEWER_JS)
    assert library.status_code == 200 and b"OpenSeadragon" in library.data
    licence = radiologist_client.get("/static/vendor/openseadragon/LICENSE.txt")
    assert licence.status_code == 200 and b"Redistribution and use" in licence.data
    image = make_image(db, web_settings, make_patient(db))
    page = radiologist_client.get(f"/cases/{image.id}").get_data(as_text=True)
    assert f'<script src="{VIEWER_JS}"></script>' in page
    assert '<script src="/static/viewer.js"></script>' in page
    assert 'id="wl-filter"' in page and 'data-action="invert"' in page


def test_the_case_page_hangs_every_image_of_the_patient_s_study(
    radiologist_client: FlaskClient, db: Session, web_settings: Settings
) -> None:
    """Both sides, both views, both modalities, the current one marked; no other patient's."""
    patient = make_patient(db, "P20")
    images = {
        (modality, side, view): make_image(
            db, web_settings, patient, seed=seed, side=side, view=view, modality=modality
        )
        for seed, (modality, side, view) in enumerate(
            (m, s, v) for m in ("low-energy", "subtracted") for s in "RL" for v in ("CC", "MLO")
        )
    }
    stranger = make_image(db, web_settings, make_patient(db, "P21"), seed=40)
    shown = images[("subtracted", "L", "MLO")]
    add_report(db, patient, "Left breast: spiculated mass at 2 o'clock.")
    page = radiologist_client.get(f"/cases/{shown.id}").get_data(as_text=True)

    assert _case_links(page) == {image.id for image in images.values()}
    assert stranger.id not in _case_links(page)
    assert "8 images" in page
    hanging = page[page.index('id="patient-images"') :]
    first_row = [
        images[("low-energy", side, view)].id
        for side, view in (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
    ]
    positions = [hanging.index(f'data-image-id="{image_id}"') for image_id in first_row]
    assert positions == sorted(positions), "columns are R CC, L CC, R MLO, L MLO"
    assert f'class="result study-image current" data-image-id="{shown.id}"' in page
    assert "spiculated mass at 2 o&#39;clock." in page
    assert 'id="findings">finding 7<' in page  # make_image's findings for seed 7
    assert "Benign" in page


def test_the_case_page_says_where_the_case_was_found(
    radiologist_client: FlaskClient, db: Session, web_settings: Settings
) -> None:
    """Rank, similarity, distance and metric from the results link; nothing without a rank."""
    image = make_image(db, web_settings, make_patient(db))
    found = radiologist_client.get(
        f"/cases/{image.id}?rank=3&similarity=0.8123&distance=0.1877&metric=cosine&query=5"
    ).get_data(as_text=True)
    assert 'id="found-at"' in found
    text = re.sub(r"<[^>]+>", "", found[found.index('id="found-at"') :].split("</p>")[0])
    assert (
        "rank 3 of a cosine search, 81% similar (distance 0.188), for the query image 5"
    ) in text
    l2 = radiologist_client.get(f"/cases/{image.id}?rank=2&similarity=0.01&distance=9.5&metric=l2")
    assert "rank 2 of an L2 search (distance 9.500)" in re.sub(
        r"<[^>]+>", "", l2.get_data(as_text=True)
    )
    plain = radiologist_client.get(f"/cases/{image.id}").get_data(as_text=True)
    assert 'id="found-at"' not in plain
    edited = radiologist_client.get(f"/cases/{image.id}?rank=first&similarity=nan")
    assert edited.status_code == 200 and 'id="found-at"' not in edited.get_data(as_text=True)


def _app_with_archive_viewer(web_settings: Settings, url: str | None) -> FlaskClient:
    app = create_app(app_config(web_settings.with_overrides(archive_viewer_url=url)))
    client = app.test_client()
    assert login(client, "rad").status_code == 302
    return client


def test_the_archive_viewer_link_is_for_dicom_images_when_it_is_set(
    radiologist: object, db: Session, web_settings: Settings
) -> None:
    """A DICOM image links its study to the archive's viewer; a JPEG or an unset URL: no link."""
    patient = make_patient(db, "D1")
    dicom = make_image(
        db,
        web_settings,
        patient,
        seed=1,
        modality="MG",
        study_instance_uid="1.2.840.99.7",
        sop_instance_uid="1.2.840.99.7.1",
    )
    jpeg = make_image(db, web_settings, patient, seed=2)
    with_link = _app_with_archive_viewer(web_settings, OHIF)
    page = with_link.get(f"/cases/{dicom.id}").get_data(as_text=True)
    assert (
        'id="archive-viewer" href="https://pacs.example/ohif/viewer?StudyInstanceUIDs=1.2.840.99.7"'
    ) in page
    assert 'id="archive-viewer"' not in with_link.get(f"/cases/{jpeg.id}").get_data(as_text=True)
    without = _app_with_archive_viewer(web_settings, None)
    assert 'id="archive-viewer"' not in without.get(f"/cases/{dicom.id}").get_data(as_text=True)


def test_thumbnails_come_in_two_sizes(
    radiologist_client: FlaskClient, db: Session, web_settings: Settings
) -> None:
    """256 and 512 px thumbnails (srcset offers both); any other size is refused in words."""
    image = make_image(db, web_settings, make_patient(db), seed=5)
    assert radiologist_client.get(f"/cases/{image.id}/thumbnail?size=512").status_code == 200
    refused = radiologist_client.get(f"/cases/{image.id}/thumbnail?size=300")
    assert refused.status_code == 400 and b"thumbnails are 256 or 512 px" in refused.data
    page = radiologist_client.get(f"/cases/{image.id}").get_data(as_text=True)
    assert f"/cases/{image.id}/thumbnail?size=512 512w" in page and 'id="thumb-size"' in page


def test_an_uploaded_query_reaches_the_viewer_at_full_resolution() -> None:
    """A 2400x3000 grey upload is shown at 2400x3000, and the searched image is untouched."""
    upload = PILImage.new("L", (2400, 3000), 90)
    shown = viewer_data_url(upload)
    assert (shown.width, shown.height) == (2400, 3000)
    assert shown.url.startswith("data:image/jpeg;base64,")
    assert upload.size == (2400, 3000)


@pytest.fixture(scope="module")
def compare_app(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Flask:
    """Four indexed images of two patients and a radiologist `rad`."""
    root = tmp_path_factory.mktemp("viewer")
    settings = make_settings(root / "data", fresh_sqlite(sqlite_template, root / "db"))
    session = make_session_factory(settings.database_url)()
    for number, name in enumerate(("V1", "V2")):
        patient = make_patient(session, name)
        for view_number, view in enumerate(("CC", "MLO")):
            make_image(session, settings, patient, seed=50 + 2 * number + view_number, view=view)
    make_user(session, "rad", "radiologist")
    session.close()
    assert process_pending(settings).indexed == 4
    return create_app(app_config(settings))


def _signed_in(app: Flask) -> FlaskClient:
    client = app.test_client()
    assert login(client, "rad").status_code == 302
    return client


def test_results_open_side_by_side_and_link_cases_with_their_rank(compare_app: Flask) -> None:
    """By image id: the query's full image beside a result's; case links carry rank and scores."""
    page = (
        _signed_in(compare_app)
        .get(
            "/search", query_string={"image_id": "1", "unit": "image", "k": "3", "metric": "cosine"}
        )
        .get_data(as_text=True)
    )
    assert 'id="compare-query"' in page and 'data-src="/cases/1/full"' in page
    assert 'id="compare-result"' in page
    assert page.count("data-compare-src=") == 3
    assert re.search(
        r'href="/cases/\d+\?rank=1&amp;similarity=[0-9.-]+&amp;distance=[0-9.-]+'
        r'&amp;metric=cosine&amp;query=1"',
        page,
    )


def test_an_uploaded_query_is_compared_at_full_resolution(compare_app: Flask) -> None:
    """An upload's query pane holds the upload itself (a data URL), not the 256 px preview."""
    import io

    client = _signed_in(compare_app)
    upload = synthetic_image_bytes(77, size=(600, 800))
    page = client.post(
        "/search",
        data={"image": (io.BytesIO(upload), "q.png"), "k": "2", "metric": "l2"},
        content_type="multipart/form-data",
    ).get_data(as_text=True)
    match = re.search(
        r'id="compare-query" data-viewer\s+data-src="data:image/jpeg;base64,[^"]+"'
        r' data-width="(\d+)" data-height="(\d+)"',
        page,
    )
    assert match and match.groups() == ("600", "800")
