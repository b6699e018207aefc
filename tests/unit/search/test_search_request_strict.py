"""The search request model reads nothing it does not know: a typo never searches differently."""

from __future__ import annotations

import pytest

from mammosearch.search.request import BadSearchRequest, parse_search_request


@pytest.mark.parametrize("value", ["junk", [], {}, 2, "maybe", 0.5])
def test_an_unknown_exclude_same_patient_value_is_refused_not_read_as_false(value) -> None:
    with pytest.raises(BadSearchRequest, match="exclude_same_patient: .* is not true or false"):
        parse_search_request({"image_id": 1, "exclude_same_patient": value})


@pytest.mark.parametrize(
    ("value", "read"),
    [
        (True, True),
        ("on", True),
        ("1", True),
        ("Yes", True),
        (1, True),
        (False, False),
        ("0", False),
        ("off", False),
        ("false", False),
        (0, False),
        ("", None),
        (None, None),
    ],
)
def test_the_true_and_false_words_are_read_and_unset_means_the_default(value, read) -> None:
    assert parse_search_request({"exclude_same_patient": value}).exclude_same_patient is read


def test_an_unknown_field_is_refused_naming_it_and_the_form_token_is_not_a_field() -> None:
    with pytest.raises(BadSearchRequest, match="exlude_same_patient: unknown field"):
        parse_search_request({"image_id": 1, "exlude_same_patient": True})
    assert parse_search_request({"image_id": 1, "csrf_token": "abc"}).image_id == 1


def test_the_query_patient_default_follows_the_unit_and_the_upload() -> None:
    image = parse_search_request({"image_id": 1})
    assert not image.excludes_query_patient() and image.excludes_query_patient(True)
    assert parse_search_request({"image_id": 1, "unit": "case"}).excludes_query_patient()
    kept = parse_search_request({"unit": "case", "image_id": 1, "exclude_same_patient": "0"})
    assert not kept.excludes_query_patient(True)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"case_id": "12-L"}, "case_id: a case query; set unit=case"),
        ({"unit": "case", "patient_id": "P1"}, "breast: required with patient_id"),
        ({"unit": "case", "breast": "L"}, "breast: give patient_id or study_uid"),
        (
            {"unit": "case", "image_id": 1, "patient_id": "P1", "breast": "L"},
            "give one query, not image_id and patient_id/study_uid",
        ),
        ({"unit": "case", "case_id": "twelve"}, "case id 'twelve'"),
        ({"fusion": "mean"}, "fusion: only for unit=case"),
        ({"unit": "breast"}, "unit"),
    ],
)
def test_case_queries_are_checked_at_the_door(values, message) -> None:
    with pytest.raises(BadSearchRequest, match=message):
        parse_search_request(values)


def test_a_case_query_reads_its_fields() -> None:
    request = parse_search_request(
        {"unit": "Case", "patient_id": " P12 ", "breast": "left", "fusion": "BEST-PAIR"}
    )
    assert (request.unit, request.patient_id, request.breast, request.fusion) == (
        "case",
        "P12",
        "L",
        "best-pair",
    )
    assert request.archived_query
