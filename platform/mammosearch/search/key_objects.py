""" "Keep with the study": a DICOM Key Object Selection document (KOS) that stores a case
search's answer in the archive, in the query's study, so any PACS viewer opening the study
lists it and opens the similar cases' images from it.

The document (built with highdicom) is titled "Of Interest" (DCM 113000) and described as
Mammosearch's similar cases in the named embedding space; it references the query study's
searched views and every view of each similar case that came from DICOM (its Study, Series
and SOP Instance UIDs are in the archive). A result imported from JPEG/PNG has no DICOM
instance to point at: it is named in the description as left out.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

MANUFACTURER = "Mammosearch"
SERIES_NUMBER = 9901  # a series number far from a modality's, so the KOS series sorts last
DESCRIPTION_CHARS = 1024  # the text value's limit (VR UT is longer; viewers show 1 line)


@dataclass(frozen=True)
class InstanceRef:
    """One archived DICOM image a KOS points at."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str


@dataclass(frozen=True)
class SimilarCase:
    """One result case: how it is named in the description, and its DICOM views."""

    label: str  # e.g. "#1 patient 96 L breast, 93% similar"
    instances: tuple[InstanceRef, ...]


_PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def _evidence(header: Dataset) -> Dataset:
    """A query instance's header with the patient/study attributes highdicom copies (empty
    where the file has none: the KOS then says no more than the images do)."""
    evidence = copy.copy(header)
    for keyword in _PATIENT_STUDY_KEYWORDS:
        if keyword not in evidence:
            setattr(evidence, keyword, None)
    return evidence


def _reference_sequence(instances: Sequence[InstanceRef]) -> list[Dataset]:
    """The Hierarchical SOP Instance Reference macro: study -> series -> instances."""
    studies: dict[str, dict[str, list[InstanceRef]]] = {}
    for ref in instances:
        series = studies.setdefault(ref.study_instance_uid, {})
        series.setdefault(ref.series_instance_uid, []).append(ref)
    items = []
    for study_uid, series_map in studies.items():
        study_item = Dataset()
        study_item.StudyInstanceUID = study_uid
        study_item.ReferencedSeriesSequence = []
        for series_uid, refs in series_map.items():
            series_item = Dataset()
            series_item.SeriesInstanceUID = series_uid
            series_item.ReferencedSOPSequence = []
            for ref in refs:
                sop = Dataset()
                sop.ReferencedSOPClassUID = ref.sop_class_uid
                sop.ReferencedSOPInstanceUID = ref.sop_instance_uid
                series_item.ReferencedSOPSequence.append(sop)
            study_item.ReferencedSeriesSequence.append(series_item)
        items.append(study_item)
    return items


def describe(space_name: str, cases: Sequence[SimilarCase], left_out: Sequence[str]) -> str:
    """The document's one text: who made it, in which space, and what it lists."""
    text = f"Mammosearch similar cases ({space_name}): " + "; ".join(case.label for case in cases)
    if left_out:
        text += f". Not in the archive as DICOM: {'; '.join(left_out)}"
    text += ". Decision support, not a diagnosis."
    return text if len(text) <= DESCRIPTION_CHARS else text[: DESCRIPTION_CHARS - 1] + "…"


