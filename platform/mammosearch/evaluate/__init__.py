"""Retrieval evaluation: leave-one-out metrics, protocols, labels, chance levels, runs."""

from __future__ import annotations

import importlib
from typing import Any

# Each public name and the module that defines it. Imported on first use, so a light
# caller (the CLI's --help, `status`) reaching one submodule never loads torch or faiss.
_HOMES = {
    "DEFAULT_KS": "mammosearch.evaluate.evaluator",
    "DEFAULT_PROTOCOL": "mammosearch.evaluate.protocols",
    "DISTANCE_METRICS": "mammosearch.evaluate.evaluator",
    "EvaluationError": "mammosearch.evaluate.result",
    "EvaluationResult": "mammosearch.evaluate.result",
    "LABELS": "mammosearch.evaluate.labels",
    "LabelSpec": "mammosearch.evaluate.labels",
    "METRICS": "mammosearch.evaluate.metrics",
    "PROTOCOLS": "mammosearch.evaluate.protocols",
    "Protocol": "mammosearch.evaluate.protocols",
    "RankingMetric": "mammosearch.evaluate.metrics",
    "evaluate_space": "mammosearch.evaluate.runs",
    "evaluate_vectors": "mammosearch.evaluate.evaluator",
    "format_per_class": "mammosearch.evaluate.tables",
    "format_summary": "mammosearch.evaluate.tables",
    "get_label": "mammosearch.evaluate.labels",
    "get_protocol": "mammosearch.evaluate.protocols",
    "load_space_vectors": "mammosearch.evaluate.runs",
    "parse_ks": "mammosearch.evaluate.evaluator",
    "resolve_space": "mammosearch.evaluate.runs",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
