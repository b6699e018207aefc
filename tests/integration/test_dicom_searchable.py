"""Real DICOM mammograms pushed by a PACS end up searchable, with the right side and view:
through the C-STORE receiver (a real `mammosearch dicom-listen` process) and through
Orthanc's change feed (`mammosearch orthanc-follow`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
import requests
from click.testing import CliRunner
from pydicom.uid import ExplicitVRLittleEndian, RLELossless
from pynetdicom import AE
from pynetdicom.sop_class import (
    DigitalMammographyXRayImageStorageForPresentation,
    SecondaryCaptureImageStorage,
)
from sqlalchemy import select

from bench.processes import free_port
from mammosearch.cli import main
from mammosearch.config import Settings
from mammosearch.db.models import Image, ImageStatus
from mammosearch.db.session import session_scope
from mammosearch.ingest.dicom import read_dicom
from mammosearch.search.service import SearchService
from tests.dicom_samples import real_mammograms

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
MAMMOSEARCH = str(Path(sys.executable).with_name("mammosearch"))


def _expected_side_and_view() -> dict[str, tuple[str, str]]:
    """SOPInstanceUID -> (side, view) as the DICOM tags give them."""
    expected = {}
    for path in real_mammograms():
        metadata = read_dicom(path, path.name).metadata
        expected[metadata["sop_instance_uid"]] = (metadata["side"], metadata["view"])
    return expected


def _wait_until_indexed(settings: Settings, count: int, timeout_s: float = 180) -> list[Image]:
    deadline = time.monotonic() + timeout_s
    while True:
        with session_scope(settings.database_url) as session:
            images = session.scalars(select(Image).order_by(Image.id)).all()
        if len(images) == count and all(i.status == ImageStatus.INDEXED for i in images):
            return images
        if time.monotonic() > deadline:
            pytest.fail(f"not indexed in time: {[(i.id, i.status, i.error) for i in images]}")
        time.sleep(0.5)


def _assert_searchable_with_tags(settings: Settings, images: list[Image]) -> None:
    expected = _expected_side_and_view()
    assert {i.sop_instance_uid: (i.side, i.view) for i in images} == expected
    assert {view for _, view in expected.values()} == {"CC", "MLO"}
    service = SearchService(settings)
    with session_scope(settings.database_url) as session:
        response = service.search_image_id(session, images[0].id, k=5, metric="cosine")
        assert len(response.results) == 5
        assert all(hit.side in {"L", "R"} and hit.view in {"CC", "MLO"} for hit in response.results)
        upload = read_dicom(real_mammograms()[0], "query.dcm").image
        by_upload = service.search_image(session, upload, k=3, metric="l2")
    first = pydicom.dcmread(real_mammograms()[0]).SOPInstanceUID
    top = next(i for i in images if i.id == by_upload.results[0].image_id)
    assert top.sop_instance_uid == first


def test_mammograms_pushed_over_c_store_become_searchable(
    pg_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": pg_settings.database_url,
        "MAMMOSEARCH_DATA_DIR": str(pg_settings.data_dir),
        "MAMMOSEARCH_BACKBONE": "efficientnet-lite0",
    }
    env.pop("CELERY_BROKER_URL", None)
    log = (tmp_path / "listener.log").open("w")
    listener = subprocess.Popen(
        [MAMMOSEARCH, "dicom-listen", "--port", str(port), "--bind", "127.0.0.1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        scu = AE(ae_title="MODALITY")
        for sop_class in (
            SecondaryCaptureImageStorage,  # what the CBIS-DDSM files are
            DigitalMammographyXRayImageStorageForPresentation,
        ):
            for syntax in (RLELossless, ExplicitVRLittleEndian):
                scu.add_requested_context(sop_class, syntax)
        deadline = time.monotonic() + 60
        while True:
            assoc = scu.associate("127.0.0.1", port, ae_title="MAMMOSEARCH")
            if assoc.is_established:
                break
            assert listener.poll() is None, (tmp_path / "listener.log").read_text()
            assert time.monotonic() < deadline, "listener did not come up"
            time.sleep(0.5)
        try:
            statuses = [assoc.send_c_store(pydicom.dcmread(p)).Status for p in real_mammograms()]
        finally:
            assoc.release()
        assert statuses == [0x0000] * len(real_mammograms())
        images = _wait_until_indexed(pg_settings, len(real_mammograms()))
        assert {i.source for i in images} == {"dicom-cstore"}
        _assert_searchable_with_tags(pg_settings, images)
    finally:
        os.killpg(listener.pid, signal.SIGTERM)
        try:
            listener.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(listener.pid, signal.SIGKILL)
            listener.wait()
        log.close()


def test_mammograms_stored_in_orthanc_become_searchable(
    pg_settings: Settings, orthanc_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAMMOSEARCH_BACKBONE", "efficientnet-lite0")
    from mammosearch.config import get_settings

    get_settings.cache_clear()
    for path in real_mammograms():
        requests.post(f"{orthanc_url}/instances", data=path.read_bytes(), timeout=60)
    result = CliRunner().invoke(main, ["orthanc-follow", "--url", orthanc_url, "--once"])
    assert result.exit_code == 0, result.output
    images = _wait_until_indexed(pg_settings, len(real_mammograms()), timeout_s=5)
    assert {i.source for i in images} == {"orthanc"}
    _assert_searchable_with_tags(pg_settings, images)
    again = json.dumps(CliRunner().invoke(main, ["status", "--json"]).output)
    assert '\\"total\\": 8' in again
