"""Retrieval evaluation: leave-one-out metrics, protocols, labels, chance levels, runs."""

from mammosearch.evaluate.evaluator import DEFAULT_KS, DISTANCE_METRICS, evaluate_vectors, parse_ks
from mammosearch.evaluate.labels import LABELS, LabelSpec, get_label
from mammosearch.evaluate.metrics import METRICS, RankingMetric
from mammosearch.evaluate.protocols import DEFAULT_PROTOCOL, PROTOCOLS, Protocol, get_protocol
from mammosearch.evaluate.result import EvaluationError, EvaluationResult
from mammosearch.evaluate.runs import evaluate_space, load_space_vectors, resolve_space
from mammosearch.evaluate.tables import format_per_class, format_summary

__all__ = [
    "DEFAULT_KS",
    "DEFAULT_PROTOCOL",
    "DISTANCE_METRICS",
    "LABELS",
    "METRICS",
    "PROTOCOLS",
    "EvaluationError",
    "EvaluationResult",
    "LabelSpec",
    "Protocol",
    "RankingMetric",
    "evaluate_space",
    "evaluate_vectors",
    "format_per_class",
    "format_summary",
    "get_label",
    "get_protocol",
    "load_space_vectors",
    "parse_ks",
    "resolve_space",
]
