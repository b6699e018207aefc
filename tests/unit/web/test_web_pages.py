"""Pages people use: cases with images and outlines, evaluations, ingestion, users, audit."""

from __future__ import annotations

from flask.testing import FlaskClient
from PIL import Image as PILImage
from sqlalchemy import select

from mammosearch.access.users import authenticate
from mammosearch.db.models import AuditEvent, EvaluationRun, User
from tests.factories import add_polygon, add_report, make_image, make_patient


def test_case_page_shows_image_report_outline_and_other_images(
    radiologist_client: FlaskClient,
    db,
    web_settings,  # type: ignore[no-untyped-def]
) -> None:
    """The full image, an SVG outline in image pixels, the report, the patient's other views."""
    patient = make_patient(db, "P7")
    image = make_image(db, web_settings, patient, seed=1, findings="irregular mass$ foci ")
    other = make_image(db, web_settings, patient, seed=2, view="MLO")
    add_report(db, patient, "Left breast: irregular mass, BIRADS 4.")
    add_polygon(db, image, [10, 40, 30], [12, 20, 60])
    page = radiologist_client.get(f"/cases/{image.id}").get_data(as_text=True)
    assert f'data-src="/cases/{image.id}/full"' in page
    assert f'viewBox="0 0 {image.width} {image.height}"' in page
    assert 'points="10.0,12.0 40.0,20.0 30.0,60.0"' in page
    assert "irregular mass, BIRADS 4." in page
    assert 'id="findings">irregular mass; foci<' in page  # the sheet's "$" list, as a list
    assert f'href="/cases/{other.id}"' in page


def test_viewing_a_case_is_audited(radiologist_client: FlaskClient, db, web_settings) -> None:  # type: ignore[no-untyped-def]
    """Who viewed which patient's image and report, with the patient's row id."""
    patient = make_patient(db, "P8")
    image = make_image(db, web_settings, patient)
    add_report(db, patient, "text")
    radiologist_client.get(f"/cases/{image.id}")
    events = db.execute(
        select(AuditEvent.username, AuditEvent.action, AuditEvent.patient_id, AuditEvent.image_id)
        .where(AuditEvent.action.like("view%"))
        .order_by(AuditEvent.id)
    ).all()
    assert events == [
        ("rad", "view_image", patient.id, image.id),
        ("rad", "view_report", patient.id, image.id),
    ]


def test_image_and_thumbnail_files(radiologist_client: FlaskClient, db, web_settings) -> None:  # type: ignore[no-untyped-def]
    """The stored file as is; a JPEG thumbnail made once and cached under data_dir/thumbnails."""
    image = make_image(db, web_settings, make_patient(db), seed=3)
    full = radiologist_client.get(f"/cases/{image.id}/image")
    assert full.status_code == 200 and full.mimetype == "image/png"
    thumb = radiologist_client.get(f"/cases/{image.id}/thumbnail")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    cached = list((web_settings.data_dir / "thumbnails").rglob("*.jpg"))
    assert len(cached) == 1
    with PILImage.open(cached[0]) as small:
        assert max(small.size) <= 256


def test_missing_case_and_missing_file_are_404(
    radiologist_client: FlaskClient,
    db,
    web_settings,  # type: ignore[no-untyped-def]
) -> None:
    """An unknown id, or a row whose stored file vanished, is a 404 page, not a 500."""
    assert radiologist_client.get("/cases/999").status_code == 404
    image = make_image(db, web_settings, make_patient(db), seed=4)
    web_settings.images_dir.joinpath(image.stored_path).unlink()
    response = radiologist_client.get(f"/cases/{image.id}/thumbnail")
    assert response.status_code == 404
    assert b"stored file is missing" in response.data


def test_evaluation_list_and_detail(admin_client: FlaskClient, db) -> None:  # type: ignore[no-untyped-def]
    """The latest runs with their headline numbers; one run's metric table (3 decimals),
    per-class table and config."""
    run = EvaluationRun(
        protocol="leave-patient-out",
        label="birads",
        metric="cosine",
        metrics={"precision@5": 0.4321, "map": 0.25},
        per_class={"4": {"precision@5": 0.5}},
        config={"ks": [5]},
        status="done",
    )
    db.add(run)
    db.commit()
    listing = admin_client.get("/evaluations").get_data(as_text=True)
    assert f'href="/evaluations/{run.id}"' in listing and "0.432" in listing
    detail = admin_client.get(f"/evaluations/{run.id}").get_data(as_text=True)
    assert "0.432" in detail and "0.4321" not in detail and "leave-patient-out" in detail
    assert admin_client.get("/evaluations/999").status_code == 404


