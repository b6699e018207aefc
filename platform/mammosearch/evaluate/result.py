"""The outcome of one evaluation, as plain data that reports, plots and the database reuse."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class EvaluationError(ValueError):
    """An evaluation that cannot run; the message names the input and the problem."""


@dataclass
class EvaluationResult:
    """Summary metrics, chance levels, a per-class table and a per-query table (Table 1 style).

    `per_class` maps each class (as a string) to {"images", "queries", metric: mean or None};
    `per_query` is a list of dicts, one per scored query, with its top neighbours.
    """

    embedding_space: dict[str, Any]
    protocol: str
    label: str
    metric: str
    ks: tuple[int, ...]
    map_cutoff: int | None
    queries: int
    archive_size: int
    excluded: dict[str, int]
    metrics: dict[str, float]
    chance: dict[str, float]
    per_class: dict[str, dict[str, Any]]
    per_query: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    protocol_note: str | None = None
    duration_s: float | None = None
    run_id: int | None = None
    training_overlap: dict[str, Any] | None = None  # trained spaces: leakage + out-of-fold

    def metric_keys(self) -> list[str]:
        """The ranking-metric keys in table order (no timing)."""
        return list(self.chance)

    def to_dict(self, include_per_query: bool = True) -> dict[str, Any]:
        """The JSON document of `mammosearch evaluate --json`."""
        document: dict[str, Any] = {
            "embedding_space": self.embedding_space,
            "protocol": self.protocol,
        }
        if self.protocol_note:
            document["protocol_note"] = self.protocol_note
        document.update(
            {
                "label": self.label,
                "metric": self.metric,
                "ks": list(self.ks),
                "map_cutoff": self.map_cutoff,
                "queries": self.queries,
                "archive_size": self.archive_size,
                "excluded": self.excluded,
                "metrics": self.metrics,
                "per_class": self.per_class,
                "chance": self.chance,
                "config": self.config,
                "duration_s": self.duration_s,
                "run_id": self.run_id,
            }
        )
        if self.training_overlap is not None:
            document["training_overlap"] = self.training_overlap
        if include_per_query:
            document["per_query"] = self.per_query
        return document
