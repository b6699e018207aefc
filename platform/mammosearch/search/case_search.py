"""Case-level search, and the one entry every search goes through (`run_search`).

`run_search(service, session, request, uploads)` lives here, not on SearchService: service.py
is what this module builds on, and a method there calling back here would be an import cycle.

A case query (an archived case, or 1-4 files: the views of one breast) searches the index
with each of its views, over-fetching image hits; the hits' cases are read with all their
views, scored against the query case by a fusion rule (mammosearch.search.cases), and the nearest
cases come back, each once. The suggested BIRADS and pathology are the neighbour vote
(search.suggest_from_hits, mammosearch.search.vote) over the nearest cases' case labels, as sure
as the space's case-level measurement says (evaluate.runs.measured_vote with unit "case"
and the search's fusion: `evaluate --unit case`, or train's case-level cross-validation);
never an image-level table. Unmeasured: the labels are listed, nothing is put forward.

Over-fetching: each query view asks for `CASE_OVERFETCH` image hits per wanted case; when
fewer distinct cases come back than wanted while the index holds more, it asks again for
four times as many (at most `FETCH_ROUNDS` times). A case is a candidate when at least one
of its views is among a query view's hits, so best-pair is exact; mean and matched-views
rescore every candidate exactly, over all its views.

Filters apply to views: a case is made of its views that pass them, and a case none of
whose views passes is not a result. The query's own images are never results; its patient
is left out by default for unit=case and for an upload the archive holds
(SearchRequest.excludes_query_patient).

Several files with different sides (L and R) in one case query are refused with a message
that says so (`MixedSides`): one case is one breast, and two breasts' results in one list
would be read as one answer. A file whose side is unknown joins the others.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mammosearch.db.models import Image, ImageEmbedding, ImageStatus, Patient, Report
from mammosearch.search.cases import (
    CASE_FUSIONS,
    DEFAULT_FUSION,
    MAX_CASE_VIEWS,
    CaseKey,
    best_view_pairs,
    case_birads,
    case_key,
    case_pathology,
    fused_scores,
    group_starts,
    parse_case_id,
    view_tag,
)
from mammosearch.search.request import BadSearchRequest, SearchFilters, SearchRequest
from mammosearch.search.service import (
    REPORT_EXCERPT_CHARS,
    ImageNotFound,
    SearchEnvelope,
    SearchError,
    SearchResponse,
    distance_and_similarity,
    in_consensus_order,
    suggest_from_hits,
)
from mammosearch.search.vote import VOTE_K

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from mammosearch.search.service import SearchService

CASE_OVERFETCH = 6
"""Image hits fetched per query view for each case wanted (a case has 1-4 views)."""
FETCH_ROUNDS = 4


class MixedSides(SearchError):
    """Files of both breasts in one case query; the message names them."""


@dataclass(frozen=True)
class QueryUpload:
    """One query file as it arrived: its name (for messages) and its bytes; `image` when the
    caller already decoded it (read_query_image) for its own use, so it is not decoded twice."""

    name: str
    content: bytes
    image: PILImage.Image | None = field(default=None, compare=False, repr=False)


@dataclass
class QueryView:
    """One view of the query case: an uploaded file or an archived image."""

    name: str
    side: str | None
    view: str | None
    modality: str | None
    vector: np.ndarray = field(repr=False)
    image_id: int | None = None  # the archived image it is (by id, or recognised by sha256)
    patient_row_id: int | None = None  # patients.id of that image
    patient_id: str | None = None  # the source's patient id of that image

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "name": self.name,
            "image_id": self.image_id,
            "side": self.side,
            "view": self.view,
            "modality": self.modality,
        }
        if self.image_id is not None:
            described["archived_as"] = {"patient_id": self.patient_id, "image_id": self.image_id}
        return described


@dataclass
class CaseView:
    """One view of a result case; `similarity` to its nearest query view."""

    image_id: int
    side: str | None
    view: str | None
    modality: str
    birads: int | None
    birads_raw: str | None
    pathology: str | None
    findings: str | None
    source_file_name: str
    similarity: float


@dataclass
class CaseHit:
    """One similar case (one breast of one study) with all its views, in `ranking` order."""

    rank: int
    case_id: str
    patient_id: str  # the source's patient id
    study_uid: str | None
    side: str | None
    birads: int | None  # the case's: its most suspicious view's
    pathology: str | None  # the case's: its most severe view's
    findings: str | None
    report_excerpt: str | None
    distance: float
    similarity: float
    best_view_image_id: int  # the case's view nearest to a query view
    best_query_view: str  # that query view's name
    best_view_similarity: float
    views: list[CaseView] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        document = dict(vars(self))
        document["views"] = [dict(vars(view)) for view in self.views]
        return document


@dataclass
class CaseSearchResponse(SearchEnvelope):
    results: list[CaseHit] = field(default_factory=list)
    fusion: str = field(kw_only=True)
    unit: ClassVar[str] = "case"

    @property
    def shown_image_ids(self) -> list[int]:
        """Every view shown, for the audit."""
        return [view.image_id for hit in self.results for view in hit.views]

    def to_dict(self) -> dict[str, Any]:
        return self.envelope_dict([hit.to_dict() for hit in self.results], fusion=self.fusion)


def _metric(service: SearchService, request: SearchRequest) -> str:
    """The request's metric, else the default (set already when the request was parsed with
    the indexed metrics)."""
    return request.metric or ("cosine" if "cosine" in service.settings.index_metrics else "l2")


def run_search(
    service: SearchService,
    session: Session,
    request: SearchRequest,
    uploads: Sequence[QueryUpload] = (),
) -> SearchResponse | CaseSearchResponse:
    """Every search, validated once: `request` (SearchRequest) plus 0-4 uploaded files.

    Errors: BadSearchRequest (what is asked is inconsistent), SearchError (cannot be
    answered; MixedSides is one), ImageNotFound (an archived query that is not there, a 404),
    ImageRejected (a file that is not an image), IndexRepairing (the index cannot serve all
    it should: a 503).
    """
    if uploads and request.archived_query:
        raise BadSearchRequest(
            f"give one query, not both: the uploaded file {uploads[0].name!r} or an archived "
            "image/case; clear one and search again"
        )
    if not uploads and not request.archived_query:
        raise BadSearchRequest("give an image to upload or an archived image_id")
    if request.unit == "case":
        return search_cases(service, session, request, uploads)
    if len(uploads) > 1:
        raise BadSearchRequest(
            f"{len(uploads)} files: several files are the views of one case; set unit=case"
        )
    filters = request.search_filters()
    metric = _metric(service, request)
    if not uploads:
        assert request.image_id is not None  # unit=image: the one archived query it allows
        return service.search_image_id(
            session,
            request.image_id,
            request.k,
            metric,
            filters,
            request.excludes_query_patient(),
            ranking=request.ranking,
        )
    upload = uploads[0]
    archived = _archived_by_content(session, [upload])
    known = archived.get(upload.name)
    if known is not None and request.excludes_query_patient(recognised_upload=True):
        filters = replace(filters, exclude_patient_id=known.patient_row_id)
    response = service.search_image(
        session,
        _decode(service, upload),
        k=request.k,
        metric=metric,
        filters=filters,
        query_name=upload.name,
        ranking=request.ranking,
    )
    if known is not None:
        response.query["archived_as"] = {"patient_id": known.patient_id, "image_id": known.id}
        excluded = request.excludes_query_patient(recognised_upload=True)
        response.query["excluded_patient_ids"] = [known.patient_id] if excluded else []
        response.query_patient_id = known.patient_row_id
    return response


def search_cases(
    service: SearchService,
    session: Session,
    request: SearchRequest,
    uploads: Sequence[QueryUpload] = (),
) -> CaseSearchResponse:
    """The k nearest cases to the query case (an archived one, or the uploaded views)."""
    metric = _metric(service, request)
    ranking = service.ranking_or_default(request.ranking)
    filters = request.search_filters()
    service._check_filters(session, filters)
    fusion = request.fusion or DEFAULT_FUSION
    space = service.space(session)  # loads the backbone once per process: not a query's time
    started = time.perf_counter()
    index = service.whole_index(session, space, metric)  # IndexRepairing, never holes
    if uploads:
        views, query = _uploaded_views(service, session, space.id, index, uploads)
    else:
        views, query = _archived_views(session, request, space.id, index)
    embed_ms = (time.perf_counter() - started) * 1000

    query_patients = sorted({v.patient_row_id for v in views if v.patient_row_id is not None})
    recognised = bool(uploads) and bool(query_patients)
    excluded_patients = query_patients if request.excludes_query_patient(recognised) else []
    query["excluded_patient_ids"] = sorted(
        {v.patient_id for v in views if v.patient_row_id in excluded_patients}
    )
    own_images = {v.image_id for v in views if v.image_id is not None}
    search_started = time.perf_counter()
    mask = _allowed_mask(service, session, index, filters, excluded_patients, own_images)
    wanted = max(request.k, VOTE_K)
    query_vectors = np.stack([view.vector for view in views]).astype(np.float32)
    cases = _candidate_cases(session, index, query_vectors, wanted, mask, own_images)
    index_ms = (time.perf_counter() - search_started) * 1000

    join_started = time.perf_counter()
    hits = _scored_hits(session, index, views, cases, fusion, metric)[:wanted]
    hits = _with_reports(session, hits)
    join_ms = (time.perf_counter() - join_started) * 1000
    measured = service.vote_reliability(session, space, metric, "case", fusion)
    suggestion = suggest_from_hits(hits, measured)  # type: ignore[arg-type]
    if ranking == "consensus":
        hits = in_consensus_order(hits)  # type: ignore[arg-type,assignment]
    query_patient = query_patients[0] if query_patients else None
    return CaseSearchResponse(
        query=query,
        metric=metric,
        k=request.k,
        fusion=fusion,
        embedding_space=space.describe(),
        results=hits[: request.k],
        ranking=ranking,
        suggested_birads=suggestion,
        timing_ms={
            "embed": round(embed_ms, 3),
            "index": round(index_ms, 3),
            "join": round(join_ms, 3),
            "total": round((time.perf_counter() - started) * 1000, 3),
        },
        query_patient_id=query_patient,
    )


# --- the query case -----------------------------------------------------------------------


_VIEW_COLUMNS = (
    Image.id,
    Image.patient_id,
    Image.study_instance_uid,
    Image.side,
    Image.view,
    Image.modality,
    Image.birads,
    Image.birads_raw,
    Image.pathology,
    Image.findings,
    Image.source_file_name,
    Image.status,
    Patient.source_patient_id,
)


def _view_rows(session: Session, *conditions: Any) -> list[Any]:
    statement = (
        select(*_VIEW_COLUMNS)
        .join(Patient, Patient.id == Image.patient_id)
        .where(*conditions)
        .order_by(Image.id)
    )
    return list(session.execute(statement))


def _archived_views(
    session: Session, request: SearchRequest, space_id: int, index: Any
) -> tuple[list[QueryView], dict[str, Any]]:
    """An archived case's indexed views, by image id, case id or patient + breast."""
    if request.image_id is not None:
        rows = _view_rows(session, Image.id == request.image_id)
        if not rows:
            raise ImageNotFound(f"image {request.image_id}: not in the archive")
        key = case_key(rows[0].patient_id, rows[0].study_instance_uid, rows[0].side)
        asked: dict[str, Any] = {"image_id": request.image_id}
    elif request.case_id is not None:
        key = parse_case_id(request.case_id)
        asked = {"case_id": request.case_id}
    else:
        key, asked = _case_of_patient(session, request)
    members = [
        row
        for row in _view_rows(session, Image.patient_id == key.patient_id)
        if case_key(row.patient_id, row.study_instance_uid, row.side) == key
        and row.status in (ImageStatus.INDEXED, ImageStatus.EMBEDDED)
    ]
    if not members:
        raise ImageNotFound(f"case {key.case_id}: no searchable image in the archive")
    vectors = _stored_vectors(session, index, space_id, [row.id for row in members])
    views = [
        QueryView(
            name=f"image {row.id}",
            side=row.side,
            view=row.view,
            modality=row.modality,
            vector=vectors[row.id],
            image_id=row.id,
            patient_row_id=row.patient_id,
            patient_id=row.source_patient_id,
        )
        for row in members
        if row.id in vectors
    ]
    if not views:
        raise SearchError(f"case {key.case_id}: its images have no vector yet (not embedded)")
    query = {
        **asked,
        "unit": "case",
        "case": _describe_key(key, members[0].source_patient_id),
        "views": [view.describe() for view in views],
    }
    return views, query


