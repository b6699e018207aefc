"""Evaluation through the served index: what a radiologist's search really returns.

`mammosearch evaluate` ranks with exact search by default, so the effect of an ANN
factory (HNSW, IVF) on P@k is never seen. With `--through-index` the candidates come from
the space's own ShardedIndex, with its factory and tuned efSearch / nprobe, at the depth a
search asks for plus room for the candidates the protocol leaves out (the query itself,
its patient's other images).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace
from mammosearch.evaluate.evaluator import RankedSearch

EXCLUDED_MARGIN = 32  # candidates a query may lose to the protocol (itself, its patient)


def served_search(
    settings: Settings, space: EmbeddingSpace, metric: str, image_ids: Sequence[int]
) -> tuple[RankedSearch, dict[str, Any]]:
    """A RankedSearch over the served index, answering in rows of `image_ids`, and what it is."""
    from mammosearch.index import open_index

    served = open_index(settings, space, metric)
    ids = np.asarray(image_ids, dtype=np.int64)
    row_of = np.full(int(ids.max(initial=0)) + 1, -1, dtype=np.int64)
    row_of[ids] = np.arange(len(ids))

    def search(queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        scores, found = served.search(queries, depth)
        known = (found >= 0) & (found < len(row_of))
        rows = np.where(known, row_of[np.where(known, found, 0)], -1)
        return scores, rows

    stats = served.stats()
    return search, {
        "factory": stats["factory"],
        "vectors": stats["vectors"],
        "segments": stats["segments"],
        "tuned_search": stats["tuned_search"],
    }


def through_index_depth(ks: Sequence[int]) -> int:
    return max(ks) + EXCLUDED_MARGIN
