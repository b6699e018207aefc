"""A search request, defined once: the web form, the API and the CLI validate through it.

The OpenAPI document of /api/v1 is generated from this model, so its limits (k, BIRADS
range, sides) and its filter list cannot drift from what the server accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import Select

from mammosearch.db.models import Image, ImageStatus
from mammosearch.search.cases import CASE_FUSIONS, SEARCH_UNITS, parse_case_id
from mammosearch.search.filters import BOUND_FIELDS, CATEGORY_FIELDS, FILTER_NAMES
from mammosearch.vocabulary import ASSESSMENT_CATEGORIES, RANKINGS

MAX_K = 100  # the most neighbours one request may ask for, everywhere
DEFAULT_K = 10
MAX_IMAGE_ID = 2**63 - 1  # the database's BIGINT
BIRADS_LOW, BIRADS_HIGH = ASSESSMENT_CATEGORIES[0], ASSESSMENT_CATEGORIES[-1]
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}
TRANSPORT_FIELDS = ("csrf_token",)
"""Fields a transport adds to a form that are not part of the search (dropped before the
model, which forbids every other unknown field: a typo must not search differently)."""
CASE_QUERY_FIELDS = ("patient_id", "breast", "study_uid", "case_id")


_Statement = TypeVar("_Statement", bound="Select[*tuple[Any, ...]]")


@dataclass(frozen=True)
class SearchFilters:
    """The filters of one request, as SQL (`apply`) and as a check of one row (`matches`)."""

    side: str | None = None
    view: str | None = None
    modality: str | None = None
    birads_min: int | None = None
    birads_max: int | None = None
    pathology: str | None = None
    exclude_patient_id: int | None = None  # internal patients.id

    @property
    def active(self) -> bool:
        return any(value is not None for value in vars(self).values())  # asdict deep-copies

    def apply(self, query: _Statement) -> _Statement:
        for field in CATEGORY_FIELDS:
            if wanted := getattr(self, field.name):
                query = query.where(field.column() == field.wanted(wanted))
        for bound in BOUND_FIELDS:
            if (limit := getattr(self, bound.name)) is not None:
                query = query.where(bound.passes(getattr(Image, bound.column_name), limit))
        if self.exclude_patient_id is not None:
            query = query.where(Image.patient_id != self.exclude_patient_id)
        return query

    def matches(self, image: Any) -> bool:
        """The same test as `apply` (status included), on one row's FILTERED_COLUMN_NAMES
        values, plus status and patient_id."""
        if image.status != ImageStatus.INDEXED:
            return False
        for field in CATEGORY_FIELDS:
            wanted, stored = getattr(self, field.name), getattr(image, field.name)
            if wanted and (stored is None or field.stored(stored) != field.wanted(wanted)):
                return False
        for bound in BOUND_FIELDS:
            limit, stored = getattr(self, bound.name), getattr(image, bound.column_name)
            if limit is not None and (stored is None or not bound.passes(stored, limit)):
                return False
        return self.exclude_patient_id is None or (
            image.patient_id is not None and image.patient_id != self.exclude_patient_id
        )


class BadSearchRequest(ValueError):
    """A search parameter that cannot be used; the message names it."""


def _bad(message: str) -> PydanticCustomError:
    return PydanticCustomError("bad_search_value", message)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _whole_number(value: Any, low: int, high: int) -> int | None:
    raw = _text(value)
    if raw is None:
        return None
    if isinstance(value, bool):
        raise _bad(f"{value!r} is not a whole number")
    if isinstance(value, float) and value.is_integer():
        raw = str(int(value))  # JSON's 10.0 is the integer the OpenAPI document allows
    try:
        number = int(raw)
    except ValueError:
        raise _bad(f"{raw!r} is not a whole number") from None
    if not low <= number <= high:
        raise _bad(f"{number} is outside {low}..{high}")
    return number


class SearchRequest(BaseModel):
    """k, metric, filters and the query's archived image id (an upload comes as a file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    k: int = Field(DEFAULT_K, ge=1, le=MAX_K, description="How many neighbours.")
    metric: str | None = Field(
        None, description="An indexed metric, e.g. cosine or l2 (default: cosine when indexed)."
    )
    side: Literal["L", "R"] | None = Field(None, description="L or R (or left/right).")
    view: str | None = Field(
        None,
        examples=["CC", "MLO"],
        description="A mammography view code (any case); another value is a 400 that lists "
        "the known ones.",
    )
    modality: str | None = Field(
        None,
        examples=["subtracted", "low-energy", "MG"],
        description="A modality the archive holds (any case); another value is a 400 that "
        "lists the archive's.",
    )
    birads_min: int | None = Field(None, ge=BIRADS_LOW, le=BIRADS_HIGH)
    birads_max: int | None = Field(None, ge=BIRADS_LOW, le=BIRADS_HIGH)
    pathology: str | None = Field(
        None,
        examples=["Benign", "Malignant", "Normal"],
        description="Normal, Benign, Malignant or another the archive holds (any case); "
        "another value is a 400 that lists them.",
    )
    exclude_same_patient: bool | None = Field(
        None,
        description="Leave out the query patient's own images. Default (unset): yes for "
        "unit=case and for an upload the archive already holds (sha256), no for an image_id "
        "of unit=image. true/false, 1/0, yes/no, on/off; anything else is a 400.",
    )
    image_id: int | None = Field(
        None,
        ge=1,
        le=MAX_IMAGE_ID,
        description="Search with an archived image (unit=case: with its case, every view).",
    )
    unit: Literal[SEARCH_UNITS] = Field(  # type: ignore[valid-type]
        "image",
        description="What a result is: image (one picture) or case (one breast of one study, "
        "all its views; no two results the same breast).",
    )
    fusion: Literal[CASE_FUSIONS] | None = Field(  # type: ignore[valid-type]
        None,
        description="unit=case: how two cases' views make one similarity: mean (of the view "
        "vectors), best-pair, matched-views (CC with CC, MLO with MLO); default: the measured "
        "winner (mammosearch.search.cases.DEFAULT_FUSION).",
    )
    patient_id: str | None = Field(
        None,
        max_length=128,
        description="unit=case: an archived case by patient (the source's patient id, e.g. "
        "P12) and `breast`.",
    )
    breast: Literal["L", "R"] | None = Field(
        None, description="unit=case, with patient_id or study_uid: which breast (L or R)."
    )
    study_uid: str | None = Field(
        None,
        max_length=128,
        description="unit=case: the StudyInstanceUID of an archived case (with `breast`).",
    )
    case_id: str | None = Field(
        None,
        max_length=200,
        description="unit=case: an archived case by its case_id (as results give it).",
    )
    ranking: Literal[RANKINGS] | None = Field(  # type: ignore[valid-type]
        None,
        description="Result order: similarity (nearest first) or consensus (the ten nearest "
        "that agree with their BIRADS vote first); default: the server's MAMMOSEARCH_RANKING.",
    )

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, value: Any) -> int:
        number = _whole_number(value, 1, MAX_K)
        return DEFAULT_K if number is None else number

    @field_validator("birads_min", "birads_max", mode="before")
    @classmethod
    def _birads(cls, value: Any) -> int | None:
        return _whole_number(value, BIRADS_LOW, BIRADS_HIGH)

    @field_validator("image_id", mode="before")
    @classmethod
    def _image_id(cls, value: Any) -> int | None:
        return _whole_number(value, 1, MAX_IMAGE_ID)

    @field_validator("side", "breast", mode="before")
    @classmethod
    def _side(cls, value: Any) -> str | None:
        text = _text(value)
        if text is None:
            return None
        if text.upper()[:1] not in ("L", "R"):
            raise _bad(f"{value!r} is not L or R")
        return text.upper()[:1]

    @field_validator("view", mode="before")
    @classmethod
    def _view(cls, value: Any) -> str | None:
        text = _text(value)
        return text.upper() if text else None

    @field_validator("ranking", mode="before")
    @classmethod
    def _ranking(cls, value: Any) -> str | None:
        text = _text(value)
        if text is not None and text.lower() not in RANKINGS:
            raise _bad(f"{text!r} is not one of {', '.join(RANKINGS)}")
        return text.lower() if text else None

    @field_validator("modality", "pathology", "metric", "patient_id", "study_uid", mode="before")
    @classmethod
    def _stripped(cls, value: Any) -> str | None:
        return _text(value) if value is None or isinstance(value, (str, int)) else value

    @field_validator("unit", "fusion", mode="before")
    @classmethod
    def _word(cls, value: Any, info: ValidationInfo) -> Any:
        """Any case; empty or unset is the default (unit: image; fusion: the winner's)."""
        text = _text(value) if isinstance(value, str) or value is None else value
        if text is None:
            return "image" if info.field_name == "unit" else None
        return text.lower() if isinstance(text, str) else text

    @field_validator("case_id", mode="before")
    @classmethod
    def _case_id(cls, value: Any) -> str | None:
        text = _text(value) if isinstance(value, str) else value
        if text is None:
            return None
        if not isinstance(text, str):
            raise _bad(f"{value!r} is not a case id")
        try:
            parse_case_id(text)
        except ValueError as exc:
            raise _bad(str(exc)) from None
        return text

    @field_validator("exclude_same_patient", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> bool | None:
        """true/false words only: an unknown value ("junk", []) is an error, never false."""
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            word = value.strip().lower()
            if not word:
                return None
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
        raise _bad(f"{value!r} is not true or false (true/false, 1/0, yes/no, on/off)")

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> SearchRequest:
        if (
            self.birads_min is not None
            and self.birads_max is not None
            and self.birads_min > self.birads_max
        ):
            raise _bad(f"birads_min {self.birads_min} is above birads_max {self.birads_max}")
        self._check_query()
        metrics: tuple[str, ...] = (info.context or {}).get("metrics", ())
        if metrics and self.metric is None:
            default = "cosine" if "cosine" in metrics else metrics[0]
            return self.model_copy(update={"metric": default})
        if metrics and self.metric not in metrics:
            raise _bad(f"metric: {self.metric!r} is not indexed; choose {', '.join(metrics)}")
        return self

    def _check_query(self) -> None:
        """At most one archived query; case queries name a breast and ask for unit=case."""
        case_fields = [name for name in CASE_QUERY_FIELDS if getattr(self, name) is not None]
        if case_fields and self.unit != "case":
            raise _bad(f"{', '.join(case_fields)}: a case query; set unit=case")
        if self.fusion is not None and self.unit != "case":
            raise _bad("fusion: only for unit=case")
        by_patient = self.patient_id is not None or self.study_uid is not None
        if by_patient and self.breast is None:
            raise _bad("breast: required with patient_id or study_uid (L or R)")
        if self.breast is not None and not by_patient:
            raise _bad("breast: give patient_id or study_uid with it")
        given = [
            name
            for name, present in (
                ("image_id", self.image_id is not None),
                ("patient_id/study_uid", by_patient),
                ("case_id", self.case_id is not None),
            )
            if present
        ]
        if len(given) > 1:
            raise _bad(f"give one query, not {' and '.join(given)}")

    @property
    def archived_query(self) -> bool:
        """The query is an archived image or case (no file to upload)."""
        return (
            self.image_id is not None
            or self.case_id is not None
            or self.patient_id is not None
            or self.study_uid is not None
        )

    def excludes_query_patient(self, recognised_upload: bool = False) -> bool:
        """Whether the query's patient is left out: as asked, else yes for unit=case and for
        an upload the archive already holds, no for an image_id of unit=image."""
        if self.exclude_same_patient is not None:
            return self.exclude_same_patient
        return self.unit == "case" or recognised_upload

    def filters_detail(self) -> dict[str, Any]:
        """The filters that are set, as the audit log records them."""
        return self.model_dump(include=set(FILTER_NAMES), exclude_none=True)

    def search_filters(self) -> SearchFilters:
        return SearchFilters(**{name: getattr(self, name) for name in FILTER_NAMES})


def _message(error: Mapping[str, Any]) -> str:
    """One error as `name: problem` (the model-level checks name their fields themselves)."""
    location = ".".join(str(part) for part in error.get("loc", ()))
    if error.get("type") == "extra_forbidden":
        known = ", ".join(SearchRequest.model_fields)
        return f"{location}: unknown field; a search takes {known}"
    return f"{location}: {error['msg']}" if location else str(error["msg"])


def parse_search_request(values: Mapping[str, Any], metrics: tuple[str, ...] = ()) -> SearchRequest:
    """Validate a form, a JSON body or CLI options; BadSearchRequest names what is wrong.

    Unknown fields are errors (a typo must not search differently), except a form's
    TRANSPORT_FIELDS; None values (the CLI's unset options) count as not given.
    """
    fields = {
        name: value
        for name, value in dict(values).items()
        if name not in TRANSPORT_FIELDS and not (value is None and name in CASE_QUERY_FIELDS)
    }
    try:
        return SearchRequest.model_validate(fields, context={"metrics": tuple(metrics)})
    except ValidationError as exc:
        raise BadSearchRequest("; ".join(_message(error) for error in exc.errors())) from None