def _case_of_patient(session: Session, request: SearchRequest) -> tuple[CaseKey, dict[str, Any]]:
    """patient_id (+ study_uid) + breast -> the one case they name; several studies: say so."""
    conditions = [Image.side == request.breast]
    if request.patient_id is not None:
        conditions.append(Patient.source_patient_id == request.patient_id)
    if request.study_uid is not None:
        conditions.append(Image.study_instance_uid == request.study_uid)
    rows = _view_rows(session, *conditions)
    asked = {
        name: value
        for name, value in (
            ("patient_id", request.patient_id),
            ("study_uid", request.study_uid),
            ("breast", request.breast),
        )
        if value is not None
    }
    named = ", ".join(f"{name} {value}" for name, value in asked.items())
    keys = sorted({case_key(r.patient_id, r.study_instance_uid, r.side) for r in rows})
    if not keys:
        raise ImageNotFound(f"no archived case with {named}")
    if len(keys) > 1:
        raise SearchError(
            f"{named} names {len(keys)} cases ({', '.join(k.case_id for k in keys)}): "
            "give study_uid or case_id to choose one"
        )
    return keys[0], asked


def _describe_key(key: CaseKey, patient_id: str) -> dict[str, Any]:
    return {
        "case_id": key.case_id,
        "patient_id": patient_id,
        "study_uid": key.study_uid or None,
        "side": key.side or None,
    }


