"""Vector hits -> joined, filtered results with a BIRADS suggestion from the neighbours."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import Integer, Select, any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from mammosearch.config import Settings, get_settings
from mammosearch.db.driver_rows import driver_rows
from mammosearch.db.models import (
    EmbeddingSpace,
    Image,
    ImageEmbedding,
    Patient,
    Report,
)
from mammosearch.embed import Embedder
from mammosearch.embed.serving import open_serving_space, serving_embedder
from mammosearch.evaluate.labels import birads_of, pathology_of
from mammosearch.evaluate.runs import measured_vote
from mammosearch.index import IndexCorruptError, IndexMismatchError, ShardedIndex, get_reader
from mammosearch.pipeline.index_health import IndexHealth, IndexRepairing, check_index
from mammosearch.search.filter_table import FilterTable
from mammosearch.search.filter_values import FilterValues, FilterValuesCache, UnknownFilterValue
from mammosearch.search.filters import FILTERED_COLUMN_NAMES
from mammosearch.search.ranking import consensus_ranking
from mammosearch.search.request import SearchFilters
from mammosearch.search.vote import VOTE_K, suggest
from mammosearch.vocabulary import PATHOLOGY_CLASSES

REPORT_EXCERPT_CHARS = 300
SPACE_RECHECK_S = 5.0
INDEXED_RECHECK_S = 5.0
"""How long a search trusts the database's count of indexed rows (what the index must hold)."""
VOTE_MEASURE_TTL_S = 60.0


class SearchError(ValueError):
    """A search request that cannot be answered; the message tells the user why."""


class ImageNotFound(SearchError, LookupError):
    """The query names an archived image that is not in the archive (HTTP 404)."""


FILTERED_NAMES = ("status", *FILTERED_COLUMN_NAMES, "patient_id")
FILTERED_COLUMNS = tuple(getattr(Image, name) for name in FILTERED_NAMES)
HIT_NAMES = (
    "id",
    "birads",
    "birads_raw",
    "pathology",
    "side",
    "view",
    "modality",
    "findings",
    "source_file_name",
)
HIT_COLUMNS = tuple(getattr(Image, name) for name in HIT_NAMES)


@dataclass
class Hit:
    rank: int
    image_id: int
    patient_id: str
    distance: float
    similarity: float
    birads: int | None
    birads_raw: str | None
    pathology: str | None
    side: str | None
    view: str | None
    modality: str
    findings: str | None
    report_excerpt: str | None
    source_file_name: str


@dataclass
class SearchEnvelope:
    """What every search answers with, image or case (SearchResponse,
    case_search.CaseSearchResponse): each adds its unit, hits and own fields."""

    query: dict[str, Any]
    metric: str
    k: int
    embedding_space: dict[str, Any]
    results: list[Any] = field(default_factory=list)
    ranking: str = "similarity"
    suggested_birads: dict[str, Any] = field(default_factory=dict)
    timing_ms: dict[str, float] = field(default_factory=dict)
    # the query's archived patient (patients.id), for the audit; not in to_dict()
    query_patient_id: int | None = None

    unit: ClassVar[str]

    def envelope_dict(self, results: list[dict[str, Any]], **unit_fields: Any) -> dict[str, Any]:
        """to_dict's document around the unit's `results`; `unit_fields` follow k."""
        return {
            "unit": self.unit,
            "query": self.query,
            "metric": self.metric,
            "k": self.k,
            **unit_fields,
            "embedding_space": self.embedding_space,
            "ranking": self.ranking,
            "results": results,
            "suggested_birads": self.suggested_birads,
            "timing_ms": self.timing_ms,
        }


@dataclass
class SearchResponse(SearchEnvelope):
    results: list[Hit] = field(default_factory=list)

    unit = "image"

    @property
    def shown_image_ids(self) -> list[int]:
        """The images shown, for the audit."""
        return [hit.image_id for hit in self.results]

    def to_dict(self) -> dict[str, Any]:
        # A shallow copy per hit: its fields are plain values, and dataclasses.asdict's
        # recursive deep copy was a tenth of a search request's CPU time.
        return self.envelope_dict([dict(vars(hit)) for hit in self.results])


def distance_and_similarity(score: float, metric: str) -> tuple[float, float]:
    """The index's raw score -> (distance, similarity).

    cosine: the index returns the cosine similarity s; distance = 1 - s.
    l2: the index returns the squared L2 distance d; similarity = 1 / (1 + d), in (0, 1].
    """
    if metric == "cosine":
        return 1.0 - float(score), float(score)
    return float(score), 1.0 / (1.0 + max(float(score), 0.0))


