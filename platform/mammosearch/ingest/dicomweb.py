"""A study in the connected archive, fetched through DICOMweb, as case queries (one per breast).

QIDO-RS finds the study (by StudyInstanceUID or accession number), WADO-RS fetches its
instances, and each mammogram is rendered as the archive's own images are (ingest.dicom),
so a study searched from the archive gives the same vectors as the same files imported.
The client is the maintained `dicomweb-client`; Orthanc serves DICOMweb through its
`orthanc-dicomweb` plugin at <orthanc>/dicom-web.
"""

from __future__ import annotations

import copy
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from PIL import Image as PILImage
from pydicom.dataset import Dataset

from mammosearch.config import Settings
from mammosearch.ingest.dicom import check_modality, dicom_metadata, render_dataset
from mammosearch.ingest.storage import ImageRejected

log = logging.getLogger(__name__)

SIDES = ("R", "L")  # the reading order of a study's breasts
VIEW_ORDER = ("CC", "MLO")  # craniocaudal first, as a study is hung


class DicomwebError(RuntimeError):
    """The DICOMweb server could not be reached or answered with an error."""


class StudyNotFound(LookupError):
    """No study in the archive has this StudyInstanceUID or accession number."""


@dataclass(frozen=True)
class StudyView:
    """One mammogram of a study: its view, its rendered pixels and the UIDs that name it."""

    view: str | None
    image: PILImage.Image
    sop_instance_uid: str
    series_instance_uid: str | None
    sop_class_uid: str | None
    header: bytes = field(default=b"", repr=False)  # the instance as DICOM, pixel data left out


@dataclass(frozen=True)
class StudyCase:
    """One breast of a study: the case a search asks about (CC before MLO)."""

    side: str
    views: tuple[StudyView, ...]


@dataclass(frozen=True)
class DicomwebStudy:
    """A fetched study: its identity, a case per breast, and the instances left out (why)."""

    study_instance_uid: str
    accession_number: str | None
    patient_id: str | None
    cases: tuple[StudyCase, ...]
    skipped: tuple[str, ...] = field(default=())

    def case(self, side: str) -> StudyCase | None:
        return next((case for case in self.cases if case.side == side), None)


def dicomweb_url(settings: Settings) -> str | None:
    """The archive's DICOMweb root: MAMMOSEARCH_DICOMWEB_URL, else Orthanc's plugin path."""
    if settings.dicomweb_url:
        return settings.dicomweb_url.rstrip("/")
    if settings.orthanc_url:
        return settings.orthanc_url.rstrip("/") + "/dicom-web"
    return None


