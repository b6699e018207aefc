"""The C-STORE receiver, driven by real DICOM clients over TCP on loopback:
pynetdicom's SCU (sends the RLE originals) and dcmtk's storescu (a third-party client)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless
from pynetdicom import AE
from pynetdicom.sop_class import (
    DigitalMammographyXRayImageStorageForPresentation,
    SecondaryCaptureImageStorage,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bench.processes import free_port
from mammosearch.db.models import Image
from mammosearch.ingest.dicom_listener import start_listener
from tests.dicom_samples import (
    make_dataset,
    ramp,
    real_mammograms,
    settings_for,
    sqlite_session_factory,
)

AE_TITLE = "MAMMOSEARCH"


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[int, sessionmaker[Session], list[int]]]:
    """A running listener on a free loopback port: (port, session factory, hooked image ids)."""
    session_factory = sqlite_session_factory(tmp_path)
    settings = settings_for(tmp_path, str(session_factory.kw["bind"].url))
    hooked: list[int] = []
    port = free_port()
    server = start_listener(
        session_factory,
        settings,
        port=port,
        ae_title=AE_TITLE,
        bind="127.0.0.1",
        on_registered=[hooked.append],
    )
    yield port, session_factory, hooked
    server.shutdown()


def _send(port: int, datasets: list[Dataset]) -> list[Dataset]:
    """Send with pynetdicom's Storage SCU; the C-STORE response of each dataset."""
    scu = AE(ae_title="TESTSCU")
    mammography = DigitalMammographyXRayImageStorageForPresentation
    for sop_class in (SecondaryCaptureImageStorage, mammography):
        for syntax in (RLELossless, ExplicitVRLittleEndian):  # one context each, as SCUs do
            scu.add_requested_context(sop_class, syntax)
    assoc = scu.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(ds) for ds in datasets]
    finally:
        assoc.release()


def _image_count(session_factory: sessionmaker[Session]) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(Image))


def test_pushed_rle_mammograms_are_registered_and_a_resend_adds_nothing(listener) -> None:
    port, session_factory, hooked = listener
    datasets = [pydicom.dcmread(p) for p in real_mammograms()[:2]]
    statuses = [r.Status for r in _send(port, datasets)]
    assert statuses == [0x0000, 0x0000]
    assert _image_count(session_factory) == 2 and len(hooked) == 2
    with session_factory() as session:
        sides = session.scalars(select(Image.side).order_by(Image.id)).all()
        assert sides == ["L", "L"]
        assert {i.source for i in session.scalars(select(Image))} == {"dicom-cstore"}

    assert [r.Status for r in _send(port, datasets[:1])] == [0x0000]
    assert _image_count(session_factory) == 2 and len(hooked) == 2


def test_a_dataset_without_pixels_is_answered_with_an_error_status(listener) -> None:
    port, session_factory, hooked = listener
    ds = make_dataset(ramp())
    del ds.PixelData
    response = _send(port, [ds])[0]
    assert response.Status == 0xC000
    assert "no pixel data" in response.ErrorComment
    assert _image_count(session_factory) == 0 and hooked == []


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk's storescu not installed")
def test_dcmtk_storescu_can_push_an_uncompressed_mammogram(listener, tmp_path: Path) -> None:
    """storescu refuses the originals' odd-length pixel data; an uncompressed re-encoding
    (pydicom: decompress, save) is what a modality would send."""
    port, session_factory, hooked = listener
    original = pydicom.dcmread(real_mammograms()[2])  # benign RIGHT CC
    original.decompress()
    path = tmp_path / "right-cc.dcm"
    original.save_as(path, enforce_file_format=True)
    completed = subprocess.run(
        ["storescu", "-aet", "DCMTK", "-aec", AE_TITLE, "127.0.0.1", str(port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    with session_factory() as session:
        image = session.scalars(select(Image)).one()
        assert (image.side, image.view, image.sop_instance_uid) == (
            "R",
            "CC",
            original.SOPInstanceUID,
        )
    assert hooked == [image.id]


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk's storescu not installed")
def test_dcmtk_storescu_pushes_an_rle_original_when_asked_to_propose_rle(listener) -> None:
    """By default storescu proposes only uncompressed syntaxes and fails to decompress the
    odd-length originals; with -xr it proposes RLE Lossless, which the listener accepts."""
    port, session_factory, hooked = listener
    path = real_mammograms()[7]  # malignant RIGHT MLO
    completed = subprocess.run(
        ["storescu", "-xr", "-aec", AE_TITLE, "127.0.0.1", str(port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    with session_factory() as session:
        image = session.scalars(select(Image)).one()
        assert (image.side, image.view) == ("R", "MLO")
    assert hooked == [image.id]
