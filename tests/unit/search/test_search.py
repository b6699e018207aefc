"""Search answers bad requests with a message and never lets filters shorten the list."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import Image
from mammosearch.pipeline.process import process_pending
from mammosearch.search.request import BadSearchRequest, SearchFilters, parse_search_request
from mammosearch.search.service import (
    Hit,
    ImageNotFound,
    SearchError,
    SearchService,
    in_consensus_order,
    suggest_from_hits,
)
from tests.unit.pipeline.test_pipeline import _add_images


@pytest.fixture
def archive(session: Session, settings: Settings) -> tuple[Settings, list[int]]:
    """Twelve synthetic images embedded and indexed with efficientnet-lite0."""
    lite = settings.with_overrides(backbone="efficientnet-lite0")
    ids = _add_images(session, lite, 6, seed=1) + _add_images(session, lite, 6, seed=2)
    for image in session.query(Image).filter(Image.id.in_(ids[6:])):
        image.side = "R"
    session.commit()
    process_pending(lite)
    return lite, ids


@pytest.mark.parametrize(
    ("k", "metric", "message"),
    [(0, "cosine", "k: 0 is outside 1"), (5, "hamming", "'hamming' is not indexed")]
    + [(5000, "l2", "k: 5000 is outside 1")],
)
def test_bad_parameters_are_refused_with_a_reason_at_the_door(
    archive,
    k: int,
    metric: str,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    """k and the metric are checked once, by the request every search passes through."""
    settings, ids = archive
    with pytest.raises(BadSearchRequest, match=message):
        parse_search_request({"image_id": ids[0], "k": k, "metric": metric}, settings.index_metrics)


def test_an_unknown_image_id_is_named(session: Session, archive) -> None:  # type: ignore[no-untyped-def]
    settings, _ = archive
    with pytest.raises(ImageNotFound, match="image 424242: not in the archive"):
        SearchService(settings).search_image_id(session, 424242, k=3)


def test_a_side_filter_and_patient_exclusion_still_fill_k(
    session: Session,
    archive,  # type: ignore[no-untyped-def]
) -> None:
    settings, ids = archive
    query = session.get(Image, ids[0])
    filters = SearchFilters(side="R", exclude_patient_id=query.patient_id)
    response = SearchService(settings).search_image_id(session, ids[0], k=6, filters=filters)
    assert [hit.side for hit in response.results] == ["R"] * 6
    assert {hit.image_id for hit in response.results} == set(ids[6:])


def test_the_hits_vote_weights_neighbours_by_similarity_and_lists_them_unmeasured() -> None:
    """An unmeasured space: the shares and counts are listed, no class is put forward."""

    def hit(birads: int | None, similarity: float, pathology: str | None) -> Hit:
        return Hit(1, 1, "p", 1 - similarity, similarity, birads, str(birads), pathology,
                   None, None, "x", None, None, "f")  # fmt: skip

    vote = suggest_from_hits(
        [hit(2, 0.9, "Benign"), hit(5, 0.3, "Malignant"), hit(5, 0.3, None), hit(None, 0.99, None)],
        {},
    )
    assert vote["leading"] == 2 and vote["birads"] is None and vote["status"] == "unmeasured"
    assert vote["distribution"] == {"2": 0.6, "5": 0.4}
    assert vote["votes"] == {"2": 1, "5": 2} and vote["neighbours"] == 3
    assert vote["pathology"]["votes"] == {"benign": 1, "malignant": 1}


def test_excluding_the_query_patient_by_flag_drops_their_other_images(
    session: Session,
    archive,  # type: ignore[no-untyped-def]
) -> None:
    settings, ids = archive
    response = SearchService(settings).search_image_id(
        session, ids[0], k=6, exclude_same_patient=True
    )
    assert {hit.image_id for hit in response.results} == set(ids[6:])


def test_an_unknown_filter_value_is_refused_with_the_choices(
    session: Session,
    archive,  # type: ignore[no-untyped-def]
) -> None:
    """The core refuses view=LATERAL (so the CLI does too), naming the known views."""
    settings, ids = archive
    with pytest.raises(SearchError, match=r"view: 'LATERAL' is not known; choose CC, MLO"):
        SearchService(settings).search_image_id(
            session, ids[0], k=3, filters=SearchFilters(view="LATERAL")
        )


def test_the_suggestion_is_the_vote_of_ten_neighbours_whatever_k(
    session: Session,
    archive,  # type: ignore[no-untyped-def]
) -> None:
    """Its measured accuracy is of a ten-neighbour vote, so k=3 still asks ten."""
    settings, ids = archive
    service = SearchService(settings)
    few = service.search_image_id(session, ids[0], k=3, ranking="similarity")
    ten = service.search_image_id(session, ids[0], k=10, ranking="similarity")
    assert len(few.results) == 3
    assert few.suggested_birads["neighbours"] == 10
    assert few.suggested_birads == ten.suggested_birads


@pytest.mark.parametrize("database_ranking", ["similarity", "consensus"])
def test_consensus_order_shows_the_same_cases_agreeing_ones_first(
    session: Session,
    archive,
    database_ranking: str,  # type: ignore[no-untyped-def]
) -> None:
    settings, ids = archive
    service = SearchService(settings.with_overrides(ranking=database_ranking))
    nearest = service.search_image_id(session, ids[0], k=10, ranking="similarity")
    voted = service.search_image_id(session, ids[0], k=10, ranking="consensus")
    default = service.search_image_id(session, ids[0], k=10)
    similarities = [hit.similarity for hit in nearest.results]
    assert similarities == sorted(similarities, reverse=True)
    assert {h.image_id for h in voted.results} == {h.image_id for h in nearest.results}
    expected = in_consensus_order(nearest.results)
    assert [h.image_id for h in voted.results] == [h.image_id for h in expected]
    assert [h.rank for h in voted.results] == list(range(1, 11))
    assert (voted.ranking, nearest.ranking, default.ranking) == (
        "consensus", "similarity", database_ranking,
    )  # fmt: skip
    assert voted.to_dict()["ranking"] == "consensus"
    with pytest.raises(BadSearchRequest, match="ranking: 'best' is not one of"):
        parse_search_request({"image_id": ids[0], "ranking": "best"})  # checked at the door


def test_the_suggestion_waits_for_the_spaces_vote_to_be_measured(
    session: Session,
    archive,  # type: ignore[no-untyped-def]
) -> None:
    """Unmeasured: the neighbours' labels are listed, no class is put forward. After the
    archive's patient-excluded evaluation, the same search says how sure it is."""
    from mammosearch.evaluate.runs import evaluate_space
    from mammosearch.search.service import VOTE_MEASURE_TTL_S

    settings, ids = archive
    service = SearchService(settings)
    before = service.search_image_id(session, ids[0], k=3, exclude_same_patient=True)
    assert before.suggested_birads["status"] == "unmeasured"
    assert before.suggested_birads["birads"] is None
    assert sum(before.suggested_birads["votes"].values()) == 6
    evaluate_space(session, settings, service.space(session), ks=(1, 5))
    fresh = SearchService(settings)  # a new process, or VOTE_MEASURE_TTL_S later
    assert VOTE_MEASURE_TTL_S <= 60
    after = fresh.search_image_id(session, ids[0], k=3, exclude_same_patient=True)
    shown = after.suggested_birads
    assert shown["status"] in ("suggested", "uncertain")
    assert shown["precision"] is not None and shown["floor"] >= 0.5
    assert "patient-excluded evaluation of space" in shown["measured"]["source"]
    assert (shown["birads"] is None) == (shown["status"] == "uncertain")
