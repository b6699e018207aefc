"""What the case page shows around the image: the patient's studies laid out as a reading
room hangs them, where the case was found, and the link to the archive's own viewer."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from mammosearch.config import Settings
from mammosearch.db.models import Image
from mammosearch.search.cases import case_birads, case_pathology

HANGING_ORDER: tuple[tuple[str, str], ...] = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
"""Columns of a study: right and left side by side, craniocaudal first (the usual hanging)."""

MODALITY_ORDER = ("low-energy", "subtracted")
ARCHIVE_VIEWER_PLACEHOLDER = "{study_instance_uid}"


@dataclass
class StudyRow:
    """One modality of a study: an image (or None) per HANGING_ORDER column."""

    modality: str
    cells: list[Image | None]


@dataclass
class Study:
    """The images of one study: hung in rows, and the ones no column fits."""

    title: str
    rows: list[StudyRow] = field(default_factory=list)
    others: list[Image] = field(default_factory=list)

    @property
    def image_count(self) -> int:
        return sum(cell is not None for row in self.rows for cell in row.cells) + len(self.others)


def _study_key(image: Image) -> str:
    return image.study_instance_uid or image.study_date or ""


def _study_title(image: Image) -> str:
    if image.study_date:
        return f"Study of {image.study_date}"
    return "Study" if not image.study_instance_uid else f"Study {image.study_instance_uid}"


def _modality_rank(modality: str) -> tuple[int, str]:
    return (
        MODALITY_ORDER.index(modality) if modality in MODALITY_ORDER else len(MODALITY_ORDER),
        modality,
    )


def study_groups(images: Iterable[Image]) -> list[Study]:
    """The patient's images by study, each study as rows of R CC, L CC, R MLO, L MLO."""
    by_study: dict[str, list[Image]] = {}
    for image in sorted(images, key=lambda image: image.id):
        by_study.setdefault(_study_key(image), []).append(image)
    studies = []
    for members in by_study.values():
        study = Study(title=_study_title(members[0]))
        rows: dict[str, StudyRow] = {}
        for image in members:
            column = (image.side or "", (image.view or "").upper())
            modality = image.modality or "unknown"
            row = rows.setdefault(modality, StudyRow(modality, [None] * len(HANGING_ORDER)))
            if column in HANGING_ORDER and row.cells[HANGING_ORDER.index(column)] is None:
                row.cells[HANGING_ORDER.index(column)] = image
            else:  # unknown side or view, or a second image of the same slot
                study.others.append(image)
        study.rows = [
            rows[name]
            for name in sorted(rows, key=_modality_rank)
            if any(cell is not None for cell in rows[name].cells)
        ]
        studies.append(study)
    return studies


@dataclass(frozen=True)
class FoundAt:
    """Where a case stood in the results it was opened from."""

    rank: int
    similarity: float | None
    distance: float | None
    metric: str | None
    query_image_id: int | None


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def found_at(args: Mapping[str, str], metrics: Iterable[str]) -> FoundAt | None:
    """The results link's rank, similarity, distance and metric; None without a valid rank.

    The values only describe how the user got here (nothing is looked up with them), so a
    hand-edited link that does not parse shows no "found at" line instead of an error.
    """
    rank_text = args.get("rank", "")
    if not rank_text.isdigit() or int(rank_text) < 1:
        return None
    metric = args.get("metric")
    query_text = args.get("query", "")
    return FoundAt(
        rank=int(rank_text),
        similarity=_number(args.get("similarity")),
        distance=_number(args.get("distance")),
        metric=metric if metric in set(metrics) else None,
        query_image_id=int(query_text) if query_text.isdigit() else None,
    )


def is_dicom_origin(image: Image) -> bool:
    """Registered from DICOM (a file, C-STORE or Orthanc): the archive holds the original."""
    return bool(image.study_instance_uid)


def archive_viewer_link(settings: Settings, image: Image) -> str | None:
    """The study in the archive's viewer (MAMMOSEARCH_ARCHIVE_VIEWER_URL), for DICOM images.

    Only the rendered 8-bit PNG is stored here; the archive keeps the original DICOM with
    its full bit depth, found by the StudyInstanceUID that every DICOM image row records.
    """
    template = settings.archive_viewer_url
    if not template or not is_dicom_origin(image):
        return None
    uid = quote(image.study_instance_uid or "", safe="")
    if ARCHIVE_VIEWER_PLACEHOLDER in template:
        return template.replace(ARCHIVE_VIEWER_PLACEHOLDER, uid)
    return template + uid  # a URL that ends where the UID goes, e.g. "...?StudyInstanceUIDs="


@dataclass(frozen=True)
class CaseSummary:
    """The case the page's image belongs to: that breast in that study, all its views."""

    side: str | None
    views: list[Image]
    birads: int | None
    pathology: str | None
    findings: str | None


def case_summary(study: Study, image: Image) -> CaseSummary:
    """The breast of `image` in `study`: every view of that side, its BIRADS and pathology
    (the most suspicious view's, as case search has them) and the views' findings."""
    members = [cell for row in study.rows for cell in row.cells if cell is not None]
    views = [other for other in [*members, *study.others] if other.side == image.side]
    views = views or [image]
    findings = list(dict.fromkeys(view.findings.strip() for view in views if view.findings))
    return CaseSummary(
        side=image.side,
        views=sorted(views, key=lambda view: view.id),
        birads=case_birads(view.birads for view in views),
        pathology=case_pathology(view.pathology for view in views),
        findings="$".join(findings) or None,
    )


def study_of(studies: Iterable[Study], image: Image) -> Study:
    """The study (of study_groups) that holds `image`."""
    for study in studies:
        if image in study.others or any(image in row.cells for row in study.rows):
            return study
    raise LookupError(f"image {image.id}: in none of its patient's studies")


def hanging_row(study: Study, image: Image) -> list[Image | None]:
    """The four images hung with `image`: R CC, L CC, R MLO, L MLO of its study in its
    modality (a reader compares like with like); `image` itself where no column fits it."""
    for row in study.rows:
        if image in row.cells:
            return list(row.cells)
    cells: list[Image | None] = [None] * len(HANGING_ORDER)
    cells[0] = image
    return cells
