"""A study as case queries, one per breast: from the archive's own rows when the study is
archived (its StudyInstanceUID), else from the connected archive through DICOMweb."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from mammosearch.db.models import Image, ImageStatus
from mammosearch.ingest.dicomweb import SIDES, StudyCase
from mammosearch.search.case_search import QueryUpload


def archived_breasts(session: Session, study_uid: str) -> list[str]:
    """The breasts (R, then L) of a study whose images are searchable here."""
    sides = set(
        session.scalars(
            select(Image.side)
            .where(Image.study_instance_uid == study_uid)
            .where(Image.status.in_((ImageStatus.INDEXED, ImageStatus.EMBEDDED)))
            .distinct()
        )
    )
    return [side for side in SIDES if side in sides]


def case_uploads(case: StudyCase) -> list[QueryUpload]:
    """A fetched breast's views as query files: tags from the header, pixels already decoded."""
    return [
        QueryUpload(
            f"{case.side} {view.view or '?'} (instance {view.sop_instance_uid})",
            view.header,
            view.image,
        )
        for view in case.views
    ]