def _stored_vectors(
    session: Session, index: Any, space_id: int, image_ids: Sequence[int]
) -> dict[int, np.ndarray]:
    """Each image's vector as the index compares it; from image_embeddings when not indexed."""
    vectors: dict[int, np.ndarray] = {}
    missing = []
    for image_id in image_ids:
        vector = index.stored_vector(image_id)
        if vector is None:
            missing.append(image_id)
        else:
            vectors[image_id] = vector
    if missing:
        rows = session.execute(
            select(ImageEmbedding.image_id, ImageEmbedding.vector).where(
                ImageEmbedding.image_id.in_(missing), ImageEmbedding.space_id == space_id
            )
        )
        for image_id, blob in rows:
            vectors[image_id] = np.frombuffer(blob, dtype="<f4")
    return vectors


def _archived_by_content(session: Session, uploads: Sequence[QueryUpload]) -> dict[str, Any]:
    """Upload name -> the archived image row with the same bytes (sha256), for those there."""
    digests = {hashlib.sha256(upload.content).hexdigest(): upload.name for upload in uploads}
    rows = session.execute(
        select(
            Image.id,
            Image.patient_id.label("patient_row_id"),
            Patient.source_patient_id.label("patient_id"),
            Image.side,
            Image.view,
            Image.modality,
            Image.sha256,
            Image.status,
        )
        .join(Patient, Patient.id == Image.patient_id)
        .where(Image.sha256.in_(list(digests)))
    )
    return {digests[row.sha256]: row for row in rows}