def archive_client(base_url: str, timeout_s: float) -> Any:
    """A DICOMweb client of the archive that tries once (see below)."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=base_url.rstrip("/"), timeout=timeout_s)
    # A person waits on the answer: one try, and the error names the server, rather than
    # the client's default five tries with exponential waits (30 s for a server that is down).
    client.set_http_retry_params(retry=False)
    return client


def _value(attributes: dict[str, Any], tag: str) -> str | None:
    """One value of a DICOM JSON attribute (QIDO-RS answers in DICOM JSON)."""
    values = (attributes.get(tag) or {}).get("Value") or []
    if not values:
        return None
    first = values[0]
    if isinstance(first, dict):  # a person name
        first = first.get("Alphabetic")
    text = str(first).strip() if first is not None else ""
    return text or None


STUDY_UID_TAG, ACCESSION_TAG, PATIENT_ID_TAG = "0020000D", "00080050", "00100020"


def find_study(
    base_url: str,
    *,
    study_uid: str | None = None,
    accession: str | None = None,
    timeout_s: float = 30.0,
    client: Any = None,
) -> tuple[str, str | None, str | None]:
    """QIDO-RS: the study's (StudyInstanceUID, accession number, patient id).

    Raises StudyNotFound when nothing matches, DicomwebError when the server fails or when an
    accession number names several studies (the UID must then be given).
    """
    if not study_uid and not accession:
        raise ValueError("give a StudyInstanceUID or an accession number")
    wanted = {"StudyInstanceUID": study_uid} if study_uid else {"AccessionNumber": accession}
    shown = f"study {study_uid}" if study_uid else f"accession number {accession}"
    client = client or archive_client(base_url, timeout_s)
    try:
        matches = client.search_for_studies(
            search_filters=wanted, fields=["AccessionNumber", "PatientID"]
        )
    except requests.RequestException as exc:
        raise DicomwebError(f"{base_url}: QIDO-RS for {shown} failed ({exc})") from exc
    if not matches:
        raise StudyNotFound(f"{shown}: not in the archive at {base_url}")
    uids = {_value(match, STUDY_UID_TAG) for match in matches}
    if len(uids) > 1:
        raise DicomwebError(
            f"{shown} names {len(uids)} studies in the archive; open the study by its "
            "StudyInstanceUID instead"
        )
    match = matches[0]
    return (
        _value(match, STUDY_UID_TAG) or str(study_uid),
        _value(match, ACCESSION_TAG),
        _value(match, PATIENT_ID_TAG),
    )


def _view_rank(view: StudyView) -> tuple[int, str]:
    code = view.view or ""
    return (VIEW_ORDER.index(code) if code in VIEW_ORDER else len(VIEW_ORDER), code)


def _header_bytes(ds: Dataset) -> bytes:
    """The instance's tags as a DICOM file without its pixels: what a search reads its side,
    view and modality from (the pixels travel decoded, beside it)."""
    header = copy.copy(ds)
    del header.PixelData
    header.preamble = b"\x00" * 128  # a Part 10 file, recognised as DICOM by its content
    buffer = io.BytesIO()
    header.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def cases_by_side(
    datasets: Iterable[Dataset], settings: Settings
) -> tuple[tuple[StudyCase, ...], tuple[str, ...]]:
    """A study's instances -> one case per breast (R, then L) and what was left out, and why.

    Instances that are not accepted mammograms (a report, a key object selection, another
    modality) or that state no laterality cannot join a case; each is named with its reason.
    """
    by_side: dict[str, list[StudyView]] = {}
    skipped: list[str] = []
    for ds in datasets:
        metadata = dicom_metadata(ds)
        name = f"instance {metadata['sop_instance_uid'] or '?'}"
        if "PixelData" not in ds:
            skipped.append(f"{name}: no pixel data (Modality {metadata['modality'] or '?'})")
            continue
        try:
            check_modality(ds, name, settings.accepted_modalities)
            if metadata["side"] not in SIDES:
                raise ImageRejected(f"{name}: no ImageLaterality/Laterality, so no breast")
            image = render_dataset(ds, name, settings.max_image_pixels)
        except ImageRejected as exc:
            skipped.append(str(exc))
            continue
        by_side.setdefault(metadata["side"], []).append(
            StudyView(
                view=metadata["view"],
                image=image,
                sop_instance_uid=metadata["sop_instance_uid"] or "",
                series_instance_uid=metadata["series_instance_uid"],
                sop_class_uid=metadata["sop_class_uid"],
                header=_header_bytes(ds),
            )
        )
    cases = tuple(
        StudyCase(side=side, views=tuple(sorted(by_side[side], key=_view_rank)))
        for side in SIDES
        if side in by_side
    )
    return cases, tuple(skipped)


def fetch_study(
    base_url: str,
    settings: Settings,
    *,
    study_uid: str | None = None,
    accession: str | None = None,
    timeout_s: float = 60.0,
) -> DicomwebStudy:
    """Find a study (QIDO-RS), fetch its instances (WADO-RS) and group them per breast.

    Raises StudyNotFound, or DicomwebError when the server fails or the study holds no
    mammogram a case can be made of (the message lists why each instance was left out).
    """
    client = archive_client(base_url, timeout_s)
    uid, accession_number, patient_id = find_study(
        base_url, study_uid=study_uid, accession=accession, client=client
    )
    try:
        datasets: Sequence[Dataset] = client.retrieve_study(uid)
    except requests.RequestException as exc:
        raise DicomwebError(f"{base_url}: WADO-RS for study {uid} failed ({exc})") from exc
    cases, skipped = cases_by_side(datasets, settings)
    for reason in skipped:
        log.info("study %s: left out %s", uid, reason)
    if not cases:
        reasons = "; ".join(skipped) or "it has no instances"
        raise DicomwebError(f"study {uid}: no mammogram to search with ({reasons})")
    return DicomwebStudy(
        study_instance_uid=uid,
        accession_number=accession_number,
        patient_id=patient_id,
        cases=cases,
        skipped=skipped,
    )
