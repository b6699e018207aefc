"""A page is audited once with the images it showed; its thumbnails are not logged again,
and an auditor asking about a patient still finds every page that showed the patient's images.
"""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.access.audit import AuditFilter, count_found, find_events, record_access
from mammosearch.config import Settings
from mammosearch.db.models import AuditEvent, ImageStatus, User
from mammosearch.db.session import make_session_factory
from tests.factories import make_bare_images, make_image, make_patient


def _events(db: Session) -> list[tuple[str, int | None]]:
    db.expire_all()
    return [
        (event.action, event.image_id)
        for event in db.scalars(
            select(AuditEvent).where(AuditEvent.action != "login").order_by(AuditEvent.id)
        )
    ]


def test_a_case_pages_thumbnails_are_recorded_by_its_event_once(
    radiologist_client: FlaskClient, db: Session, web_settings: Settings
) -> None:
    """The case event lists the patient's other images: their thumbnails (both sizes) write
    nothing more; a thumbnail of an image the page did not list is still an event."""
    patient = make_patient(db, "P1")
    shown, other = (make_image(db, web_settings, patient, seed=seed) for seed in (1, 2))
    elsewhere = make_image(db, web_settings, make_patient(db, "P2"), seed=3)
    assert radiologist_client.get(f"/cases/{shown.id}").status_code == 200
    for image in (shown, other):
        for size in ("", "?size=" + str(2 * radiologist_client.application.config[
                "THUMBNAIL_SIZE_PX"])):  # fmt: skip
            assert radiologist_client.get(f"/cases/{image.id}/thumbnail{size}").status_code == 200
    assert radiologist_client.get(f"/cases/{elsewhere.id}/thumbnail").status_code == 200
    assert _events(db) == [("view_image", shown.id), ("view_thumbnail", elsewhere.id)]


def test_the_recent_cases_page_is_one_event_for_all_its_thumbnails(
    radiologist_client: FlaskClient, db: Session, web_settings: Settings
) -> None:
    """The search page's recent cases: one event listing them, no event per thumbnail."""
    patient = make_patient(db, "P1")
    images = [
        make_image(db, web_settings, patient, seed=seed, status=ImageStatus.INDEXED)
        for seed in range(3)
    ]
    assert radiologist_client.get("/search").status_code == 200
    for image in images:
        assert radiologist_client.get(f"/cases/{image.id}/thumbnail").status_code == 200
    (event,) = db.scalars(select(AuditEvent).where(AuditEvent.action != "login"))
    assert event.action == "view_recent_cases"
    assert sorted(event.detail["shown_image_ids"]) == sorted(image.id for image in images)


def test_a_patient_filter_finds_the_pages_that_showed_the_patients_images(
    settings: Settings,
) -> None:
    """On SQLite and PostgreSQL: a search by P1's image whose results showed P2's image is
    found for P2, as are the case and recent-cases pages that listed it; nothing else is."""
    session = make_session_factory(settings.database_url)()
    first, second = make_patient(session, "P1"), make_patient(session, "P2")
    (p1_image,) = make_bare_images(session, first, 1)
    p2_image, p2_other = make_bare_images(session, second, 2)
    user = User(username="rad", username_key="rad", password_hash="x", role="radiologist")
    session.add(user)
    session.commit()
    record_access(session, user, "search", first.id, p1_image,
                  {"result_image_ids": [p2_other, p1_image]})  # fmt: skip
    record_access(session, user, "view_recent_cases", None, None,
                  {"shown_image_ids": [p2_image]})  # fmt: skip
    record_access(session, user, "view_image", first.id, p1_image, {"other_image_ids": []})
    record_access(session, user, "search", first.id, p1_image, {"result_image_ids": [p1_image]})
    session.commit()
    found = find_events(session, AuditFilter(patient="P2"))
    assert sorted(row.event.action for row in found) == ["search", "view_recent_cases"]
    assert count_found(session, AuditFilter(patient="P2")) == 2
    assert count_found(session, AuditFilter(patient="P1")) == 3
    session.close()
