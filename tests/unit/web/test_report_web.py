"""The web service's view of evaluation runs: comparison, figures, progress, regression banner."""

from __future__ import annotations

from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from mammosearch.db.models import EvaluationRun

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def add_run(db: Session, precision: float, **changes: object) -> EvaluationRun:
    values: dict = {"status": "done", "trigger": "schedule", **changes}
    run = EvaluationRun(
        protocol="patient-excluded", label="birads", metric="cosine",
        metrics={"precision@10": precision, "map": 0.3}, **values,
    )  # fmt: skip
    db.add(run)
    db.commit()
    return run


def test_detail_compares_with_the_previous_run_and_shows_its_figures(
    admin_client: FlaskClient, radiologist_client: FlaskClient, db: Session, tmp_path: Path
) -> None:
    """Deltas against the previous run; figures served only from the run's own list."""
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "curves.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(PNG)
    previous = add_run(db, 0.5)
    run = add_run(
        db, 0.4, report_path=str(tmp_path), config={"report_figures": ["figures/curves.png"]},
        flagged=True, flag_reason="precision@10 dropped",
    )  # fmt: skip
    page = admin_client.get(f"/evaluations/{run.id}").get_data(as_text=True)
    assert "Against the previous run" in page and f"/evaluations/{previous.id}" in page
    assert "-0.1000" in page and "dropped more than" in page
    figure_url = f"/evaluations/{run.id}/figures/figures/curves.png"
    assert figure_url in page
    for client in (admin_client, radiologist_client):
        response = client.get(figure_url)
        assert response.status_code == 200 and response.data == PNG
        assert response.mimetype == "image/png"
    assert admin_client.get(f"/evaluations/{run.id}/figures/secret.png").status_code == 404
    assert admin_client.get(f"/evaluations/{run.id}/figures/../secret.png").status_code == 404
    assert admin_client.get(f"/evaluations/{previous.id}").status_code == 200


def test_admins_see_the_regression_banner_on_every_page_until_they_acknowledge(
    admin_client: FlaskClient, radiologist_client: FlaskClient, db: Session
) -> None:
    """The banner names the flagged run; radiologists never see it; acknowledging clears it."""
    add_run(db, 0.5)
    flagged = add_run(db, 0.2, flagged=True, flag_reason="precision@10 0.500 -> 0.200")
    for path in ("/", "/evaluations"):
        page = admin_client.get(path, follow_redirects=True).get_data(as_text=True)
        assert "regression-banner" in page and f"run #{flagged.id}" in page
    page = radiologist_client.get("/", follow_redirects=True).get_data(as_text=True)
    assert "regression-banner" not in page
    response = admin_client.post(f"/evaluations/{flagged.id}/acknowledge")
    assert response.status_code == 302
    page = admin_client.get("/evaluations").get_data(as_text=True)
    assert "regression-banner" not in page and "flagged" in page  # still marked in the list


def test_a_running_evaluation_shows_its_progress(admin_client: FlaskClient, db: Session) -> None:
    """EvaluationRun.progress (fed by the worker) appears as a progress bar with the task id."""
    run = add_run(db, 0.0, status="running", progress=0.4, task_id="abc-123")
    listing = admin_client.get("/evaluations").get_data(as_text=True)
    assert '<progress value="0.4"' in listing
    detail = admin_client.get(f"/evaluations/{run.id}").get_data(as_text=True)
    assert 'id="run-progress"' in detail and "40%" in detail and "abc-123" in detail
