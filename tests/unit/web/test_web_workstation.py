"""The workstation's admin pages: audit filters and export, ingestion, evaluations, metrics."""

from __future__ import annotations

import csv
import io
from datetime import datetime

from flask.testing import FlaskClient
from sqlalchemy import select

from mammosearch.db.models import AuditEvent
from tests.factories import make_patient


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
    admin_client: FlaskClient,
    db,  # type: ignore[no-untyped-def]
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
    assert "view_report" in days and "other" in days and "2026-03-01" not in days
    narrow = admin_client.get(
        "/admin/audit?username=other&action=view_image&until=2026-03-03"
    ).get_data(as_text=True)
    assert _audit_rows(narrow).count("<tr>") == 2 and "P13" in _audit_rows(narrow)


def test_audit_refuses_bad_pages_and_dates(admin_client: FlaskClient) -> None:
    """A page of letters, zero, or far past any log, and a date that is none, are 400s."""
    for query in (
        "page=abc",
        "page=0",
        "page=-1",
        "page=99999999999999999999",
        "since=yesterday",
        "since=2026-03-05&until=2026-03-01",
    ):
        response = admin_client.get(f"/admin/audit?{query}")
        assert response.status_code == 400, query
    assert admin_client.get("/admin/audit?page=2").status_code == 200


def test_audit_export_streams_the_filtered_rows_as_csv_and_is_audited(
    admin_client: FlaskClient,
    db,  # type: ignore[no-untyped-def]
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
    admin_client: FlaskClient,
    db,
    web_settings,  # type: ignore[no-untyped-def]
) -> None:
    """Vectors and bytes (in KiB) per index with its FAISS factory, read from the manifest;
    the last import's counts and lines; no server path."""
    import json

    from mammosearch.db.models import EmbeddingSpace
    from mammosearch.ingest.import_record import record_import

    space = EmbeddingSpace(
        backbone="efficientnet-lite0", weights_sha256="ab" * 32, weights_source="/srv/w.onnx",
        pretrained=True, preprocessing_version=1, dim=8,
    )  # fmt: skip
    db.add(space)
    db.commit()
    root = web_settings.layout.index_root(space.id, "cosine")
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


# --- evaluations ---------------------------------------------------------------------------


def test_a_cli_run_without_a_report_gets_its_figures_on_its_page(
    admin_client: FlaskClient,
    db,
    web_settings,  # type: ignore[no-untyped-def]
) -> None:
    """Curves, the neighbours' vote and the 2-D map are drawn for any finished run, once,
    and served as PNGs; metrics read as a metric x k table with 3 decimals."""
    from mammosearch.db.models import EvaluationRun
    from mammosearch.evaluate import evaluate_space
    from tests.unit.evaluate.test_evaluate_space import seed_archive

    space = seed_archive(db)
    result = evaluate_space(db, web_settings, space, metric="cosine", ks=(1, 5), trigger="cli")
    run = db.get(EvaluationRun, result.run_id)
    assert run.report_path is None
    page = admin_client.get(f"/evaluations/{run.id}").get_data(as_text=True)
    figures = page.split("<h2>Figures</h2>")[1].split("</div>")[0]
    assert figures.count('class="run-figure"') == 3
    for name in ("curves.png", "confusion-cosine.png", "projection.png"):
        png = admin_client.get(f"/evaluations/{run.id}/figures/figures/{name}")
        assert png.status_code == 200 and png.data[:4] == b"\x89PNG", name
    db.refresh(run)
    assert run.report_path and str(web_settings.reports_dir) in run.report_path
    grid = page.split('id="metrics"')[1].split("</table>")[0]
    assert "k = 1" in grid and "k = 5" in grid and "chance" in grid
    assert f"{result.metrics['precision@5']:.3f}" in grid
    per_class = page.split('id="per-class"')[1].split("</table>")[0]
    assert "Precision@5" in per_class and "mAP" in per_class
    assert str(web_settings.data_dir) not in page