def suggest_from_hits(hits: list[Hit], measured: Mapping[str, Any]) -> dict[str, Any]:
    """The neighbours' vote on BIRADS and pathology (mammosearch.search.vote: the VOTE_K nearest
    labelled hits, the served rule), with how sure `measured` says it is."""
    return suggest(
        [(birads_of(vars(hit)), hit.similarity) for hit in hits],
        [(pathology_of(vars(hit)), hit.similarity) for hit in hits],
        measured,
        PATHOLOGY_CLASSES,
    )


def in_consensus_order(hits: list[Hit]) -> list[Hit]:
    """The hits in consensus order (mammosearch.search.ranking, the same function the evaluations
    score): the vote's neighbours agreeing with it first; later hits keep their place."""
    labels = [birads_of(vars(hit)) for hit in hits]
    classes = sorted({label for label in labels if label is not None})
    codes = np.array([classes.index(label) if label is not None else -1 for label in labels])
    similarities = np.array([hit.similarity for hit in hits], dtype=np.float64)
    order = consensus_ranking(similarities, codes, len(classes))
    return [replace(hits[position], rank=rank) for rank, position in enumerate(order, start=1)]


class SearchService:
    """One per process: the backbone is loaded once, index readers reload on new manifests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._space_id: int | None = None
        self._space_key: object = None
        self._space: EmbeddingSpace | None = None
        self._space_read_at = 0.0
        self._reliability: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = {}
        self._indexed_counts: dict[int, tuple[float, int]] = {}
        self._filter_values = FilterValuesCache()
        self.filter_table = FilterTable()

    @property
    def embedder(self) -> Embedder:
        return serving_embedder(self.settings)

    def space(self, session: Session) -> EmbeddingSpace:
        """The serving embedder's space; follows `spaces activate` without a restart.

        A detached copy of the row, re-read at most every SPACE_RECHECK_S: every search needs
        it, and its columns change only when a space is created or switched. Read-only: it
        belongs to no session, so nothing may be attached to it.
        """
        embedder = self.embedder
        now = time.monotonic()
        cached = self._space
        if (
            cached is not None
            and self._space_key == embedder.identity
            and now - self._space_read_at < SPACE_RECHECK_S
        ):
            return cached
        space = None
        if self._space_id is not None and self._space_key == embedder.identity:
            space = session.get(EmbeddingSpace, self._space_id)
        if space is None:
            space = open_serving_space(session, self.settings)
        keys = [column.key for column in EmbeddingSpace.__table__.columns]
        self._space = EmbeddingSpace(**{key: getattr(space, key) for key in keys})
        self._space_id, self._space_key, self._space_read_at = space.id, embedder.identity, now
        return self._space

    def whole_index(self, session: Session, space: EmbeddingSpace, metric: str) -> ShardedIndex:
        """The reader of `space`'s `metric` index, when it serves every row the database
        lists as indexed; else IndexRepairing (never an answer with holes).

        The count is re-read at most every INDEXED_RECHECK_S; a shortfall is confirmed
        with a fresh reload and count before a search is refused (an index run commits the
        manifest a moment before the rows, and readers reload at most once a second).
        """
        try:
            index = get_reader(self.settings, space, metric)
        except (IndexCorruptError, IndexMismatchError, OSError):
            raise IndexRepairing(check_index(session, self.settings, space, metric)) from None
        now = time.monotonic()
        read_at, expected = self._indexed_counts.get(space.id, (0.0, -1))
        if index.damage or now - read_at > INDEXED_RECHECK_S or index.ntotal < expected:
            health: IndexHealth = check_index(session, self.settings, space, metric, index)
            self._indexed_counts[space.id] = (now, health.expected)
            if not health.whole:
                raise IndexRepairing(health)
        return index

    def vote_reliability(
        self,
        session: Session,
        space: EmbeddingSpace,
        metric: str = "cosine",
        unit: str = "image",
        fusion: str | None = None,
    ) -> dict[str, Any]:
        """How sure the vote is in this space for a search of `unit` (and case `fusion`)
        (evaluate.runs.measured_vote), re-read every VOTE_MEASURE_TTL_S: the scheduled
        evaluation measures a new space while it serves."""
        now = time.monotonic()
        key = (space.id, metric, unit, fusion)
        cached = self._reliability.get(key)
        if cached is None or now - cached[0] > VOTE_MEASURE_TTL_S:
            cached = (now, measured_vote(session, self.settings, space, metric, unit, fusion))
            self._reliability[key] = cached
        return cached[1]

    def filter_values(self, session: Session) -> FilterValues:
        """The values view, pathology and modality may take (what a search form offers)."""
        return self._filter_values.get(session)

    def _check_filters(self, session: Session, filters: SearchFilters | None) -> None:
        if filters is None or not filters.active:
            return
        try:
            self._filter_values.check(session, asdict(filters))
        except UnknownFilterValue as exc:
            raise SearchError(str(exc)) from None

    def ranking_or_default(self, ranking: str | None) -> str:
        """The order asked for, else the setting's. Checked at the door (SearchRequest), as
        are k and the metric: a request that has passed its model is trusted here."""
        return ranking or self.settings.ranking

    def search_image(
        self,
        session: Session,
        image: PILImage.Image,
        k: int = 10,
        metric: str = "cosine",
        filters: SearchFilters | None = None,
        query_name: str = "upload",
        ranking: str | None = None,
    ) -> SearchResponse:
        """Embed an image (any mode; preprocessing converts to grayscale) and search."""
        self._check_filters(session, filters)
        started = time.perf_counter()
        vector = self.embedder.embed_pil([image])[0]
        embed_ms = (time.perf_counter() - started) * 1000
        response = self.search_vector(
            session, vector, k, metric, filters, query={"upload": query_name}, ranking=ranking
        )
        response.timing_ms["embed"] = round(embed_ms, 3)
        response.timing_ms["total"] = round(response.timing_ms["total"] + embed_ms, 3)
        return response

    def search_image_id(
        self,
        session: Session,
        image_id: int,
        k: int = 10,
        metric: str = "cosine",
        filters: SearchFilters | None = None,
        exclude_same_patient: bool = False,
        ranking: str | None = None,
    ) -> SearchResponse:
        """Search with an archived image's stored vector; the image itself is not a result.

        `exclude_same_patient` leaves out the query patient's other images (their other view
        and breast are near-duplicates that say nothing about similar *cases*).
        """
        space = self.space(session)
        if exclude_same_patient:
            query_row = (
                session.connection()
                .execute(select(Image.patient_id).where(Image.id == image_id))
                .first()
            )
            if query_row is None:
                raise ImageNotFound(f"image {image_id}: not in the archive")
            filters = replace(filters or SearchFilters(), exclude_patient_id=query_row.patient_id)
        # The index holds the vector it would be compared as (no database read); an image
        # embedded but not yet indexed is read from image_embeddings.
        vector = self.whole_index(session, space, metric).stored_vector(image_id)
        if vector is None:
            blob = session.scalar(
                select(ImageEmbedding.vector).where(
                    ImageEmbedding.image_id == image_id, ImageEmbedding.space_id == space.id
                )
            )
            if blob is None:
                if session.get(Image, image_id) is None:
                    raise ImageNotFound(f"image {image_id}: not in the archive")
                raise SearchError(f"image {image_id} has no vector yet (not embedded)")
            vector = np.frombuffer(blob, dtype="<f4")
        response = self.search_vector(
            session,
            vector,
            k,
            metric,
            filters,
            query={"image_id": image_id},
            exclude={image_id},
            ranking=ranking,
        )
        if response.query_patient_id is _NO_ROW:
            raise ImageNotFound(f"image {image_id}: not in the archive")
        response.timing_ms["embed"] = 0.0
        return response

    def search_vector(
        self,
        session: Session,
        vector: np.ndarray,
        k: int,
        metric: str,
        filters: SearchFilters | None = None,
        query: dict[str, Any] | None = None,
        exclude: set[int] | None = None,
        ranking: str | None = None,
    ) -> SearchResponse:
        """k nearest indexed images passing `filters`; filters never shorten the list.

        The suggestion is the vote of the VOTE_K nearest labelled hits (the rule its measured
        reliability is of; at least VOTE_K are fetched whatever k); `ranking` (default: the
        setting) orders them.
        """
        ranking = self.ranking_or_default(ranking)
        fetched = max(k, VOTE_K)
        self._check_filters(session, filters)
        started = time.perf_counter()
        space = self.space(session)
        index = self.whole_index(session, space, metric)
        filters = filters or SearchFilters()
        exclude = exclude or set()
        queries = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        for attempt in range(2):
            id_filter = None
            if filters.active:
                # The filter table (numpy, per process) gives the allowed ids as a mask; the
                # index returns min(k, allowed) of them whatever its factory.
                id_filter = self.filter_table.allowed(
                    session, filters, exclude, index_state=(str(index.root), index.version)
                )
            distances, ids = index.search(queries, fetched + len(exclude), id_filter=id_filter)
            index_ms = (time.perf_counter() - started) * 1000
            pairs = [
                (int(i), float(d))
                for d, i in zip(distances[0], ids[0], strict=True)
                if i >= 0 and int(i) not in exclude
            ][:fetched]
            join_started = time.perf_counter()
            query_id = query.get("image_id") if query else None
            hits, stale, query_patient_id = self._join(
                session, pairs, metric, filters if filters.active else None, query_id
            )
            join_ms = (time.perf_counter() - join_started) * 1000
            if not stale or attempt:
                break
            # A row changed since the table last read it: read it all again, search again.
            self.filter_table.refresh(session, force=True)
        suggestion = suggest_from_hits(hits, self.vote_reliability(session, space, metric))
        if ranking == "consensus":
            hits = in_consensus_order(hits)
        return SearchResponse(
            query=query or {},
            metric=metric,
            k=k,
            embedding_space=space.describe(),
            results=hits[:k],
            ranking=ranking,
            suggested_birads=suggestion,
            timing_ms={
                "index": round(index_ms, 3),
                "join": round(join_ms, 3),
                "total": round(index_ms + join_ms, 3),
            },
            query_patient_id=query_patient_id,
        )

    def _join(
        self,
        session: Session,
        pairs: list[tuple[int, float]],
        metric: str,
        filters: SearchFilters | None = None,
        query_id: int | None = None,
    ) -> tuple[list[Hit], int, Any]:
        """Hits -> rows in one query (images, patients, latest report excerpt); how many
        rows no longer pass `filters` (left out: the filter table was behind the database);
        and the archived query image's patient id, read in the same statement (_NO_ROW when
        the image has no row; None without a query id)."""
        ids = [image_id for image_id, _ in pairs]
        if query_id is not None:
            ids.append(query_id)
        if not ids:
            return [], 0, None
        # Plain columns, no ORM objects, on the session's connection through the driver's
        # cursor (driver_rows): a search reads the rows once and shows them, and the values
        # are the database's now (a session's objects may be older).
        connection = session.connection()
        rows = driver_rows(connection, _hits_statement(connection.dialect.name), {"ids": ids})
        by_id = {row[0]: row for row in rows}
        query_patient_id = None
        if query_id is not None:
            query_row = by_id.get(query_id)
            query_patient_id = _NO_ROW if query_row is None else query_row[_PATIENT_COLUMN]
        hits: list[Hit] = []
        stale = 0
        for image_id, score in pairs:
            if image_id not in by_id:
                continue  # vector without a row: `index verify --repair` removes it
            row = by_id[image_id]
            shown = dict(zip(HIT_NAMES, row[: len(HIT_NAMES)], strict=True))
            patient, report = row[len(HIT_NAMES)], row[len(HIT_NAMES) + 1]
            filtered = row[len(HIT_NAMES) + 2 :]
            now = SimpleNamespace(**dict(zip(FILTERED_NAMES, filtered, strict=True)))
            if filters is not None and not filters.matches(now):
                stale += 1
                continue
            distance, similarity = distance_and_similarity(score, metric)
            del shown["id"]
            hits.append(
                Hit(
                    rank=len(hits) + 1,
                    image_id=image_id,
                    patient_id=patient,
                    distance=round(distance, 6),
                    similarity=round(similarity, 6),
                    report_excerpt=report,
                    **shown,
                )
            )
        return hits, stale, query_patient_id


_NO_ROW = object()
"""_join's answer for a query image without a row (deleted since it was indexed)."""
_PATIENT_COLUMN = len(HIT_NAMES) + 2 + FILTERED_NAMES.index("patient_id")
"""Where Image.patient_id sits in a row of _hits_statement()."""


