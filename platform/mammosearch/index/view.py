"""A view: one manifest version with its loaded segments, immutable once built.

Readers search the view they picked up; a write builds the next one and swaps it in, so a
search never sees half of a change. Everything a search needs per segment (tombstone
selectors, live rows and bitmaps, tuned parameters) is built here once per view.

Deletion is by tombstone: a manifest entry lists the ids removed from its segment, so a
later re-add of the same id (into a newer delta) supersedes the old copy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from mammosearch.index.manifest import DELTA, SEALED
from mammosearch.index.options import IndexOptions
from mammosearch.index.segment_store import SegmentDamaged, SegmentStore
from mammosearch.index.segments import Segment, search_parameters


@dataclass(frozen=True)
class View:
    """An immutable snapshot of one manifest version and its loaded segments."""

    version: int = 0
    manifest: dict[str, Any] | None = None
    segments: tuple[Segment, ...] = ()
    deleted: tuple[np.ndarray, ...] = ()  # tombstoned ids per segment, sorted
    # per segment: a selector rejecting its tombstones (None when it has none), with the
    # selectors it points to, kept alive because SWIG selectors hold raw pointers
    exclusions: tuple[tuple[Any, ...] | None, ...] = ()
    # per segment: a boolean per row, False where tombstoned (None when it has no tombstones)
    live_rows: tuple[np.ndarray | None, ...] = ()
    # per segment: its live ids as a packed bitmap by id (what filtered search intersects)
    live_bits: tuple[np.ndarray, ...] = ()
    live_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    # per segment: the search parameters tuned when it was sealed (index/tuning.py)
    tuned: tuple[dict[str, Any], ...] = ()
    # per segment: the parameters of an unfiltered search, built once per view
    params: tuple[Any, ...] = ()
    # segments the manifest names that are not served (missing, damaged: quarantined)
    damage: tuple[str, ...] = ()

    def entries(self) -> list[dict[str, Any]]:
        """A mutable copy of the manifest's segment entries (what a write edits)."""
        if self.manifest is None:
            return []
        return [dict(entry, deleted=list(entry["deleted"])) for entry in self.manifest["segments"]]

    def live_ids_in(self, positions: Iterable[int]) -> np.ndarray:
        """Live ids of the segments at `positions`."""
        parts = [np.empty(0, dtype=np.int64)]
        for position in positions:
            ids, live = self.segments[position].ids, self.live_rows[position]
            parts.append(ids if live is None else ids[live])
        return np.concatenate(parts)

    def live_vectors_in(self, positions: Iterable[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids and stored vectors of the segments at `positions`, tombstones left out."""
        positions = list(positions)
        vector_parts = [np.empty((0, dim), dtype=np.float32)]
        for position in positions:
            vectors, live = self.segments[position].vectors(), self.live_rows[position]
            vector_parts.append(vectors if live is None else vectors[live])
        return self.live_ids_in(positions), np.concatenate(vector_parts)

    def main_position(self) -> int | None:
        """Where the main (sealed) index sits among the segments, if there is one."""
        if self.manifest is None:
            return None
        for position, entry in enumerate(self.manifest["segments"]):
            if entry["kind"] == SEALED:
                return position
        return None

    def delta_live(self) -> int:
        """Live vectors in the deltas: what the next merge takes into the main index."""
        if self.manifest is None:
            return 0
        return sum(
            entry["count"] - len(entry["deleted"])
            for entry in self.manifest["segments"]
            if entry["kind"] == DELTA
        )


def load_view(
    manifest: dict[str, Any],
    store: SegmentStore,
    options: IndexOptions,
    missing_is_damage: bool = True,
) -> View | None:
    """The view of `manifest`: its sound segments, the others in `damage`. None when a
    file is missing and not `missing_is_damage` (a writer may have just collected it)."""
    segments, deleted_parts, live_parts = [], [], [np.empty(0, dtype=np.int64)]
    live_row_parts: list[np.ndarray | None] = []
    sound_entries, damage = [], []
    for entry in manifest["segments"]:
        try:
            segment = store.segment(entry)
        except FileNotFoundError as error:
            if not missing_is_damage:
                return None
            damage.append(f"{error.args[0]}; its vectors are not served")
            continue
        except SegmentDamaged as error:
            damage.append(str(error))
            continue
        deleted = np.array(sorted(entry["deleted"]), dtype=np.int64)
        live_rows = ~np.isin(segment.ids, deleted)
        segments.append(segment)
        sound_entries.append(entry)
        deleted_parts.append(deleted)
        live_row_parts.append(live_rows if len(deleted) else None)
        live_parts.append(segment.ids[live_rows])
    if damage:
        # Positions in view.manifest["segments"] match view.segments: the next write
        # publishes the sound segments only.
        manifest = {**manifest, "segments": sound_entries}
    view = View(
        version=manifest["version"],
        manifest=manifest,
        segments=tuple(segments),
        deleted=tuple(deleted_parts),
        exclusions=tuple(_exclusion(deleted) for deleted in deleted_parts),
        live_rows=tuple(live_row_parts),
        live_bits=tuple(
            _without(segment.id_bits, deleted)
            for segment, deleted in zip(segments, deleted_parts, strict=True)
        ),
        live_ids=np.sort(np.concatenate(live_parts)),
        tuned=tuple(dict(entry.get("search") or {}) for entry in manifest["segments"]),
        damage=tuple(damage),
    )
    params = tuple(
        search_parameters(
            segment.inner,
            exclusion[0] if exclusion is not None else None,
            outer=segment.index,
            **options.knobs(tuned),
        )
        for segment, exclusion, tuned in zip(
            view.segments, view.exclusions, view.tuned, strict=True
        )
    )
    return dataclasses.replace(view, params=params)


def as_ids(ids: Iterable[int] | np.ndarray, name: str = "ids") -> np.ndarray:
    """Ids from a caller as a 1-D int64 array; ValueError for anything else or a negative id."""
    if isinstance(ids, set | frozenset):
        ids = list(ids)
    array = np.asarray(ids)
    if array.size == 0:
        return np.empty(0, dtype=np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name}: expected 1-D integers, got {array.dtype} {array.shape}")
    if (array < 0).any():
        raise ValueError(f"{name}: negative ids are not allowed (-1 pads search results)")
    return array.astype(np.int64, copy=False)


def _without(bits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """A packed bitmap by id (little bit order) with these ids cleared (a copy if any)."""
    ids = ids[ids < len(bits) * 8]
    if len(ids) == 0:
        return bits
    cleared = bits.copy()
    np.bitwise_and.at(cleared, ids >> 3, ~(np.uint8(1) << (ids & 7).astype(np.uint8)))
    return cleared


def _exclusion(deleted: np.ndarray) -> tuple[Any, ...] | None:
    """(selector of ids not tombstoned, the selector it wraps), built once per view."""
    if len(deleted) == 0:
        return None
    tombstones = faiss.IDSelectorBatch(deleted)
    return (faiss.IDSelectorNot(tombstones), tombstones)
