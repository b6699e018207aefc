"""The API fuzzed from its own OpenAPI document (schemathesis, in-process over WSGI).

Every generated request, valid or not, gets an answer that is not a 5xx and that matches
the document's schema for its status. A small, fixed budget here; tests/fuzz_long.py runs
the same with a large one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from mammosearch.access.users import create_api_token
from mammosearch.config import Settings
from mammosearch.db.session import make_session_factory
from mammosearch.search.request import (
    BIRADS_HIGH,
    BIRADS_LOW,
    MAX_K,
    BadSearchRequest,
    SearchRequest,
    parse_search_request,
)
from tests.factories import make_user, synthetic_image_bytes
from tests.unit.web.test_web_search import archive  # noqa: F401  (the indexed six-image archive)
from tests.unit.web_support import app_config
from web import create_app
from web.api.openapi import openapi_document

MAX_EXAMPLES = 25  # per operation; tests/fuzz_long.py takes thousands
ARCHIVED_IDS = list(range(1, 7))  # the archive fixture's six images
FUZZ_CHECKS = [not_a_server_error, response_schema_conformance]


@pytest.fixture(scope="module")
def admin_token(archive: Settings) -> str:  # noqa: F811
    """A bearer token of the API user `fuzzer`, an admin (so every operation is reachable)."""
    session = make_session_factory(archive.database_url)()
    token = create_api_token(session, make_user(session, "fuzzer", "admin"))
    session.commit()
    session.close()
    return token


@pytest.fixture(scope="module")
def fuzz_app(archive: Settings) -> Flask:  # noqa: F811
    """The app on the indexed archive."""
    return create_app(app_config(archive))


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Flask, admin_token: str) -> schemathesis.BaseSchema:
    """The app's /api/v1/openapi.json, loaded through the app itself."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzz_app, headers=headers)


OPERATIONS = [
    (path, method.upper())
    for path, methods in openapi_document()["paths"].items()
    for method in methods
]


# Values the archive fixture holds, so that aimed searches get past validation to the index.
PLAUSIBLE_SEARCH = st.fixed_dictionaries(
    {},
    optional={
        "k": st.integers(1, MAX_K),
        "metric": st.sampled_from(["l2", "cosine"]),
        "side": st.sampled_from(["L", "R", "left"]),
        "view": st.sampled_from(["CC", "mlo"]),
        "modality": st.sampled_from(["subtracted"]),
        "birads_min": st.integers(BIRADS_LOW, 3),
        "birads_max": st.integers(3, BIRADS_HIGH),
        "pathology": st.sampled_from(["Benign", "malignant", "Normal"]),
        "exclude_same_patient": st.booleans(),
    },
)


def aim_at_the_archive(
    case: schemathesis.Case, image_id: int, search: dict[str, Any]
) -> schemathesis.Case:
    """A generated case pointed at an archived image (or a real upload) with plausible
    filters, so that fuzzing reaches the index and the case views, not only a 400 or 404."""
    if case.path_parameters and "image_id" in case.path_parameters:
        case.path_parameters["image_id"] = image_id
    if isinstance(case.body, dict) and case.operation.label == "POST /search":
        for name in SearchRequest.model_fields:
            case.body.pop(name, None)
        case.body.update(search)
        if case.media_type == "multipart/form-data":
            case.body["image"] = synthetic_image_bytes(image_id)
        else:
            case.body["image_id"] = image_id
    return case


def fuzz_operation(
    api_schema: schemathesis.BaseSchema,
    path: str,
    method: str,
    token: str,
    max_examples: int,
    record: Callable[[BaseException | None], None] | None = None,
    derandomize: bool = True,
) -> None:
    """Run valid, invalid and archive-aimed requests for one operation through FUZZ_CHECKS.

    Without `record` the first failure raises (and is shrunk); with it, every example's
    outcome (None, or the failure) is passed to `record` and the run goes on (the bench).
    """
    operation = api_schema[path][method]
    positive = operation.as_strategy(GenerationMode.POSITIVE)
    cases = st.one_of(
        st.builds(aim_at_the_archive, positive, st.sampled_from(ARCHIVED_IDS), PLAUSIBLE_SEARCH),
        positive,
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    headers = {"Authorization": f"Bearer {token}"}

    @given(case=cases)
    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: schemathesis.Case) -> None:
        if record is None:
            case.call_and_validate(headers=headers, checks=FUZZ_CHECKS)
            return
        try:
            case.call_and_validate(headers=headers, checks=FUZZ_CHECKS)
        except BaseException as failure:  # noqa: BLE001 - counted, the bench goes on
            if isinstance(failure, KeyboardInterrupt):
                raise
            record(failure)
        else:
            record(None)

    call()


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_no_generated_request_gets_a_5xx_or_an_undocumented_body(
    api_schema: schemathesis.BaseSchema, admin_token: str, path: str, method: str
) -> None:
    """Each operation, fed schema-derived and malformed input: never a 5xx, always its schema."""
    fuzz_operation(api_schema, path, method, admin_token, MAX_EXAMPLES)


def test_a_whole_json_number_is_an_integer_as_the_document_says() -> None:
    """JSON Schema's integer admits 10.0 (the fuzzer sends it); 2.5 and 'ten' stay a 400."""
    params = parse_search_request({"image_id": 10.0, "k": 5.0, "birads_min": 2.0})
    assert (params.image_id, params.k, params.birads_min) == (10, 5, 2)
    for body, message in [
        ({"k": 2.5}, "k: '2.5' is not a whole number"),
        ({"k": float("inf")}, "k: 'inf' is not a whole number"),
        ({"k": 1e300}, "k: 1000000"),
        ({"k": "ten"}, "'ten'"),
    ]:
        with pytest.raises(BadSearchRequest, match=re.escape(message)):
            parse_search_request(body)
