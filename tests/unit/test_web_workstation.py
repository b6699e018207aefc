"""The workstation's admin pages: audit filters and export, ingestion, evaluations, metrics."""

from __future__ import annotations

import csv
import io
from datetime import datetime

from flask.testing import FlaskClient
from sqlalchemy import select

from mammosearch.db.models import AuditEvent
from tests.unit.web_support import make_patient


def _event(db, action: str, when: str, username: str = "rad", patient=None) -> AuditEvent:  # type: ignore[no-untyped-def]
    event = AuditEvent(
        username=username, action=action, patient_id=patient.id if patient else None,
        created_at=datetime.fromisoformat(when),
    )  # fmt: skip
    db.add(event)
    db.commit()
    return event


def _audit_rows(page: str) -> str:
    return page.split('id="audit"')[1].split("</table>")[0]


def test_audit_filters_by_the_patients_own_id_user_action_and_days(
    admin_client: FlaskClient, db  # type: ignore[no-untyped-def]
) -> None:
    """Patient_ID as the sheet spells it (not the row id), user, action and an inclusive
    range of UTC days each narrow the rows; the rows name the patient by that ID."""
    p12, p13 = make_patient(db, "P12"), make_patient(db, "P13")
    _event(db, "view_image", "2026-03-01T10:00:00", patient=p12)
    _event(db, "view_report", "2026-03-02T23:59:00", patient=p12)
    _event(db, "view_image", "2026-03-03T08:00:00", username="other", patient=p13)
    by_patient = _audit_rows(admin_client.get("/admin/audit?patient=P12").get_data(as_text=True))
    assert by_patient.count("<tr>") == 3 and ">P12<" in by_patient and "P13" not in by_patient
    by_row_id = admin_client.get(f"/admin/audit?patient={p13.id}").get_data(as_text=True)
    assert "No event matches" in by_row_id
    days = _audit_rows(
        admin_client.get("/admin/audit?since=2026-03-02&until=2026-03-03").get_data(as_text=True)
    )
    assert "view report" in days and "other" in days and "2026-03-01" not in days
    narrow = admin_client.get(
        "/admin/audit?username=other&action=view_image&until=2026-03-03"
    ).get_data(as_text=True)
    assert _audit_rows(narrow).count("<tr>") == 2 and "P13" in _audit_rows(narrow)


def test_audit_refuses_bad_pages_and_dates(admin_client: FlaskClient) -> None:
    """A page of letters, zero, or far past any log, and a date that is none, are 400s."""
    for query in ("page=abc", "page=0", "page=-1", "page=99999999999999999999",
                  "since=yesterday", "since=2026-03-05&until=2026-03-01"):
        response = admin_client.get(f"/admin/audit?{query}")
        assert response.status_code == 400, query
    assert admin_client.get("/admin/audit?page=2").status_code == 200


def test_audit_export_streams_the_filtered_rows_as_csv_and_is_audited(
    admin_client: FlaskClient, db  # type: ignore[no-untyped-def]
) -> None:
    """Every matching event (not one page), with the patient's own ID; then an
    export_audit event records who exported what."""
    patient = make_patient(db, "P40")
    for minute in range(130):
        _event(db, "view_image", f"2026-04-01T10:{minute // 60:02d}:{minute % 60:02d}",
               patient=patient)  # fmt: skip
    _event(db, "search", "2026-04-01T12:00:00")
    response = admin_client.get("/admin/audit.csv?patient=P40&action=view_image")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 130 and {row["patient"] for row in rows} == {"P40"}
    assert rows[0]["when_utc"] == "2026-04-01 10:02:09"  # newest first
    export = db.scalars(select(AuditEvent).where(AuditEvent.action == "export_audit")).one()
    assert export.username == "boss"
    assert export.detail == {"filters": {"patient": "P40", "action": "view_image"}, "events": 130}


def test_audit_page_links_the_export_with_its_filters(admin_client: FlaskClient, db) -> None:  # type: ignore[no-untyped-def]
    page = admin_client.get("/admin/audit?username=rad&since=2026-01-01").get_data(as_text=True)
    assert 'href="/admin/audit.csv?username=rad&amp;since=2026-01-01"' in page