def _decode(service: SearchService, upload: QueryUpload) -> PILImage.Image:
    from mammosearch.search.query_image import read_query_image

    if upload.image is not None:
        return upload.image
    settings = service.settings
    return read_query_image(
        upload.content, upload.name, settings.max_image_pixels, settings.accepted_modalities
    )


def _file_side_and_view(upload: QueryUpload) -> tuple[str | None, str | None, str | None]:
    """(side, view, modality) a file states: DICOM tags, else a CDD-CESM style name."""
    from mammosearch.ingest.cdd_names import parse_cdd_name
    from mammosearch.ingest.dicom import dicom_metadata, looks_like_dicom, parse_dicom

    if looks_like_dicom(upload.name, upload.content):
        try:
            metadata = dicom_metadata(parse_dicom(upload.content, upload.name))
        except Exception:  # noqa: BLE001 - the decoder names what is wrong with the file
            return None, None, None
        return metadata["side"], metadata["view"], metadata["modality"]
    stem = upload.name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    parsed = parse_cdd_name(stem)
    if parsed is None:
        return None, None, None
    return parsed.side, parsed.view, parsed.modality


def _uploaded_views(
    service: SearchService,
    session: Session,
    space_id: int,
    index: Any,
    uploads: Sequence[QueryUpload],
) -> tuple[list[QueryView], dict[str, Any]]:
    """1-MAX_CASE_VIEWS files of one breast -> query views (archived ones recognised)."""
    if len(uploads) > MAX_CASE_VIEWS:
        raise BadSearchRequest(
            f"{len(uploads)} files: a case query takes 1-{MAX_CASE_VIEWS} views of one breast"
        )
    archived = _archived_by_content(session, uploads)
    stored = _stored_vectors(session, index, space_id, [row.id for row in archived.values()])
    views: list[QueryView] = []
    to_embed: list[tuple[int, QueryUpload]] = []
    for upload in uploads:
        row = archived.get(upload.name)
        if row is not None and row.id in stored:
            views.append(
                QueryView(
                    upload.name,
                    row.side,
                    row.view,
                    row.modality,
                    stored[row.id],
                    row.id,
                    row.patient_row_id,
                    row.patient_id,
                )
            )
            continue
        side, view, modality = _file_side_and_view(upload)
        if row is not None:  # archived, not embedded yet: its row still knows its side
            side, view, modality = row.side, row.view, row.modality
        views.append(QueryView(upload.name, side, view, modality, np.zeros(0, np.float32)))
        if row is not None:
            views[-1].image_id, views[-1].patient_row_id = row.id, row.patient_row_id
            views[-1].patient_id = row.patient_id
        to_embed.append((len(views) - 1, upload))
    _refuse_mixed_sides(views)
    if to_embed:
        images = [_decode(service, upload) for _, upload in to_embed]
        vectors = service.embedder.embed_pil(images)
        for (position, _), vector in zip(to_embed, vectors, strict=True):
            views[position].vector = vector
    query = {
        "unit": "case",
        "uploads": [upload.name for upload in uploads],
        "views": [view.describe() for view in views],
        "archived_as": [
            {"file": view.name, "patient_id": view.patient_id, "image_id": view.image_id}
            for view in views
            if view.image_id is not None
        ],
    }
    return views, query