def _document(document_class: Any, evidence: list[Dataset], content: Any) -> Dataset:
    document: Dataset = document_class(
        evidence=evidence,
        content=content,
        series_instance_uid=generate_uid(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
    )
    return document


def similar_cases_document(
    query_headers: Sequence[Dataset],
    cases: Sequence[SimilarCase],
    space_name: str,
    left_out: Sequence[str] = (),
) -> Dataset:
    """The KOS for one case search: in the query's study, referencing its views and the
    similar cases' views.

    `query_headers`: the query views' DICOM headers (pixels not needed), all of one study.
    highdicom builds the document around the query study; the similar cases, in other
    studies, are added as image items and as Current Requested Procedure Evidence (the
    KOS's full list of what it references), which highdicom leaves to the caller.
    """
    from highdicom.ko import KeyObjectSelection, KeyObjectSelectionDocument
    from highdicom.sr import CodedConcept, ImageContentItem, RelationshipTypeValues
    from pydicom.sr.codedict import codes

    if not query_headers:
        raise ValueError("a key object selection needs the query study's instances")
    evidence = [_evidence(header) for header in query_headers]
    content = KeyObjectSelection(
        document_title=codes.DCM.OfInterest,
        referenced_objects=evidence,
        description=describe(space_name, cases, left_out),
    )
    with warnings.catch_warnings():  # the names are copied as the images spell them
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person")
        document = _document(KeyObjectSelectionDocument, evidence, content)
    document.SeriesDescription = f"Mammosearch similar cases ({space_name})"[:64]
    similar = [ref for case in cases for ref in case.instances]
    source = CodedConcept(value="260753009", scheme_designator="SCT", meaning="Source")
    for ref in similar:  # named as highdicom names the query's references
        document.ContentSequence.append(
            ImageContentItem(
                name=source,
                referenced_sop_class_uid=ref.sop_class_uid,
                referenced_sop_instance_uid=ref.sop_instance_uid,
                relationship_type=RelationshipTypeValues.CONTAINS,
            )
        )
    query_refs = [
        InstanceRef(h.StudyInstanceUID, h.SeriesInstanceUID, h.SOPInstanceUID, h.SOPClassUID)
        for h in query_headers
    ]
    document.CurrentRequestedProcedureEvidenceSequence = _reference_sequence(query_refs + similar)
    return document


SERIES_UID_TAG, SOP_CLASS_TAG, SOP_INSTANCE_TAG = "0020000E", "00080016", "00080018"


def _archive_instances(client: Any, study_uid: str) -> dict[str, tuple[str, str]]:
    """QIDO-RS: SOPInstanceUID -> (SeriesInstanceUID, SOPClassUID) of a study in the archive
    (our rows keep the study and instance UIDs; the series and class come from the archive,
    which also proves the instance is there to be opened)."""
    import requests

    try:
        found = client.search_for_instances(
            study_instance_uid=study_uid, fields=["SeriesInstanceUID", "SOPClassUID"]
        )
    except requests.RequestException:
        return {}  # not in this archive (or not readable): the case is named as left out

    def value(item: dict[str, Any], tag: str) -> str | None:
        values = (item.get(tag) or {}).get("Value") or []
        return str(values[0]) if values else None

    instances = {}
    for item in found:
        sop, series, sop_class = (
            value(item, tag) for tag in (SOP_INSTANCE_TAG, SERIES_UID_TAG, SOP_CLASS_TAG)
        )
        if sop and series and sop_class:
            instances[sop] = (series, sop_class)
    return instances


def _similar_cases(
    session: Session, client: Any, response: Any
) -> tuple[list[SimilarCase], list[str]]:
    """A case search's results as references to the archive's instances; a result none of
    whose views the archive holds (imported from JPEG/PNG, or another archive's) is named."""
    from mammosearch.db.models import Image

    image_ids = [view.image_id for hit in response.results for view in hit.views]
    rows = {row.id: row for row in session.scalars(select(Image).where(Image.id.in_(image_ids)))}
    by_study: dict[str, dict[str, tuple[str, str]]] = {}
    cases, left_out = [], []
    for hit in response.results:
        closeness = (
            f"{max(hit.similarity, 0) * 100:.0f}% similar"
            if response.metric == "cosine"
            else f"distance {hit.distance:.3g}"
        )
        label = f"#{hit.rank} patient {hit.patient_id} {hit.side or '?'} breast, {closeness}"
        refs = []
        for view in hit.views:
            row = rows.get(view.image_id)
            if row is None or not row.study_instance_uid or not row.sop_instance_uid:
                continue
            if row.study_instance_uid not in by_study:
                by_study[row.study_instance_uid] = _archive_instances(
                    client, row.study_instance_uid
                )
            known = by_study[row.study_instance_uid].get(row.sop_instance_uid)
            if known is not None:
                refs.append(
                    InstanceRef(row.study_instance_uid, known[0], row.sop_instance_uid, known[1])
                )
        if refs:
            cases.append(SimilarCase(label, tuple(refs)))
        else:
            left_out.append(label)
    return cases, left_out


def _no_bulk_data(tag: str, vr: str, uri: str) -> None:
    return None


def space_name(embedding_space: dict[str, Any]) -> str:
    """The space a document names: backbone and the first digits of its weights."""
    weights = (embedding_space.get("weights_sha256") or "")[:12]
    return " ".join(part for part in (embedding_space.get("backbone"), weights) if part)


def keep_with_study(
    session: Session,
    base_url: str,
    study_uid: str,
    side: str,
    response: Any,
    timeout_s: float = 60.0,
) -> Dataset:
    """Store a KOS of one breast's case search in the study (STOW-RS); returns the document.

    The query views are the study's accepted mammograms of that breast, read back by
    WADO-RS metadata (their headers become the document's patient and study).
    Raises DicomwebError when the archive cannot be read or written.
    """
    import requests

    from mammosearch.ingest.dicom import dicom_metadata
    from mammosearch.ingest.dicomweb import DicomwebError, archive_client

    client = archive_client(base_url, timeout_s)
    try:
        metadata = client.retrieve_study_metadata(study_uid)
    except requests.RequestException as exc:
        raise DicomwebError(
            f"{base_url}: WADO-RS metadata of study {study_uid} failed ({exc})"
        ) from exc
    # Bulk data (pixels, large private values) stays in the archive: headers are enough.
    headers = [Dataset.from_json(item, bulk_data_uri_handler=_no_bulk_data) for item in metadata]
    query_headers = [
        header
        for header in headers
        if dicom_metadata(header)["side"] == side
        and "Rows" in header
        and str(header.get("Modality", "")).upper() != "KO"
    ]
    if not query_headers:
        raise DicomwebError(f"study {study_uid}: no {side} breast image to keep the cases with")
    cases, left_out = _similar_cases(session, client, response)
    document = similar_cases_document(
        query_headers, cases, space_name(response.embedding_space), left_out
    )
    try:
        client.store_instances([document])
    except requests.RequestException as exc:
        raise DicomwebError(f"{base_url}: STOW-RS of the key object failed ({exc})") from exc
    return document
