"""How a query's neighbours are ordered: by similarity, or agreeing with their vote first.

- similarity: nearest first, the index's own order.
- consensus: the vote's neighbours (the VOTE_K nearest labelled candidates, mammosearch.search.vote)
  re-ordered by similarity + `CONSENSUS_WEIGHT` x their class's share of that vote, with
  every candidate between them (an unlabelled one gets no bonus). Candidates beyond them keep
  their place. Only archive labels are used, never the query's.

Out of fold on the dev archive, consensus lifts same-BIRADS P@5 by +0.07 over similarity
order (BIRADS 1 and 5 queries gain, 4 holds, 2 loses; docs/learned-embeddings.md), at no
cost: the ten neighbours are fetched for the vote anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mammosearch.search.vote import RULE, VOTE_K, VoteRule, class_shares
from mammosearch.vocabulary import RANKINGS

CONSENSUS_WEIGHT = 0.5
"""Share-of-the-vote bonus; 0.3-1 give the same P@5 out of fold (0.476-0.484, seeds 0, 1)."""


class RankingError(ValueError):
    """An unknown ranking name; the message lists the choices."""


def check_ranking(name: str) -> str:
    if name not in RANKINGS:
        raise RankingError(f"ranking {name!r}: unknown; choose one of {', '.join(RANKINGS)}")
    return name


def consensus_order(
    similarities: Sequence[float] | np.ndarray,
    shares: Sequence[float] | np.ndarray,
    weight: float = CONSENSUS_WEIGHT,
) -> np.ndarray:
    """Positions of the vote's neighbours (given nearest first) in consensus order.

    `shares[i]` is the vote share of neighbour i's class (0 for an unlabelled one); the
    order is by similarity + weight x share, ties kept in similarity order.
    """
    similarity = np.asarray(similarities, dtype=np.float64)
    bonus = np.asarray(shares, dtype=np.float64)
    return np.argsort(-(similarity + weight * bonus), kind="stable")


def consensus_ranking(
    similarities: np.ndarray,
    class_codes: np.ndarray,
    n_classes: int,
    class_counts: np.ndarray | None = None,
    rule: VoteRule = RULE,
) -> np.ndarray:
    """A whole ranking (nearest first; codes < 0 unlabelled) in consensus order.

    The first VOTE_K labelled candidates vote (mammosearch.search.vote); every candidate up to the
    last of them is re-ordered (`consensus_order`); the rest keep their places.
    """
    codes = np.asarray(class_codes, dtype=np.int64)
    voters = np.flatnonzero(codes >= 0)[:VOTE_K]
    if voters.size == 0:
        return np.arange(codes.size)
    pool = int(voters[-1]) + 1
    shares, _ = class_shares(
        codes[:pool], np.asarray(similarities)[:pool], n_classes, class_counts, rule
    )
    bonus = np.where(codes[:pool] >= 0, shares[0][np.maximum(codes[:pool], 0)], 0.0)
    reordered = consensus_order(np.asarray(similarities)[:pool], bonus)
    return np.concatenate([reordered, np.arange(pool, codes.size)])