def _refuse_mixed_sides(views: Sequence[QueryView]) -> None:
    by_side: dict[str, list[str]] = defaultdict(list)
    for view in views:
        if view.side:
            by_side[view.side].append(view.name)
    if len(by_side) > 1:
        named = "; ".join(f"{side}: {', '.join(names)}" for side, names in sorted(by_side.items()))
        raise MixedSides(
            f"files of both breasts in one case query ({named}): a case is one breast; "
            "search each side's files on their own"
        )


# --- candidates and their scores ----------------------------------------------------------


def _allowed_mask(
    service: SearchService,
    session: Session,
    index: Any,
    filters: SearchFilters,
    excluded_patients: Sequence[int],
    own_images: set[int],
) -> np.ndarray | None:
    """The ids a result view may have (filters, excluded patients, the query's images)."""
    if not filters.active and not excluded_patients and not own_images:
        return None
    state = (str(index.root), index.version)
    patients: list[int | None] = list(excluded_patients) or [None]
    mask = None
    for patient in patients:
        patient_filters = replace(filters, exclude_patient_id=patient)
        allowed = service.filter_table.allowed(session, patient_filters, own_images, state)
        mask = allowed if mask is None else mask & allowed
    return mask


@dataclass
class _Case:
    key: CaseKey
    rows: list[Any]


def _candidate_cases(
    session: Session,
    index: Any,
    query_vectors: np.ndarray,
    wanted: int,
    mask: np.ndarray | None,
    own_images: set[int],
) -> list[_Case]:
    """The cases of the query views' image hits, each with its views that may be results;
    fetched deeper until `wanted` cases are found or the index has no more."""
    live = int(mask.sum()) if mask is not None else len(index)
    fetch = min(max(wanted * CASE_OVERFETCH, 1), max(live, 1))
    for _ in range(FETCH_ROUNDS):
        _, ids = index.search(query_vectors, fetch, id_filter=mask)
        hit_ids = sorted({int(i) for i in ids.ravel() if i >= 0} - own_images)
        cases = _cases_of(session, hit_ids, mask, own_images)
        if len(cases) >= wanted or fetch >= live:
            return cases
        fetch = min(fetch * 4, live)
    return cases


def _cases_of(
    session: Session, hit_ids: Sequence[int], mask: np.ndarray | None, own_images: set[int]
) -> list[_Case]:
    """The cases these image ids belong to, each with its indexed views passing `mask`."""
    if not hit_ids:
        return []
    hit_rows = _view_rows(session, Image.id.in_(hit_ids))
    keys = {case_key(r.patient_id, r.study_instance_uid, r.side) for r in hit_rows}
    patients = sorted({key.patient_id for key in keys})
    by_key: dict[CaseKey, list[Any]] = defaultdict(list)
    for row in _view_rows(session, Image.patient_id.in_(patients)):
        key = case_key(row.patient_id, row.study_instance_uid, row.side)
        if key not in keys or row.status != ImageStatus.INDEXED or row.id in own_images:
            continue
        if mask is not None and not (row.id < len(mask) and mask[row.id]):
            continue
        by_key[key].append(row)
    return [_Case(key, rows) for key, rows in by_key.items()]


