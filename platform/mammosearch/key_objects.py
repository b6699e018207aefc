""""Keep with the study": a DICOM Key Object Selection document (KOS) that stores a case
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
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

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
    "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
    "StudyDate", "StudyTime", "ReferringPhysicianName",
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
    text = f"Mammosearch similar cases ({space_name}): " + "; ".join(
        case.label for case in cases
    )
    if left_out:
        text += f". Not in the archive as DICOM: {'; '.join(left_out)}"
    text += ". Decision support, not a diagnosis."
    return text if len(text) <= DESCRIPTION_CHARS else text[: DESCRIPTION_CHARS - 1] + "…"


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
    document = KeyObjectSelectionDocument(
        evidence=evidence,
        content=content,
        series_instance_uid=generate_uid(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
    )
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
    document.CurrentRequestedProcedureEvidenceSequence = _reference_sequence(
        query_refs + similar
    )
    return document