@lru_cache(maxsize=2)
def _hits_statement(dialect: str) -> Select[*tuple[Any, ...]]:
    """The rows of a result list (images, patient, latest report excerpt), built once per
    database dialect: a statement's construction cost about as much CPU as running it.

    On PostgreSQL the ids are one array parameter (`= ANY(:ids)`): the SQL text is the same
    for every search, so neither SQLAlchemy (an expanding IN is rendered per call) nor
    psycopg (a new text is parsed and converted per call) redoes its work per request.
    """
    latest_report = (
        select(func.substr(Report.text, 1, REPORT_EXCERPT_CHARS))
        .where(Report.patient_id == Image.patient_id)
        .order_by(Report.id.desc())
        .limit(1)
        .correlate(Image)
        .scalar_subquery()
        .label("report_excerpt")
    )
    return (
        select(*HIT_COLUMNS, Patient.source_patient_id, latest_report, *FILTERED_COLUMNS)
        .join(Patient, Patient.id == Image.patient_id)
        .where(
            Image.id == any_(bindparam("ids", type_=ARRAY(Integer)))
            if dialect == "postgresql"
            else Image.id.in_(bindparam("ids", expanding=True))
        )
    )


@lru_cache(maxsize=4)
def _service(settings: Settings) -> SearchService:
    return SearchService(settings)


def get_search_service(settings: Settings | None = None) -> SearchService:
    """The process-wide search service for these settings."""
    return _service(settings or get_settings())