def _scored_hits(
    session: Session,
    index: Any,
    views: Sequence[QueryView],
    cases: Sequence[_Case],
    fusion: str,
    metric: str,
) -> list[CaseHit]:
    """Candidate cases scored against the query case by `fusion`, nearest first."""
    if not cases:
        return []
    member_ids = [row.id for case in cases for row in case.rows]
    vectors = _index_vectors(index, member_ids)
    kept = [_Case(case.key, [row for row in case.rows if row.id in vectors]) for case in cases]
    kept = [case for case in kept if case.rows]
    rows = [row for case in kept for row in case.rows]
    if not rows:
        return []
    matrix = np.stack([vectors[row.id] for row in rows])
    starts = group_starts([case_key(r.patient_id, r.study_instance_uid, r.side) for r in rows])
    query_matrix = np.stack([view.vector for view in views]).astype(np.float32)
    scores = fused_scores(
        query_matrix,
        [view_tag(view.view, view.modality) for view in views],
        [0],
        matrix,
        [view_tag(row.view, row.modality) for row in rows],
        starts,
        fusion,
        metric,
    )[0]
    pairs = best_view_pairs(query_matrix, matrix, starts, metric)
    view_scores = _view_best_scores(query_matrix, matrix, metric)
    order = np.argsort(-scores if metric == "cosine" else scores, kind="stable")
    hits: list[CaseHit] = []
    for position in order.tolist():
        case = kept[position]
        start = int(starts[position])
        distance, similarity = distance_and_similarity(float(scores[position]), metric)
        query_position, best_row, best_score = pairs[position]
        hits.append(
            CaseHit(
                rank=len(hits) + 1,
                case_id=case.key.case_id,
                patient_id=case.rows[0].source_patient_id,
                study_uid=case.key.study_uid or None,
                side=case.key.side or None,
                birads=case_birads(row.birads for row in case.rows),
                pathology=case_pathology(row.pathology for row in case.rows),
                findings=_joined(row.findings for row in case.rows),
                report_excerpt=None,
                distance=round(distance, 6),
                similarity=round(similarity, 6),
                best_view_image_id=rows[best_row].id,
                best_query_view=views[query_position].name,
                best_view_similarity=round(distance_and_similarity(best_score, metric)[1], 6),
                views=[
                    CaseView(
                        image_id=row.id,
                        side=row.side,
                        view=row.view,
                        modality=row.modality,
                        birads=row.birads,
                        birads_raw=row.birads_raw,
                        pathology=row.pathology,
                        findings=row.findings,
                        source_file_name=row.source_file_name,
                        similarity=round(
                            distance_and_similarity(float(view_scores[start + offset]), metric)[1],
                            6,
                        ),
                    )
                    for offset, row in enumerate(case.rows)
                ],
            )
        )
    return hits


def _index_vectors(index: Any, image_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """Stored vectors of these ids; an id the index lost since (being repaired) is skipped."""
    try:
        return dict(zip(image_ids, index.get_vectors(image_ids), strict=True))
    except KeyError:
        found = {image_id: index.stored_vector(image_id) for image_id in image_ids}
        return {image_id: vector for image_id, vector in found.items() if vector is not None}


def _view_best_scores(query: np.ndarray, views: np.ndarray, metric: str) -> np.ndarray:
    """Per result view: its score against its nearest query view."""
    scores = fused_scores(
        views,
        [view_tag(None, None)] * len(views),
        np.arange(len(views)),
        query,
        [view_tag(None, None)] * len(query),
        [0],
        "best-pair",
        metric,
    )
    return scores[:, 0]


def _joined(texts: Any) -> str | None:
    distinct = list(dict.fromkeys(text.strip() for text in texts if text and text.strip()))
    return "; ".join(distinct) or None


def _with_reports(session: Session, hits: list[CaseHit]) -> list[CaseHit]:
    """Each hit's patient's latest report excerpt, in one query."""
    if not hits:
        return hits
    patients = sorted({parse_case_id(hit.case_id).patient_id for hit in hits})
    latest = (
        select(Report.patient_id, func.substr(Report.text, 1, REPORT_EXCERPT_CHARS))
        .where(Report.patient_id.in_(patients))
        .order_by(Report.id)
    )
    # the newest report last, so it stays
    excerpts: dict[int, str] = dict(session.execute(latest).all())
    for hit in hits:
        hit.report_excerpt = excerpts.get(parse_case_id(hit.case_id).patient_id)
    return hits


__all__ = [
    "CASE_FUSIONS",
    "CaseHit",
    "CaseSearchResponse",
    "CaseView",
    "MixedSides",
    "QueryUpload",
    "run_search",
    "search_cases",
]
