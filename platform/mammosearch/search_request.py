"""A search request, defined once: the web form, the API and the CLI validate through it.

The OpenAPI document of /api/v1 is generated from this model, so its limits (k, BIRADS
range, sides) and its filter list cannot drift from what the server accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

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

from mammosearch.birads import ASSESSMENT_CATEGORIES
from mammosearch.ranking import RANKINGS

MAX_K = 100  # the most neighbours one request may ask for, everywhere
DEFAULT_K = 10
MAX_IMAGE_ID = 2**63 - 1  # the database's BIGINT
BIRADS_LOW, BIRADS_HIGH = ASSESSMENT_CATEGORIES[0], ASSESSMENT_CATEGORIES[-1]
FILTER_NAMES = ("side", "view", "modality", "birads_min", "birads_max", "pathology")
TRUE_WORDS = {"1", "true", "yes", "on"}


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

    model_config = ConfigDict(frozen=True, extra="ignore")

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
    exclude_same_patient: bool = Field(
        False, description="With image_id: leave out the query patient's own images."
    )
    image_id: int | None = Field(
        None, ge=1, le=MAX_IMAGE_ID, description="Search with an archived image."
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

    @field_validator("side", mode="before")
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

    @field_validator("modality", "pathology", "metric", mode="before")
    @classmethod
    def _stripped(cls, value: Any) -> str | None:
        return _text(value)

    @field_validator("exclude_same_patient", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        return str(value or "").strip().lower() in TRUE_WORDS

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> SearchRequest:
        if (
            self.birads_min is not None
            and self.birads_max is not None
            and self.birads_min > self.birads_max
        ):
            raise _bad(f"birads_min {self.birads_min} is above birads_max {self.birads_max}")
        metrics: tuple[str, ...] = (info.context or {}).get("metrics", ())
        if metrics and self.metric is None:
            default = "cosine" if "cosine" in metrics else metrics[0]
            return self.model_copy(update={"metric": default})
        if metrics and self.metric not in metrics:
            raise _bad(f"metric: {self.metric!r} is not indexed; choose {', '.join(metrics)}")
        return self

    def filters_detail(self) -> dict[str, Any]:
        """The filters that are set, as the audit log records them."""
        return self.model_dump(include=set(FILTER_NAMES), exclude_none=True)

    def search_filters(self) -> Any:
        from mammosearch.search import SearchFilters

        return SearchFilters(**{name: getattr(self, name) for name in FILTER_NAMES})


def _message(error: Mapping[str, Any]) -> str:
    """One error as `name: problem` (the model-level checks name their fields themselves)."""
    location = ".".join(str(part) for part in error.get("loc", ()))
    return f"{location}: {error['msg']}" if location else str(error["msg"])


def parse_search_request(
    values: Mapping[str, Any], metrics: tuple[str, ...] = ()
) -> SearchRequest:
    """Validate a form, a JSON body or CLI options; BadSearchRequest names what is wrong."""
    try:
        return SearchRequest.model_validate(dict(values), context={"metrics": tuple(metrics)})
    except ValidationError as exc:
        raise BadSearchRequest("; ".join(_message(error) for error in exc.errors())) from None
