"""A damaged index never looks like an answer: it is quarantined, refused, and healed from the
database, under the command line and under a running server (the Flask test client).

One small archive (six synthetic images, both metrics) is indexed once; every test damages a
copy of it the way a disk, an operator or a stray `cp` would.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from flask.testing import FlaskClient
from sqlalchemy import select

from mammosearch.access.users import create_api_token
from mammosearch.cli import main
from mammosearch.config import Settings, get_settings
from mammosearch.db.models import EmbeddingSpace, Image
from mammosearch.db.session import clear_engines, make_session_factory
from mammosearch.index import ShardedIndex, clear_readers, space_writer_lock
from mammosearch.pipeline.index_stage import index_space
from mammosearch.pipeline.process import process_pending
from tests.factories import make_image, make_patient, make_user
from tests.unit.web_support import app_config, fresh_sqlite, login, make_settings
from web import create_app

IMAGES = 6
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Settings:
    """Six synthetic images, embedded and indexed under l2 and cosine; a user `rad`."""
    root = tmp_path_factory.mktemp("damage-archive")
    settings = make_settings(root / "data", fresh_sqlite(sqlite_template, root / "db"))
    session = make_session_factory(settings.database_url)()
    patient = make_patient(session, "A")
    for seed in range(IMAGES):
        make_image(session, settings, patient, seed=seed)
    make_user(session, "rad", "radiologist")
    token = create_api_token(session, make_user(session, "robot", "radiologist"))
    session.commit()
    session.close()
    (root / "token").write_text(token)
    assert process_pending(settings).indexed == IMAGES
    clear_engines()  # the copies below must see a quiet file
    return settings


@pytest.fixture
def copy(archive: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A private copy of the archive (data and database), set in the environment for the CLI."""
    shutil.copytree(archive.data_dir, tmp_path / "data")
    database_file = Path(archive.database_url.split("///", 1)[1])
    shutil.copytree(database_file.parent, tmp_path / "db")
    settings = archive.with_overrides(
        data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'db' / database_file.name}"
    )
    environment = {
        "MAMMOSEARCH_DATA_DIR": str(settings.data_dir),
        "DATABASE_URL": settings.database_url,
        "MAMMOSEARCH_BACKBONE": settings.backbone,
        "MAMMOSEARCH_ALLOW_RANDOM_WEIGHTS": "1",
        "MAMMOSEARCH_INDEX_METRICS": ",".join(settings.index_metrics),
        "MAMMOSEARCH_EMBED_RUNTIME": settings.embed_runtime,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    get_settings.cache_clear()
    clear_readers()
    yield settings
    get_settings.cache_clear()
    clear_readers()


def _index_root(settings: Settings, metric: str = "cosine") -> Path:
    space_dirs = sorted(settings.index_dir.glob("space-*"))
    assert len(space_dirs) == 1
    return space_dirs[0] / metric


def _segment(settings: Settings, metric: str = "cosine") -> Path:
    manifest = json.loads((_index_root(settings, metric) / "manifest.json").read_text())
    return _index_root(settings, metric) / manifest["segments"][0]["file"]


def _truncate(settings: Settings) -> None:
    segment = _segment(settings)
    segment.write_bytes(segment.read_bytes()[: segment.stat().st_size // 2])


def _zero_fill(settings: Settings) -> None:
    segment = _segment(settings)
    segment.write_bytes(bytes(segment.stat().st_size))


def _delete_segment(settings: Settings) -> None:
    _segment(settings).unlink()


def _change_bytes_same_size(settings: Settings) -> None:
    segment = _segment(settings)
    content = bytearray(segment.read_bytes())
    for offset in range(len(content) // 2, len(content) // 2 + 16):
        content[offset] ^= 0x5A
    segment.write_bytes(bytes(content))


def _l2_over_cosine(settings: Settings) -> None:
    shutil.copyfile(_segment(settings, "l2"), _segment(settings, "cosine"))


def _empty_manifest(settings: Settings) -> None:
    (_index_root(settings) / "manifest.json").write_text("")


def _invalid_manifest(settings: Settings) -> None:
    (_index_root(settings) / "manifest.json").write_text('{"format": 1, "segments": [')


def _delete_manifest(settings: Settings) -> None:
    (_index_root(settings) / "manifest.json").unlink()


def _delete_indexes(settings: Settings) -> None:
    shutil.rmtree(settings.index_dir)


DAMAGE: dict[str, Callable[[Settings], None]] = {
    "truncated segment": _truncate,
    "zero-filled segment": _zero_fill,
    "deleted segment": _delete_segment,
    "same-size bytes changed": _change_bytes_same_size,
    "l2 segment over a cosine one": _l2_over_cosine,
    "manifest emptied": _empty_manifest,
    "manifest invalid JSON": _invalid_manifest,
    "manifest deleted": _delete_manifest,
    "indexes/ gone": _delete_indexes,
}


def _cli(*args: str) -> Result:
    get_settings.cache_clear()
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _an_image_id(settings: Settings) -> int:
    session = make_session_factory(settings.database_url)()
    try:
        return int(session.scalars(select(Image.id).order_by(Image.id)).first())
    finally:
        session.close()


def _search(image_id: int) -> Result:
    return _cli("search", "--image-id", str(image_id), "-k", str(IMAGES - 1), "--json")


def _assert_whole(image_id: int) -> None:
    result = _search(image_id)
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["results"]) == IMAGES - 1
    verified = _cli("index", "verify")
    assert verified.exit_code == 0 and "clean" in verified.output, verified.output


@pytest.mark.parametrize("damage", DAMAGE)
def test_the_cli_refuses_a_damaged_index_and_verify_repair_heals_it(
    copy: Settings, damage: str
) -> None:
    """search exits 1 saying the index is being repaired (never an empty list), verify says
    NOT clean, verify --repair rebuilds from the database, then all is found again."""
    image_id = _an_image_id(copy)
    DAMAGE[damage](copy)
    refused = _search(image_id)
    assert refused.exit_code == 1, refused.output
    assert "being repaired" in refused.output and f"of the {IMAGES} images" in refused.output
    checked = _cli("index", "verify")
    assert checked.exit_code == 1 and "NOT clean" in checked.output, checked.output
    repaired = _cli("index", "verify", "--repair")
    assert repaired.exit_code == 0 and "repaired" in repaired.output, repaired.output
    _assert_whole(image_id)


@pytest.mark.parametrize("damage", DAMAGE)
def test_rebuild_finishes_on_any_damage(copy: Settings, damage: str) -> None:
    """`index rebuild --yes` sets aside what it cannot read and rebuilds from the database."""
    image_id = _an_image_id(copy)
    DAMAGE[damage](copy)
    rebuilt = _cli("index", "rebuild", "--yes")
    assert rebuilt.exit_code == 0 and f"{IMAGES} vectors" in rebuilt.output, rebuilt.output
    _assert_whole(image_id)


@pytest.mark.parametrize("damage", ["same-size bytes changed", "manifest invalid JSON"])
def test_the_next_index_run_heals_without_an_operator(copy: Settings, damage: str) -> None:
    """An index run (what ingest, embed and the workers do) rebuilds what was lost first."""
    image_id = _an_image_id(copy)
    DAMAGE[damage](copy)
    session = make_session_factory(copy.database_url)()
    try:
        space = session.scalars(select(EmbeddingSpace)).one()
        assert index_space(session, copy, space) >= 1
    finally:
        session.close()
    _assert_whole(image_id)


def test_a_segment_quarantined_is_moved_aside_not_deleted(copy: Settings) -> None:
    """The damaged file is kept for the operator under quarantine/, out of the manifest."""
    segment = _segment(copy)
    _change_bytes_same_size(copy)
    assert _cli("index", "verify").exit_code == 1
    quarantined = list((segment.parent / "quarantine").iterdir())
    assert [path.name.split(".faiss")[0] for path in quarantined] == [segment.stem]
    manifest = json.loads((segment.parent / "manifest.json").read_text())
    assert segment.name not in {entry["file"] for entry in manifest["segments"]}


def _clients(settings: Settings) -> tuple[FlaskClient, FlaskClient]:
    """A browser signed in as `rad`, and a cookie-less API client, of one app."""
    app = create_app(app_config(settings))
    browser = app.test_client()
    assert login(browser, "rad").status_code == 302
    return browser, app.test_client()


@pytest.mark.parametrize(
    "damage", ["truncated segment", "same-size bytes changed", "manifest deleted", "indexes/ gone"]
)
def test_a_running_server_answers_503_until_it_has_repaired_itself(
    archive: Settings, copy: Settings, damage: str
) -> None:
    """API and page: 503 saying the index is being repaired (never [] nor a 500); /readyz
    fails naming the space; /metrics shows it; the server repairs it from the database."""
    image_id = _an_image_id(copy)
    client, api_client = _clients(copy)
    token = (Path(archive.data_dir).parent / "token").read_text()
    bearer = {"Authorization": f"Bearer {token}"}
    query = {"image_id": image_id, "k": IMAGES - 1}
    DAMAGE[damage](copy)
    session = make_session_factory(copy.database_url)()
    space_id = session.scalars(select(EmbeddingSpace.id)).one()
    session.close()

    scraped = client.get("/metrics").get_data(as_text=True)
    labels = f'backbone="{copy.backbone}",metric="cosine",space_id="{space_id}"'
    assert f"mammosearch_index_repairing{{{labels}}} 1.0" in scraped
    with space_writer_lock(copy.index_dir, space_id, "test holds the repair back"):
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert f"space {space_id}" in ready.json["checks"]["indexes"]["error"]
        assert ready.json["checks"]["indexes"]["spaces"] == [space_id]
        api = api_client.post("/api/v1/search", json=query, headers=bearer)
        assert api.status_code == 503 and "being repaired" in api.json["error"]
        assert api.headers["Retry-After"]
        cases = api_client.post("/api/v1/search", json={**query, "unit": "case"}, headers=bearer)
        assert cases.status_code == 503 and "being repaired" in cases.json["error"]
        page = client.post(  # the form's post of an archived query goes to its GET address
            "/search", data={"image_id": str(image_id), "k": str(IMAGES - 1)}, follow_redirects=True
        )
        assert page.status_code == 503 and "being repaired" in page.get_data(as_text=True)

    deadline = time.monotonic() + DEADLINE_S
    while True:
        api = api_client.post("/api/v1/search", json=query, headers=bearer)
        if api.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert api.status_code == 200, api.json
    assert len(api.json["results"]) == IMAGES - 1
    assert client.get("/readyz").status_code == 200


def test_a_segment_changed_in_place_under_a_live_reader_is_dropped_by_verify(
    tmp_path: Path,
) -> None:
    """A reader maps its segments: a file changed in place after loading changes what it
    serves. verify (the sweep's, every 30 s) re-hashes it, quarantines it and publishes a
    manifest without it, so the reader stops serving it at its next reload."""
    root = tmp_path / "idx"
    writer = ShardedIndex(root, 8, "cosine")
    writer.add(np.arange(6), np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32))
    reader = ShardedIndex(root, 8, "cosine")
    assert reader.ntotal == 6
    segment = root / writer._reader.view.manifest["segments"][0]["file"]
    with open(segment, "r+b") as handle:
        handle.seek(segment.stat().st_size // 2)
        handle.write(b"\xff" * 16)
    problems = writer.verify()
    assert len(problems) == 1 and "sha256 differs" in problems[0], problems
    assert reader.reload_if_changed() and reader.ntotal == 0 and writer.ntotal == 0


def test_verify_hashes_only_files_touched_since_their_last_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep verifies often: an untouched segment is not read whole again."""
    import mammosearch.index.segment_store as segment_store

    index = ShardedIndex(tmp_path / "idx", 8, "l2")
    index.add(np.arange(6), np.zeros((6, 8), dtype=np.float32))
    hashed: list[Path] = []
    real_sha256_of = segment_store.sha256_of
    monkeypatch.setattr(
        segment_store, "sha256_of", lambda path: hashed.append(path) or real_sha256_of(path)
    )
    assert index.verify() == [] and hashed == []
    fresh = ShardedIndex(tmp_path / "idx", 8, "l2")  # another process: hashes on load
    assert len(hashed) == 1 and fresh.verify() == [] and len(hashed) == 1


def test_any_page_that_meets_an_index_being_repaired_answers_503(web_settings: Settings) -> None:
    """The error handler's net: IndexRepairing from a view that forgot it is a 503, not a 500."""
    from mammosearch.pipeline.index_health import IndexHealth, IndexRepairing
    from web.access import public

    app = create_app(app_config(web_settings))

    @public
    def searches_somewhere() -> str:
        raise IndexRepairing(IndexHealth(7, "fake", "cosine", expected=6, served=2))

    app.add_url_rule("/api/v1/elsewhere", view_func=searches_somewhere)
    answer = app.test_client().get("/api/v1/elsewhere")
    assert answer.status_code == 503
    assert "space 7 (fake, cosine) is being repaired: it serves 2 of the 6" in answer.json["error"]


@pytest.mark.parametrize("command", [["index", "stats"], ["index", "merge"], ["index", "compact"]])
def test_other_index_commands_name_an_unreadable_manifest(
    copy: Settings, command: list[str]
) -> None:
    """No traceback from any index command: the problem in one line and the way back."""
    _invalid_manifest(copy)
    result = _cli(*command)
    assert result.exit_code == 1, result.output
    assert "manifest.json: not valid JSON" in result.output
    assert "mammosearch index verify --repair" in result.output