def test_ingestion_page_shows_status_counts(admin_client: FlaskClient, db, web_settings) -> None:  # type: ignore[no-untyped-def]
    """Counts per status, lag and recent failures with reasons (mammosearch.jobs.status)."""
    patient = make_patient(db)
    make_image(db, web_settings, patient, seed=5)
    make_image(db, web_settings, patient, seed=6, status="failed", error="x.png: truncated")
    page = admin_client.get("/admin/ingestion").get_data(as_text=True)
    assert "Waiting to be embedded" in page and "Images" in page and "Oldest waiting image" in page
    assert "x.png: truncated" in page


def test_ingestion_page_counts_claims_nobody_holds(
    admin_client: FlaskClient,
    db,
    web_settings,  # type: ignore[no-untyped-def]
) -> None:
    """A claim whose lease ran out long ago (its process was killed) is flagged, with what
    hands it out again."""
    from datetime import timedelta

    from mammosearch.db.models import utcnow

    patient = make_patient(db)
    make_image(
        db,
        web_settings,
        patient,
        seed=7,
        status="claimed",
        error="claimed by gone-host#r1/99",
        updated_at=utcnow() - timedelta(hours=1),
    )
    page = admin_client.get("/admin/ingestion").get_data(as_text=True)
    assert "1 claimed image held by nobody" in page
    assert "mammosearch_claims_abandoned 1.0" in admin_client.get("/metrics").get_data(as_text=True)


def test_admin_creates_a_user_who_can_sign_in(admin_client: FlaskClient, db) -> None:  # type: ignore[no-untyped-def]
    """The users page lists users and adds one; a bad role or short password is a 400 message."""
    new_user = {"username": "newrad", "password": "long-enough-words-1", "role": "radiologist"}
    response = admin_client.post("/admin/users", data=new_user)
    assert response.status_code == 302
    assert authenticate(db, "newrad", "long-enough-words-1") is not None
    assert "newrad" in admin_client.get("/admin/users").get_data(as_text=True)
    short = admin_client.post(
        "/admin/users", data={"username": "x", "password": "short", "role": "radiologist"}
    )
    assert short.status_code == 400 and b"password too short" in short.data
    duplicate = admin_client.post(
        "/admin/users",
        data={"username": "newrad", "password": "long-enough-words-1", "role": "admin"},
    )
    assert duplicate.status_code == 400 and b"already exists" in duplicate.data
    assert db.scalar(select(User).where(User.username == "x")) is None


def test_audit_page_lists_and_filters_events(
    admin_client: FlaskClient,
    radiologist_client: FlaskClient,
    db,
    web_settings,  # type: ignore[no-untyped-def]
) -> None:
    """Admins read who viewed what; filtering by action keeps only those events."""
    image = make_image(db, web_settings, make_patient(db), seed=6)
    radiologist_client.get(f"/cases/{image.id}")
    page = admin_client.get("/admin/audit?action=view_image").get_data(as_text=True)
    assert "view_image" in page and "rad" in page and "login" not in page.split('id="audit"')[1]
    everything = admin_client.get("/admin/audit").get_data(as_text=True)
    assert "login" in everything


def test_unknown_page_is_a_404_page(radiologist_client: FlaskClient) -> None:
    """No stack trace, a page with the status."""
    response = radiologist_client.get("/no/such/page")
    assert response.status_code == 404 and b"<h1>404</h1>" in response.data


def test_responses_carry_security_headers(client: FlaskClient) -> None:
    """CSP without external sources, no framing, no sniffing, no caching of patient pages."""
    response = client.get("/login")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


def test_the_search_page_offers_the_newest_searchable_cases(
    radiologist_client: FlaskClient,
    db,
    web_settings,  # type: ignore[no-untyped-def]
) -> None:
    """A new user's first screen has cases to start from; pending images are not offered."""
    patient = make_patient(db, "P9")
    indexed = make_image(db, web_settings, patient, seed=3, status="indexed")
    pending = make_image(db, web_settings, patient, seed=4)
    page = radiologist_client.get("/search").get_data(as_text=True)
    assert 'id="recent-cases"' in page
    assert f'name="image_id" value="{indexed.id}"' in page
    assert f'name="image_id" value="{pending.id}"' not in page


def test_an_empty_archive_says_how_to_fill_it(radiologist_client: FlaskClient) -> None:
    page = radiologist_client.get("/search").get_data(as_text=True)
    assert "mammosearch ingest cdd-cesm" in page
