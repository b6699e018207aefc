"""Leave-one-out protocols: which images are a query's candidates. One registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Protocol:
    """`removes(query, patient_codes)` marks the images that may not answer the query."""

    name: str
    removes: Callable[[int, np.ndarray], np.ndarray]
    description: str
    optimistic: bool = False


def _same_patient(query: int, patient_codes: np.ndarray) -> np.ndarray:
    same: np.ndarray = patient_codes == patient_codes[query]
    return same


def _only_itself(query: int, patient_codes: np.ndarray) -> np.ndarray:
    removed = np.zeros(patient_codes.shape[0], dtype=bool)
    removed[query] = True
    return removed


def _nothing(query: int, patient_codes: np.ndarray) -> np.ndarray:
    return np.zeros(patient_codes.shape[0], dtype=bool)


PROTOCOLS: dict[str, Protocol] = {
    # A patient's CC/MLO views and both breasts are near-duplicates of each other: leaving
    # them in would measure "finds the same patient", not "finds a similar case".
    "patient-excluded": Protocol(
        "patient-excluded",
        _same_patient,
        "the query's own patient's images (the query included) are not candidates",
    ),
    "self-excluded": Protocol(
        "self-excluded",
        _only_itself,
        "only the query itself is removed; the same patient's other images stay candidates",
    ),
    "self-included": Protocol(
        "self-included",
        _nothing,
        "SELF-INCLUDED (the reference paper's protocol): the query is its own candidate and "
        "usually its own top-1; optimistic, not a measure of similar-case retrieval",
        optimistic=True,
    ),
}

DEFAULT_PROTOCOL = "patient-excluded"


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(
            f"protocol {name!r}: unknown; choose one of {', '.join(PROTOCOLS)}"
        ) from None


def candidate_mask(
    protocol: Protocol, query: int, eligible: np.ndarray, patient_codes: np.ndarray
) -> np.ndarray:
    """The images that may answer `query`: eligible (labelled) and not removed by the protocol."""
    candidates: np.ndarray = eligible & ~protocol.removes(query, patient_codes)
    return candidates


def query_rows(eligible: np.ndarray, query_mask: np.ndarray | None) -> np.ndarray:
    """The images that ask: eligible (labelled) and, when a mask is given, in it."""
    return eligible if query_mask is None else eligible & np.asarray(query_mask, dtype=bool)