def _wait_for(client: FlaskClient, url: str, timeout_s: float = 60.0) -> dict:  # type: ignore[type-arg]
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(url).get_json()
        if job["state"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def test_an_admin_starts_an_evaluation_in_process_and_follows_it(
    admin_client: FlaskClient,
    db,
    web_settings,  # type: ignore[no-untyped-def]
) -> None:
    """No broker: a thread evaluates every active space for each metric; the job's JSON
    goes from queued to done with the runs (trigger "web", with figures); it is audited."""
    from mammosearch.db.models import EvaluationRun
    from tests.unit.evaluate.test_evaluate_space import seed_archive

    seed_archive(db)
    response = admin_client.post("/evaluations/start")
    assert response.status_code == 302 and "job=web-" in response.headers["Location"]
    job_id = response.headers["Location"].split("job=")[1]
    page = admin_client.get(f"/evaluations?job={job_id}").get_data(as_text=True)
    assert f'data-status-url="/evaluations/jobs/{job_id}"' in page
    job = _wait_for(admin_client, f"/evaluations/jobs/{job_id}")
    assert job["state"] == "done", job
    assert job["fraction"] == 1.0 and {run["metric"] for run in job["runs"]} == {"l2", "cosine"}
    db.expire_all()
    runs = db.scalars(select(EvaluationRun).where(EvaluationRun.task_id == job_id)).all()
    assert {run.trigger for run in runs} == {"web"} and all(run.report_path for run in runs)
    started = db.scalars(select(AuditEvent).where(AuditEvent.action == "start_evaluation")).one()
    assert started.detail["task_id"] == job_id and started.detail["mode"] == "in-process"
    assert admin_client.get("/evaluations/jobs/nonsense").status_code == 404


def test_with_a_broker_the_evaluation_goes_to_the_evaluate_queue(
    app,
    admin_client: FlaskClient,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    """The page hands the work to the queue's enqueue_evaluation (Celery: the evaluate
    queue) and reads the task's progress from the result backend."""
    sent = []

    class Broker(_BrokerQueue):
        def enqueue_evaluation(self, label="birads", trigger="schedule", task_id=None,  # type: ignore[no-untyped-def]
                               progress=None):  # fmt: skip
            sent.append((label, trigger))
            return "celery-task-1"

    app.extensions["mammosearch_work_queue"] = Broker({"mode": "broker", "queues": {}})
    import workers.enqueue

    monkeypatch.setattr(workers.enqueue, "task_progress", lambda settings, task_id: {
        "state": "PROGRESS", "meta": {"stage": "evaluating", "space_id": 3, "metric": "l2",
                                      "queries_done": 40, "queries_total": 100, "fraction": 0.2},
    })  # fmt: skip
    response = admin_client.post("/evaluations/start")
    assert response.headers["Location"].endswith("job=celery-task-1")
    assert sent == [("birads", "web")]
    job = admin_client.get("/evaluations/jobs/celery-task-1").get_json()
    assert job["state"] == "running" and job["fraction"] == 0.2
    assert "40 of 100 queries" in job["stage"]


def test_the_celery_queue_sends_the_evaluation_by_name_to_the_evaluate_queue(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import workers.enqueue
    from mammosearch.config import Settings
    from workers.app import celery_app

    sent = []
    monkeypatch.setattr(workers.enqueue, "_send", lambda name, args, settings: sent.append(
        (name, args)) or "id-1")  # fmt: skip
    queue = workers.enqueue.CeleryWorkQueue(Settings(celery_broker_url="redis://127.0.0.1:1/0"))
    assert queue.enqueue_evaluation(trigger="web") == "id-1"
    assert sent == [("mammosearch.evaluate_active_space", ["birads", None, "web"])]
    route = celery_app.conf.task_routes["mammosearch.evaluate_active_space"]
    assert route == {"queue": "evaluate"}


# --- /metrics --------------------------------------------------------------------------------


def test_metrics_need_the_bearer_token_when_one_is_set(web_settings) -> None:  # type: ignore[no-untyped-def]
    """MAMMOSEARCH_METRICS_TOKEN set: no header, another scheme or a wrong token is a 401
    with WWW-Authenticate; the right token gets the Prometheus text."""
    from tests.unit.web_support import app_config
    from web import create_app

    client = create_app(app_config(web_settings, METRICS_TOKEN="s3cret-token")).test_client()
    for headers in ({}, {"Authorization": "Basic s3cret-token"},
                    {"Authorization": "Bearer wrong"}):  # fmt: skip
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    allowed = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert allowed.status_code == 200 and "mammosearch_images" in allowed.get_data(as_text=True)


def test_metrics_token_comes_from_the_settings(web_settings) -> None:  # type: ignore[no-untyped-def]
    """MAMMOSEARCH_METRICS_TOKEN is a setting like any other (settings_from_env reads it)."""
    from mammosearch.config import settings_from_env
    from tests.unit.web_support import app_config
    from web import create_app

    assert settings_from_env({"MAMMOSEARCH_METRICS_TOKEN": "from-env"}).metrics_token == "from-env"
    settings = web_settings.with_overrides(metrics_token="from-env")
    client = create_app(app_config(settings)).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer from-env"}).status_code == 200


def test_every_page_links_the_svg_favicon_and_it_is_served_to_anyone(client: FlaskClient) -> None:
    page = client.get("/login").get_data(as_text=True)
    assert '<link rel="icon" type="image/svg+xml" href="/static/favicon.svg">' in page
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
    assert client.get("/static/thumb-placeholder.svg").status_code == 200


def test_an_evaluation_whose_runs_all_fail_is_reported_failed_with_the_reason(
    admin_client: FlaskClient,
    db,  # type: ignore[no-untyped-def]
) -> None:
    """One patient per class: leave-patient-out finds no relevant candidate for anyone."""
    import numpy as np

    from tests.factories import make_bare_image, make_space, make_vector

    space = make_space(db)
    for number in range(3):
        patient = make_patient(db, f"F{number}", None, commit=False)
        image = make_bare_image(
            db, patient, commit=False, source_file_name=f"F{number}.jpg", birads=1 + number
        )
        make_vector(db, image, space, np.ones(8, dtype=np.float32) * (number + 1), commit=False)
    db.commit()
    job_id = admin_client.post("/evaluations/start").headers["Location"].split("job=")[1]
    job = _wait_for(admin_client, f"/evaluations/jobs/{job_id}")
    assert job["state"] == "failed" and job["error"], job
    assert {run["status"] for run in job["runs"]} == {"failed"}
