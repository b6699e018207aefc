"""The filterable metadata of every image as numpy arrays indexed by image id.

A filtered search used to read every allowed id from SQL and build a selector from them
per request (58 ms for 200k ids). The table holds side, view, modality, BIRADS, pathology,
patient and status per id in compact arrays, so a request's allowed set is a few numpy
comparisons and comes out as the boolean mask `ShardedIndex.search` takes.

The database stays the truth. The table re-reads only what changed: at most every
`check_interval_s` (and whenever the caller says the index moved on) it asks the images
table for (count, max id, max updated_at); on a change it re-reads the rows updated since
its last watermark (less `overlap_s`, for transactions that committed late) and any new
id; a count that still disagrees (rows deleted), or `full_reload_s` passed, reads it all
again. Matching follows `SearchFilters.apply` exactly: side upper-cased to its first
letter, view upper-case, modality and pathology lower-case, BIRADS bounds exclude images
without BIRADS, only `indexed` images pass.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from mammosearch.db.models import Image, ImageStatus
from mammosearch.search.filters import BOUND_FIELDS, CATEGORY_FIELDS

if TYPE_CHECKING:
    from mammosearch.search.request import SearchFilters

CHECK_INTERVAL_S = 1.0
OVERLAP_S = 300.0
FULL_RELOAD_S = 600.0
NONE_CODE = -1
CATEGORICAL = {field.name: field for field in CATEGORY_FIELDS}
"""Each categorical column and how its values are compared (as the SQL filters compare)."""
NUMERIC = tuple(dict.fromkeys(bound.column_name for bound in BOUND_FIELDS))
"""The numeric columns the bounds read."""
_COLUMNS = (
    Image.id,
    Image.status,
    *(getattr(Image, name) for name in (*CATEGORICAL, *NUMERIC)),
    Image.patient_id,
    Image.updated_at,
)


@dataclass(frozen=True)
class _Arrays:
    """One consistent snapshot; refreshes build a new one and swap it in."""

    exists: np.ndarray  # bool per id
    indexed: np.ndarray  # bool per id
    codes: dict[str, np.ndarray]  # int16 per id per categorical column, NONE_CODE for NULL
    vocab: dict[str, dict[str, int]]  # normalised value -> code, per categorical column
    numbers: dict[str, np.ndarray]  # float32 per id per NUMERIC column, NaN for NULL (so
    # every bound excludes it)
    patient: np.ndarray  # int64 per id, NONE_CODE for NULL
    watermark: datetime | None  # the newest updated_at read
    signature: tuple[Any, ...] | None

    @classmethod
    def empty(cls) -> _Arrays:
        return cls(
            exists=np.zeros(0, dtype=bool),
            indexed=np.zeros(0, dtype=bool),
            codes={name: np.zeros(0, dtype=np.int16) for name in CATEGORICAL},
            vocab={name: {} for name in CATEGORICAL},
            numbers={name: np.zeros(0, dtype=np.float32) for name in NUMERIC},
            patient=np.zeros(0, dtype=np.int64),
            watermark=None,
            signature=None,
        )

    def grown(self, size: int) -> _Arrays:
        """A copy whose arrays cover ids up to size - 1 (new ids absent)."""
        extra = max(0, size - len(self.exists))

        def grow(array: np.ndarray, fill: Any) -> np.ndarray:
            return np.concatenate([array, np.full(extra, fill, dtype=array.dtype)])

        return _Arrays(
            exists=grow(self.exists, False),
            indexed=grow(self.indexed, False),
            codes={name: grow(codes, NONE_CODE) for name, codes in self.codes.items()},
            vocab={name: dict(values) for name, values in self.vocab.items()},
            numbers={name: grow(values, np.nan) for name, values in self.numbers.items()},
            patient=grow(self.patient, NONE_CODE),
            watermark=self.watermark,
            signature=self.signature,
        )


class FilterTable:
    """Per process: the metadata arrays, refreshed from the images table when it changes."""

    def __init__(
        self,
        check_interval_s: float = CHECK_INTERVAL_S,
        overlap_s: float = OVERLAP_S,
        full_reload_s: float = FULL_RELOAD_S,
    ) -> None:
        self.check_interval_s = check_interval_s
        self.overlap_s = overlap_s
        self.full_reload_s = full_reload_s
        self._arrays = _Arrays.empty()
        self._checked_at = -float("inf")
        self._full_at = -float("inf")
        self._index_versions: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self._arrays.exists.sum())

    def allowed(
        self,
        session: Session,
        filters: SearchFilters,
        exclude: set[int] | None = None,
        index_state: tuple[str, int] | None = None,
    ) -> np.ndarray:
        """Boolean mask by image id: indexed images passing `filters`, `exclude` left out."""
        self.refresh(session, index_state=index_state)
        arrays = self._arrays
        mask = arrays.indexed.copy()
        for field in CATEGORY_FIELDS:
            if wanted := getattr(filters, field.name):
                mask &= self._equals(arrays, field.name, field.wanted(wanted))
        for bound in BOUND_FIELDS:
            if (limit := getattr(filters, bound.name)) is not None:
                mask &= bound.passes(arrays.numbers[bound.column_name], limit)
        if filters.exclude_patient_id is not None:
            mask &= (arrays.patient != filters.exclude_patient_id) & (arrays.patient != NONE_CODE)
        for image_id in exclude or ():
            if 0 <= image_id < len(mask):
                mask[image_id] = False
        return mask

    def refresh(
        self, session: Session, force: bool = False, index_state: tuple[str, int] | None = None
    ) -> bool:
        """Bring the arrays up to the images table; True when anything was re-read.

        `index_state` (an index's root and manifest version): a version not seen before
        means images were just indexed, so the table checks at once, not after the interval.
        """
        now = time.monotonic()
        moved = (
            index_state is not None and self._index_versions.get(index_state[0]) != index_state[1]
        )
        if not (force or moved) and now - self._checked_at < self.check_interval_s:
            return False
        with self._lock:
            if index_state is not None:
                self._index_versions[index_state[0]] = index_state[1]
            self._checked_at = now
            signature = tuple(
                session.execute(
                    select(func.count(Image.id), func.max(Image.id), func.max(Image.updated_at))
                ).one()
            )
            arrays = self._arrays
            if signature == arrays.signature and not force:
                return False
            if force or arrays.signature is None or now - self._full_at >= self.full_reload_s:
                self._arrays = self._read_all(session, signature)
                self._full_at = now
                return True
            updated = self._read_changed(session, arrays, signature)
            if int(updated.exists.sum()) != signature[0]:  # rows were deleted
                updated = self._read_all(session, signature)
                self._full_at = now
            self._arrays = updated
            return True

    def _read_all(self, session: Session, signature: tuple[Any, ...]) -> _Arrays:
        size = (signature[1] or 0) + 1
        return self._apply(session, _Arrays.empty().grown(size), select(*_COLUMNS), signature)

    def _read_changed(
        self, session: Session, arrays: _Arrays, signature: tuple[Any, ...]
    ) -> _Arrays:
        known_size = len(arrays.exists)
        changed = Image.id >= known_size
        if arrays.watermark is not None:
            since = arrays.watermark - timedelta(seconds=self.overlap_s)
            changed = or_(changed, Image.updated_at >= since)
        grown = arrays.grown((signature[1] or 0) + 1)
        return self._apply(session, grown, select(*_COLUMNS).where(changed), signature)

    @staticmethod
    def _apply(
        session: Session, arrays: _Arrays, query: Any, signature: tuple[Any, ...]
    ) -> _Arrays:
        """Write the rows `query` selects into `arrays` (a private copy) and return it."""
        watermark = arrays.watermark
        for row in session.execute(query):
            image_id = row.id
            if image_id >= len(arrays.exists):
                arrays = arrays.grown(image_id + 1)
            arrays.exists[image_id] = True
            arrays.indexed[image_id] = row.status == ImageStatus.INDEXED
            for name, field in CATEGORICAL.items():
                value = getattr(row, name)
                if value is None:
                    arrays.codes[name][image_id] = NONE_CODE
                    continue
                vocab = arrays.vocab[name]
                key = field.stored(value)
                arrays.codes[name][image_id] = vocab.setdefault(key, len(vocab))
            for name in NUMERIC:
                number = getattr(row, name)
                arrays.numbers[name][image_id] = np.nan if number is None else number
            arrays.patient[image_id] = NONE_CODE if row.patient_id is None else row.patient_id
            if row.updated_at is not None and (watermark is None or row.updated_at > watermark):
                watermark = row.updated_at
        return replace(arrays, watermark=watermark, signature=signature)

    @staticmethod
    def _equals(arrays: _Arrays, name: str, wanted: str) -> np.ndarray:
        """Where the column holds `wanted` (already as the field compares it)."""
        code = arrays.vocab[name].get(wanted)
        if code is None:
            return np.zeros(len(arrays.exists), dtype=bool)
        equal: np.ndarray = arrays.codes[name] == code
        return equal
