"""Building a space's main index: whole from vectors, or extended by new ones in place.

The main index is the one large trained index of a (space, metric); small Flat deltas are
merged into it. A whole build trains the factory (IVF's coarse quantizer and PQ codebooks)
on the vectors themselves; an extension adds new vectors to a writable copy of the built
index, so they are assigned by the quantizer it was trained with (what FAISS's
`merge_from` does with a separately filled copy, without building that copy). Either way
the efSearch / nprobe that keeps the recall floor is tuned on a held-out sample of the new
vectors before they are added (tuning.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from mammosearch.index.segments import FLAT, Segment, as_id_map, build_index, stored_ids
from mammosearch.index.tuning import held_out_order, tune_segment


@dataclass
class BuiltMain:
    """A main index in memory, ready to be serialised, with what its manifest entry says."""

    index: faiss.IndexIDMap2
    ids: np.ndarray  # in storage order
    factory: str
    trained_on: int
    tuned: dict[str, Any] | None


def build_whole(ids: np.ndarray, vectors: np.ndarray, metric: str, factory: str) -> BuiltMain:
    """Train `factory` on these (prepared) vectors and add them all."""
    if factory == FLAT:
        index, used = build_index(ids, vectors, metric, factory)
        return BuiltMain(index, ids.copy(), used, len(ids), None)
    order, held = held_out_order(len(ids))
    ids, vectors = ids[order], np.ascontiguousarray(vectors[order])
    kept = len(ids) - held
    index, used = build_index(ids[:kept], vectors[:kept], metric, factory)
    tuned = tune_segment(index, ids[:kept], vectors[:kept], vectors[kept:], metric)
    if held:
        index.add_with_ids(vectors[kept:], ids[kept:])
    return BuiltMain(index, ids, used, len(ids), tuned)


def extend(
    path: Path, factory: str, trained_on: int, ids: np.ndarray, vectors: np.ndarray, metric: str
) -> BuiltMain:
    """The main index stored at `path`, read whole (writable), plus these vectors."""
    index = as_id_map(faiss.read_index(str(path)), path)
    order, held = held_out_order(len(ids))
    ids, vectors = ids[order], np.ascontiguousarray(vectors[order])
    kept = len(ids) - held
    index.add_with_ids(vectors[:kept], ids[:kept])
    tuned = None
    stored = Segment(file=path.name, index=index, ids=stored_ids(index), factory=factory)
    if held and not stored.exhaustive:
        tuned = tune_segment(index, stored.ids, stored.vectors(), vectors[kept:], metric)
    if held:
        index.add_with_ids(vectors[kept:], ids[kept:])
    return BuiltMain(index, stored_ids(index), factory, trained_on, tuned)
