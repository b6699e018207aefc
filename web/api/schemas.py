"""The API's response bodies as pydantic models: the OpenAPI document is generated from them.

A search hit is the core's `Hit` plus the two links the API adds, so a field added to the
core appears in the schema by itself. Bodies forbid unknown fields: the schema test then
fails when a route answers with a field the document does not describe.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from mammosearch.search.case_search import CaseHit as CoreCaseHit
from mammosearch.search.case_search import CaseView as CoreCaseView
from mammosearch.search.service import Hit as CoreHit


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(Body):
    """What went wrong, naming the input."""

    error: str


def _core_fields(core: type, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    hints = typing.get_type_hints(core)
    return {
        core_field.name: (hints[core_field.name], ...)
        for core_field in dataclasses.fields(core)
        if core_field.name not in leave_out
    }


Hit = create_model(
    "Hit",
    __base__=Body,
    __doc__="One similar archived image, in the response's `ranking` order.",
    **_core_fields(CoreHit),
    image_url=(str, Field(description="The image's pixels (GET, same token).")),
    case_url=(str, Field(description="The case page in the web application.")),
)


CaseView = create_model(
    "CaseView",
    __base__=Body,
    __doc__="One view (image) of a result case; `similarity` to its nearest query view.",
    **_core_fields(CoreCaseView),
    image_url=(str, Field(description="The image's pixels (GET, same token).")),
)


CaseHit = create_model(
    "CaseHit",
    __base__=Body,
    __doc__="One similar case (one breast of one study) with every view, in `ranking` order; "
    "`best_view_image_id` is the view nearest to a query view (`best_query_view`).",
    **_core_fields(CoreCaseHit, leave_out=("views",)),
    views=(list[CaseView], ...),  # type: ignore[valid-type]
    case_url=(str, Field(description="The case page (of its best view) in the web app.")),
)


class VoteOfLabel(BaseModel):
    """The neighbours' vote on one label (mammosearch.search.vote.label_suggestion)."""

    model_config = ConfigDict(extra="allow")

    status: str = Field(
        description="suggested (a class put forward), uncertain (the vote is split, or "
        "suggestions at this share were right less often than the floor), unmeasured (this "
        "space's vote was never measured: labels listed, nothing suggested), no-vote."
    )
    suggested: Any = Field(None, description="The class put forward; null unless suggested.")
    leading: Any = Field(None, description="The class with the largest share of the vote.")
    votes: dict[str, int] = Field({}, description="Neighbours per class (the voters only).")
    distribution: dict[str, float] = Field({}, description="Share of the vote per class.")
    neighbours: int = Field(0, description="How many neighbours voted (at most ten).")
    share: float = Field(0.0, description="The leading class's share of the vote.")
    split: bool = Field(False, description="No class has more voters than every other.")
    precision: float | None = Field(
        None,
        description="How often suggestions made at this share were right, measured out of "
        "fold (null when unmeasured).",
    )
    floor: float | None = Field(None, description="The precision a suggestion needs.")
    measured: dict[str, Any] = Field(
        {},
        description="The measurement: accuracy, balanced_accuracy, per_class_recall, ece, "
        "source; empty when not measured.",
    )


class SuggestedBirads(VoteOfLabel):
    """The neighbours' BIRADS vote, pathology beside it: decision support, not a diagnosis."""

    birads: int | None = Field(None, description="The BIRADS put forward (= suggested).")
    rule: str | None = None
    note: str | None = Field(None, description="Decision support, not a diagnosis.")
    pathology: VoteOfLabel | None = Field(
        None, description="The same neighbours' pathology vote (malignant / benign / normal)."
    )


RESULTS_URL: Any = Field(
    description="The web page that shows these results (GET: bookmark, share, open from "
    "another program); null for an uploaded query, whose pixels cannot be in a URL."
)


class SearchResponse(Body):
    """unit=image: the nearest archived images."""

    unit: typing.Literal["image"]
    query: dict[str, Any] = Field(
        description="What was searched; an upload the archive holds carries `archived_as` "
        "({patient_id, image_id}) and `excluded_patient_ids`."
    )
    metric: str
    k: int
    embedding_space: dict[str, Any] = Field(
        description="Backbone, weights and whether they are pretrained; `untrained: true` "
        "means results are not clinically meaningful."
    )
    results: list[Hit]  # type: ignore[valid-type]
    ranking: str = Field(
        description="The order of `results`: similarity (nearest first) or consensus (the "
        "ten nearest that agree with their BIRADS vote first; each hit keeps its similarity)."
    )
    suggested_birads: SuggestedBirads
    timing_ms: dict[str, float] = Field(description="embed, index, join and total.")
    url: str | None = RESULTS_URL


class CaseSearchResponse(Body):
    """unit=case: the nearest cases, each breast once, with all its views."""

    unit: typing.Literal["case"]
    query: dict[str, Any] = Field(
        description="The query case: `case` (archived) or `uploads`; `views` (name, side, "
        "view, modality, archived_as); `archived_as` (files the archive holds); "
        "`excluded_patient_ids`."
    )
    metric: str
    k: int
    fusion: str = Field(
        description="How views made one similarity: mean, best-pair, matched-views."
    )
    embedding_space: dict[str, Any]
    results: list[CaseHit]  # type: ignore[valid-type]
    ranking: str
    suggested_birads: SuggestedBirads = Field(
        description="The nearest cases' vote (their case BIRADS, pathology beside it)."
    )
    timing_ms: dict[str, float]
    url: str | None = RESULTS_URL


class Image(Body):
    """One archived image's metadata."""

    image_id: int
    patient_id: str = Field(description="The source's patient id.")
    source: str
    source_file_name: str
    side: str | None
    view: str | None
    modality: str
    width: int
    height: int
    breast_density: str | None
    birads: int | None
    birads_raw: str | None
    pathology: str | None
    findings: str | None
    tags: str | None
    study_date: str | None
    status: str
    segmentations: list[dict[str, Any]]
    report_count: int


class EvaluationRun(Body):
    id: int
    space_id: int | None
    embedding_space: dict[str, Any] | None
    trigger: str
    status: str
    protocol: str
    label: str
    metric: str
    metrics: dict[str, Any]
    per_class: dict[str, Any]
    config: dict[str, Any]
    queries: int | None
    archive_size: int | None
    duration_s: float | None
    progress: float | None
    error: str | None
    flagged: bool
    flag_reason: str | None
    started_at: str | None = Field(json_schema_extra={"format": "date-time"})
    finished_at: str | None = Field(json_schema_extra={"format": "date-time"})


class EvaluationList(Body):
    evaluations: list[EvaluationRun]


class Status(BaseModel):
    """Ingestion status: images per status, lag, failures, queue depths (admins)."""

    model_config = ConfigDict(extra="allow")

    images: dict[str, int]


RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    Error,
    Hit,
    SearchResponse,
    CaseView,
    CaseHit,
    CaseSearchResponse,
    Image,
    EvaluationRun,
    EvaluationList,
    Status,
)
