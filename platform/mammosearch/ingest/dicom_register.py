"""A DICOM file -> Patient/Image rows + a stored 8-bit PNG, once per image.

The rendered 8-bit PNG is the stored image (content-addressed under images/, like every
other image); an original deeper than 8 bits also leaves its grey levels as a 16-bit PNG
for the viewer's window/level (mammosearch.ingest.full_depth), with its pixel spacing.
The original DICOM stays in the sending archive (PACS, Orthanc), the record of the file.
An image is the same image when its SOPInstanceUID
or its rendered pixels (the PNG's sha256; encoding is deterministic) are already known:
the second arrival returns created=False and writes nothing. A known SOPInstanceUID with
different pixels is a conflict, not a repeat: InstanceConflict is raised naming both, the
stored image is kept as it is, and the sender (or the watch folder's report) is told.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import Image, ImageStatus, Patient
from mammosearch.ingest.dicom import DicomImage, read_dicom
from mammosearch.ingest.full_depth import store_full_depth
from mammosearch.ingest.patients import get_or_create_patient
from mammosearch.ingest.storage import CheckedImage, ImageRejected, store_image

log = logging.getLogger(__name__)

DICOM_PATIENT_SOURCE = "dicom"
"""PatientIDs from every DICOM path (files, C-STORE, Orthanc) share one namespace."""

ImageRegisteredHook = Callable[[int], None]
"""Called with the id of each newly created image, after its row is committed."""


class InstanceConflict(ImageRejected):
    """The SOPInstanceUID is already an image with other pixels; neither is dropped silently."""


@dataclass(frozen=True)
class RegisterResult:
    image_id: int
    created: bool


def encode_png(dicom: DicomImage) -> CheckedImage:
    """The rendered image as PNG bytes (fast zlib level: these are 10+ megapixel images)."""
    buffer = io.BytesIO()
    dicom.image.save(buffer, format="PNG", compress_level=1)
    content = buffer.getvalue()
    width, height = dicom.image.size
    return CheckedImage(
        content=content,
        sha256=hashlib.sha256(content).hexdigest(),
        format="PNG",
        width=width,
        height=height,
        suffix=".png",
    )


def _existing_image_id(session: Session, sop_instance_uid: str | None, sha256: str) -> int | None:
    if sop_instance_uid:
        found = session.scalar(select(Image.id).where(Image.sop_instance_uid == sop_instance_uid))
        if found is not None:
            return found
    return session.scalar(select(Image.id).where(Image.sha256 == sha256))


def _get_or_create_patient(session: Session, patient_id: str, age: int | None) -> Patient:
    patient, created = get_or_create_patient(session, DICOM_PATIENT_SOURCE, patient_id, age)
    if not created and patient.age is None and age is not None:
        patient.age = age
    return patient


def register_rendered(
    session: Session, dicom: DicomImage, name: str, settings: Settings, source: str = "dicom"
) -> RegisterResult:
    """Register an already-read DICOM image; the caller commits."""
    meta = dicom.metadata
    sop_instance_uid = meta.get("sop_instance_uid")
    png = encode_png(dicom)
    if sop_instance_uid:
        known = session.execute(
            select(Image.id, Image.sha256).where(Image.sop_instance_uid == sop_instance_uid)
        ).first()
        if known is not None:
            if known.sha256 != png.sha256:
                log.warning(
                    "DICOM instance conflict: image %d arrived again with other pixels", known.id
                )
                raise InstanceConflict(
                    f"{name}: SOPInstanceUID {sop_instance_uid} is already image {known.id} "
                    "with different pixels; the stored image is kept and this file was not "
                    "registered: check with the sending archive (a corrected image needs a "
                    "new SOPInstanceUID)"
                )
            return RegisterResult(known.id, created=False)
    found = _existing_image_id(session, None, png.sha256)
    if found is not None:
        return RegisterResult(found, created=False)
    if not meta.get("patient_id"):
        raise ImageRejected(f"{name}: DICOM file has no PatientID (0010,0020)")

    patient = _get_or_create_patient(session, meta["patient_id"], meta.get("patient_age"))
    stored_path = store_image(settings.images_dir, png)
    depth = dicom.full_depth
    image = Image(
        patient_id=patient.id,
        source=source,
        source_file_name=name[:512],
        sha256=png.sha256,
        stored_path=str(stored_path),
        side=meta.get("side"),
        view=meta.get("view"),
        modality=(meta.get("modality") or "dicom")[:32],
        width=png.width,
        height=png.height,
        pixel_spacing_mm=meta.get("pixel_spacing_mm"),
        full_depth=depth.as_row(store_full_depth(settings.images_dir, depth)) if depth else None,
        machine=(meta.get("manufacturer") or None),
        study_instance_uid=meta.get("study_instance_uid"),
        sop_instance_uid=sop_instance_uid,
        study_date=meta.get("study_date"),
        status=ImageStatus.PENDING,
    )
    try:
        with session.begin_nested():
            session.add(image)
    except IntegrityError:  # the same image arrived concurrently through another path
        found = _existing_image_id(session, sop_instance_uid, png.sha256)
        if found is None:
            raise
        return RegisterResult(found, created=False)
    # The id only at INFO: a file path or name can say who the patient is.
    log.info("registered DICOM image %d (%s %s)", image.id, image.side, image.view)
    log.debug("image %d came from %s", image.id, name)
    return RegisterResult(image.id, created=True)


def register_dicom(
    session: Session, content: bytes, name: str, settings: Settings, source: str = "dicom"
) -> RegisterResult:
    """Read, render, store and register one DICOM file; the caller commits.

    Raises ImageRejected (message starts with `name`) for anything that is not a
    usable DICOM image.
    """
    dicom = read_dicom(
        content,
        name,
        max_pixels=settings.max_image_pixels,
        modalities=settings.accepted_modalities,
        keep_full_depth=True,
    )
    return register_rendered(session, dicom, name, settings, source=source)