class _BrokerQueue:
    """A work queue whose depths() answers as a broker would (or fails to)."""

    mode = "broker"

    def __init__(self, depths: dict) -> None:  # type: ignore[type-arg]
        self._depths = depths

    def depths(self) -> dict:  # type: ignore[type-arg]
        return self._depths


def _queue_cells(page: str) -> str:
    return page.split('id="queues"')[1].split("</table>")[0]


def test_ingestion_page_shows_real_queue_depths_from_the_broker(app, admin_client) -> None:  # type: ignore[no-untyped-def]
    app.extensions["mammosearch_work_queue"] = _BrokerQueue(
        {"mode": "broker", "queues": {"ingest": 0, "embed": 17, "index": 2, "evaluate": 0,
                                      "train": 1}}
    )  # fmt: skip
    cells = _queue_cells(admin_client.get("/admin/ingestion").get_data(as_text=True))
    assert "Embed (compute vectors)" in cells and '<td class="num">17</td>' in cells
    assert "—" not in cells


def test_ingestion_page_says_why_queue_depths_are_unknown(app, admin_client) -> None:  # type: ignore[no-untyped-def]
    """In-process (no broker) and an unreachable broker: a dash, and the reason in words."""
    page = admin_client.get("/admin/ingestion").get_data(as_text=True)
    assert "—" in _queue_cells(page) and "no broker configured" in page
    app.extensions["mammosearch_work_queue"] = _BrokerQueue(
        {"mode": "broker", "queues": {}, "error": "broker unreachable: connection refused"}
    )
    page = admin_client.get("/admin/ingestion").get_data(as_text=True)
    assert "—" in _queue_cells(page) and "broker unreachable: connection refused" in page


def test_ingestion_page_shows_the_active_space_its_indexes_and_the_last_import(
    admin_client: FlaskClient, db, web_settings  # type: ignore[no-untyped-def]
) -> None:
    """Vectors and bytes (in KiB) per index with its FAISS factory, read from the manifest;
    the last import's counts and lines; no server path."""
    import json

    from mammosearch.db.models import EmbeddingSpace
    from mammosearch.import_record import record_import

    space = EmbeddingSpace(
        backbone="efficientnet-lite0", weights_sha256="ab" * 32, weights_source="/srv/w.onnx",
        pretrained=True, preprocessing_version=1, dim=8,
    )  # fmt: skip
    db.add(space)
    db.commit()
    root = web_settings.index_dir / f"space-{space.id}" / "cosine"
    root.mkdir(parents=True)
    segments = [
        {"file": "sealed-1.faiss", "kind": "sealed", "factory": "IVF16,Flat", "count": 1000,
         "deleted": [3, 4], "bytes": 3 * 1024 * 1024},
        {"file": "delta-2.faiss", "kind": "delta", "factory": "Flat", "count": 10, "deleted": [],
         "bytes": 512 * 1024},
    ]  # fmt: skip
    (root / "manifest.json").write_text(json.dumps({"format": 1, "segments": segments}))
    record_import(db, "CDD-CESM", {
        "folder": "cdd-cesm", "elapsed_s": 75.0,
        "counts": {"sheet_rows": 2006, "new": 1003, "missing": 0},
        "lines": ["1003 sheet rows describe low-energy images, which this folder does not hold "
                  "(expected for a subtracted-only export)"],
    })  # fmt: skip
    page = admin_client.get("/admin/ingestion").get_data(as_text=True)
    sizes = page.split('class="index-sizes"')[1].split("</table>")[0]
    assert "cosine similarity" in sizes and "1,008" in sizes and "3.5 MiB" in sizes
    assert "Flat, IVF16,Flat" in sizes and "not built yet" in sizes  # l2 has no manifest
    assert "efficientnet-lite0" in page and "/srv/" not in page
    last = page.split('id="last-import"')[1].split("</section>")[0]
    assert "cdd-cesm" in last and "1003" in last and "1 min 15 s" in last
    assert "which this folder does not hold" in last
