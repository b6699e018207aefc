"""Following a real Orthanc's change feed into the real PostgreSQL."""

from __future__ import annotations

import shutil
import time

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import func, select

from mammosearch.cli import main
from mammosearch.config import Settings
from mammosearch.db.models import Image, SourceCursor
from mammosearch.db.session import make_session_factory
from mammosearch.ingest.orthanc import OrthancError, default_cursor_name, follow_orthanc
from tests.dicom_samples import dicom_bytes, make_dataset, ramp, real_mammograms

ORTHANC = shutil.which("Orthanc")
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(ORTHANC is None, reason="Orthanc not installed (apt-get install orthanc)"),
]


def _upload(url: str, content: bytes) -> str:
    response = requests.post(f"{url}/instances", data=content, timeout=60)
    response.raise_for_status()
    return response.json()["ID"]


class _DropsThirdDownload(requests.Session):
    """An HTTP client whose connection breaks on the third instance download."""

    downloads = 0

    def get(self, url, **kwargs):  # type: ignore[override]
        if url.endswith("/file"):
            self.downloads += 1
            if self.downloads == 3:
                raise requests.ConnectionError("connection reset (injected)")
        return super().get(url, **kwargs)


def test_follower_registers_each_new_instance_once_and_resumes_after_a_failure(
    orthanc_url: str, pg_settings: Settings
) -> None:
    for path in real_mammograms():
        _upload(orthanc_url, path.read_bytes())
    session_factory = make_session_factory(pg_settings.database_url)
    hooked: list[int] = []

    with pytest.raises(OrthancError, match="unreachable"):
        follow_orthanc(
            session_factory,
            orthanc_url,
            pg_settings,
            http=_DropsThirdDownload(),
            on_registered=[hooked.append],
        )
    instance_seqs = [
        c["Seq"]
        for c in requests.get(f"{orthanc_url}/changes?limit=1000").json()["Changes"]
        if c["ChangeType"] == "NewInstance"
    ]
    cursor_name = default_cursor_name(orthanc_url)
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 2
        assert session.get(SourceCursor, cursor_name).value == {"since": instance_seqs[1]}

    started = time.perf_counter()
    resumed = follow_orthanc(
        session_factory, orthanc_url, pg_settings, limit=5, on_registered=[hooked.append]
    )
    print(f"followed 6 instances in {time.perf_counter() - started:.2f} s")
    assert resumed == 6 and len(hooked) == 8
    assert follow_orthanc(session_factory, orthanc_url, pg_settings) == 0
    with session_factory() as session:
        images = session.scalars(select(Image)).all()
        assert len({i.sop_instance_uid for i in images}) == 8
        by_patient = {i.patient.source_patient_id: (i.side, i.view) for i in images}
        assert by_patient["Mass-Test_P_00173_LEFT_CC"] == ("L", "CC")
        assert by_patient["Mass-Test_P_00820_RIGHT_MLO"] == ("R", "MLO")
        assert {i.source for i in images} == {"orthanc"}

    no_pixels = make_dataset(ramp(), patient_id="SR-1")
    del no_pixels.PixelData
    _upload(orthanc_url, dicom_bytes(no_pixels))  # e.g. a report: skipped, not stuck on
    _upload(orthanc_url, dicom_bytes(make_dataset(ramp(), patient_id="NEW-1", laterality="R")))
    assert follow_orthanc(session_factory, orthanc_url, pg_settings) == 1
    last_seq = requests.get(f"{orthanc_url}/changes?last").json()["Last"]
    with session_factory() as session:
        assert session.get(SourceCursor, cursor_name).value == {"since": last_seq}
        assert session.scalar(select(func.count()).select_from(Image)) == 9

    result = CliRunner().invoke(main, ["orthanc-follow", "--url", orthanc_url, "--once"])
    assert result.exit_code == 0, result.output
    assert f"0 new image(s) from {orthanc_url}" in result.output
