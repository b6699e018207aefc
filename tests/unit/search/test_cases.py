"""The case as the unit: its key, its labels, and the fusion rules' case-to-case scores."""

from __future__ import annotations

import numpy as np
import pytest

from mammosearch.search.cases import (
    CaseKey,
    best_view_pairs,
    case_birads,
    case_key,
    case_pathology,
    fused_scores,
    parse_case_id,
    view_tag,
)

CC, MLO = view_tag("cc", "Subtracted"), view_tag("MLO", "subtracted")


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_a_case_is_one_breast_of_one_study_and_its_id_reads_back() -> None:
    cdd = case_key(12, None, "l")
    dicom = case_key(12, "1.2.840.1", "R")
    assert cdd == CaseKey(12, "", "L") and cdd.case_id == "12-L"
    assert dicom.case_id == "12-R-1.2.840.1"
    for key in (cdd, dicom, case_key(3, None, None)):
        assert parse_case_id(key.case_id) == key
    assert case_key(12, "1.2.840.1", "R") != case_key(12, "1.2.840.2", "R")
    with pytest.raises(ValueError, match="case id 'x'"):
        parse_case_id("x")


def test_a_case_label_is_its_most_suspicious_view() -> None:
    assert case_birads([2, None, 4]) == 4 and case_birads([None]) is None
    assert case_pathology(["Benign", "Malignant", None]) == "Malignant"
    assert case_pathology(["Normal", "Benign"]) == "Benign" and case_pathology([]) is None


def query_and_cases() -> tuple[np.ndarray, list, np.ndarray, list, list[int]]:
    """Query case (CC, MLO); case 0 (CC, MLO) with its CC a near copy of the query's MLO;
    case 1 (CC, MLO) matching view for view; case 2 a single MLO."""
    query = np.stack([unit(1, 0, 0), unit(0, 1, 0)])
    cases = np.stack(
        [
            unit(0, 0, 1),
            unit(0, 1, 0.01),  # case 0: CC far, MLO ~ query's MLO
            unit(1, 0.5, 0),
            unit(0.5, 1, 0),  # case 1: each view near its own
            unit(0, 1, 0.2),
        ]  # case 2: one MLO
    )
    return query, [CC, MLO], cases, [CC, MLO, CC, MLO, MLO], [0, 2, 4]


def test_best_pair_takes_the_nearest_views_and_matched_views_pairs_cc_with_cc() -> None:
    query, query_tags, cases, tags, starts = query_and_cases()
    best = fused_scores(query, query_tags, [0], cases, tags, starts, "best-pair", "cosine")[0]
    matched = fused_scores(query, query_tags, [0], cases, tags, starts, "matched-views", "cosine")[
        0
    ]
    assert best[0] == pytest.approx(float(unit(0, 1, 0.01) @ unit(0, 1, 0)))
    assert np.argmax(best) == 0  # one near-identical view wins the best pair
    # matched: case 0's CC vs the query's CC counts, so case 1 (both views close) wins
    assert matched[1] > matched[0]
    assert matched[0] == pytest.approx((0.0 + float(unit(0, 1, 0.01) @ unit(0, 1, 0))) / 2)
    # a single-view case is paired on its one view (MLO with MLO)
    assert matched[2] == pytest.approx(float(unit(0, 1, 0.2) @ unit(0, 1, 0)))


def test_matched_views_falls_back_to_the_best_pair_when_no_view_matches() -> None:
    query = np.stack([unit(1, 0, 0)])
    cases = np.stack([unit(0.2, 1, 0), unit(1, 0.1, 0)])
    scores = fused_scores(
        query, [view_tag("ML", "x")], [0], cases, [CC, MLO], [0], "matched-views", "cosine"
    )
    assert scores[0, 0] == pytest.approx(float(unit(1, 0.1, 0) @ unit(1, 0, 0)))


def test_mean_compares_the_mean_views_and_l2_scores_are_distances() -> None:
    query, query_tags, cases, tags, starts = query_and_cases()
    mean = fused_scores(query, query_tags, [0], cases, tags, starts, "mean", "cosine")[0]
    expected = unit(*(cases[2] + cases[3])) @ unit(*(query[0] + query[1]))
    assert mean[1] == pytest.approx(float(expected), abs=1e-6)
    for rule in ("mean", "best-pair", "matched-views"):
        l2 = fused_scores(query, query_tags, [0], cases, tags, starts, rule, "l2")[0]
        assert (l2 >= 0).all()
    best_l2 = fused_scores(query, query_tags, [0], cases, tags, starts, "best-pair", "l2")[0]
    assert best_l2[0] == pytest.approx(float(((unit(0, 1, 0.01) - unit(0, 1, 0)) ** 2).sum()))


def test_the_best_view_pair_names_which_views_matched() -> None:
    query, _, cases, _, starts = query_and_cases()
    pairs = best_view_pairs(query, cases, starts, "cosine")
    assert [(row, column) for row, column, _ in pairs] == [(1, 1), (0, 2), (1, 4)]


def test_many_cases_against_many_are_scored_in_one_call() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((7, 4))
    tags = [CC, MLO, CC, CC, MLO, MLO, CC]
    starts = [0, 2, 3, 5]
    for rule in ("mean", "best-pair", "matched-views"):
        scores = fused_scores(vectors, tags, starts, vectors, tags, starts, rule, "cosine")
        assert scores.shape == (4, 4)
        assert np.allclose(scores, scores.T)
        for case, start in enumerate(starts):
            end = starts[case + 1] if case + 1 < len(starts) else 7
            one = fused_scores(
                vectors[start:end], tags[start:end], [0], vectors, tags, starts, rule, "cosine"
            )
            assert np.allclose(one[0], scores[case])
