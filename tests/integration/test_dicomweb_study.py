"""A study in a real Orthanc, found by QIDO-RS and fetched by WADO-RS (its DICOMweb plugin)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from mammosearch.config import Settings
from mammosearch.ingest.dicomweb import DicomwebError, StudyNotFound, fetch_study, find_study
from tests.dicom_samples import dicom_bytes, make_dataset, ramp, real_mammograms

pytestmark = pytest.mark.skipif(
    shutil.which("Orthanc") is None, reason="Orthanc not installed (apt-get install orthanc)"
)
STUDY_UID = generate_uid()
ACCESSION = "ACC-173"


def one_study(paths: list[Path]) -> list[bytes]:
    """Patient 00173's four CBIS-DDSM views (four studies there) as one hospital study."""
    files = []
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PatientID = "P-00173"
        ds.StudyInstanceUID = STUDY_UID
        ds.AccessionNumber = ACCESSION
        files.append(dicom_bytes(ds))
    return files


@pytest.fixture(scope="module")
def study_in_orthanc(orthanc_dicomweb_url: str) -> str:
    """Orthanc holding one study: two breasts, CC and MLO each, and a CT slice beside them."""
    paths = [p for p in real_mammograms() if "1-13" in p.name]  # patient 00173's four views
    ct = make_dataset(ramp(), laterality="L", view="CC", Modality="CT")
    ct.StudyInstanceUID, ct.AccessionNumber, ct.PatientID = STUDY_UID, ACCESSION, "P-00173"
    for content in [*one_study(paths), dicom_bytes(ct)]:
        stored = requests.post(f"{orthanc_dicomweb_url}/instances", data=content, timeout=60)
        stored.raise_for_status()
    return f"{orthanc_dicomweb_url}/dicom-web"


def test_a_study_found_by_accession_becomes_one_case_per_breast(
    study_in_orthanc: str, tmp_path: Path
) -> None:
    """Right then left, CC above MLO, full-size pixels; the CT slice is named as left out."""
    settings = Settings(data_dir=tmp_path)
    study = fetch_study(study_in_orthanc, settings, accession=ACCESSION)
    assert study.study_instance_uid == STUDY_UID and study.patient_id == "P-00173"
    assert [case.side for case in study.cases] == ["R", "L"]
    for case in study.cases:
        assert [view.view for view in case.views] == ["CC", "MLO"]
        assert all(view.image.mode == "L" and view.image.height > 4000 for view in case.views)
    assert len(study.skipped) == 1 and "Modality CT is not accepted" in study.skipped[0]
    by_uid = fetch_study(study_in_orthanc, settings, study_uid=STUDY_UID)
    assert [v.sop_instance_uid for c in by_uid.cases for v in c.views] == [
        v.sop_instance_uid for c in study.cases for v in c.views
    ]


def test_an_unknown_study_or_a_dead_server_says_which(study_in_orthanc: str) -> None:
    with pytest.raises(StudyNotFound, match="accession number NOPE: not in the archive"):
        find_study(study_in_orthanc, accession="NOPE")
    with pytest.raises(DicomwebError, match="QIDO-RS for study 1.2.3 failed"):
        find_study("http://127.0.0.1:9/dicom-web", study_uid="1.2.3", timeout_s=2)
