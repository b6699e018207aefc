"""Fixtures for integration tests that run third-party servers."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bench.processes import free_port

ORTHANC = shutil.which("Orthanc")


DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@pytest.fixture(scope="module")
def orthanc_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Orthanc on loopback ports with its own storage, stopped afterwards."""
    yield from _run_orthanc(tmp_path_factory, dicomweb=False)


@pytest.fixture(scope="module")
def orthanc_dicomweb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Orthanc with its DICOMweb plugin (QIDO-RS, WADO-RS, STOW-RS at /dicom-web)."""
    if not DICOMWEB_PLUGIN.exists():
        pytest.skip("Orthanc's DICOMweb plugin not installed (apt-get install orthanc-dicomweb)")
    yield from _run_orthanc(tmp_path_factory, dicomweb=True)


def _run_orthanc(tmp_path_factory: pytest.TempPathFactory, dicomweb: bool) -> Iterator[str]:
    if ORTHANC is None:
        pytest.skip("Orthanc not installed (apt-get install orthanc)")
    root = tmp_path_factory.mktemp("orthanc")
    http_port = free_port()
    config = {
        "Name": "mammosearch-test",
        "HttpPort": http_port,
        "DicomPort": free_port(),
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpCompressionEnabled": False,
        "SyncStorageArea": False,
        "Plugins": [str(DICOMWEB_PLUGIN)] if dicomweb else [],
    }
    if dicomweb:
        config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full"}
    (root / "orthanc.json").write_text(json.dumps(config))
    log = (root / "orthanc.log").open("w")
    process = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/system", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Orthanc did not start: {(root / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:  # its storage is a temp dir: nothing to lose
            process.kill()
            process.wait(timeout=10)
        log.close()
