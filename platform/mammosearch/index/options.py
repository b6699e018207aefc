"""What one index is opened with: where, which vectors, which factory, which search knobs.

One mutable object shared by the reader, the writer and housekeeping, so a caller that
tunes a live index (`index.exact_filter_rows = ...`) tunes every part at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss

from mammosearch.index.factory_choice import AUTO, choose_factory
from mammosearch.index.manifest import MANIFEST_NAME
from mammosearch.index.segments import FLAT, METRICS, faiss_metric

DEFAULT_NPROBE, DEFAULT_EF_SEARCH = 16, 64
"""For an ANN segment without tuned values (written before tuning existed)."""


@dataclass(eq=False)
class IndexOptions:
    """The arguments of ShardedIndex, checked once when it is opened."""

    root: Path
    dim: int
    metric: str
    segment_size: int = 50_000
    factory: str = FLAT
    identity: dict[str, Any] | None = None
    nprobe: int | None = None
    ef_search: int | None = None
    exact_filter_rows: int | None = None
    memory_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric {self.metric!r}: expected one of {', '.join(METRICS)}")
        if self.dim <= 0 or self.segment_size <= 0:
            raise ValueError(
                f"dim={self.dim}, segment_size={self.segment_size}: both must be positive"
            )
        if self.identity is not None and self.identity.get("dim") not in (None, self.dim):
            raise ValueError(f"identity dim {self.identity['dim']} differs from dim={self.dim}")
        if self.factory != AUTO:
            try:
                faiss.index_factory(self.dim, self.factory, faiss_metric(self.metric))
            except RuntimeError as error:
                raise ValueError(
                    f"index factory {self.factory!r}: FAISS cannot build it: {error}"
                ) from None
        self.root = Path(self.root)
        self.identity = dict(self.identity) if self.identity is not None else None

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def knobs(self, tuned: dict[str, Any]) -> dict[str, int]:
        """nprobe and efSearch for a segment: the values tuned for it at its merge, with the
        configured ones (where given) as a floor; untuned segments get the configured values,
        else DEFAULT_NPROBE / DEFAULT_EF_SEARCH."""
        knobs = {}
        for knob, configured, default in (
            ("nprobe", self.nprobe, DEFAULT_NPROBE),
            ("ef_search", self.ef_search, DEFAULT_EF_SEARCH),
        ):
            value = tuned.get(knob)
            if value is None:
                knobs[knob] = default if configured is None else configured
            else:
                knobs[knob] = max(value, configured or 0)
        return knobs

    def wanted_factory(self, count: int) -> str:
        """The factory a main index of `count` vectors is built with ("auto" decides by size)."""
        if self.factory == AUTO:
            return choose_factory(count, self.dim, self.memory_bytes)
        return self.factory
