"""The case as the unit of search: one breast of one study, its views, its labels, and how two
cases' similarity comes from their views' vectors (the fusion rules).

A case is (patient, study, side): in DICOM (patient, StudyInstanceUID, laterality); in
CDD-CESM, which has no study uid, (patient, side). Its images are its views. The key is
derived here and nowhere else, from columns every image row already has.

Fusion rules (`CASE_FUSIONS`), each giving one score per pair of cases in the index's own
convention (cosine: a similarity, higher is nearer; l2: a squared distance, lower is nearer):
- mean: the cases' mean view vectors compared (unit-normalised first for cosine);
- best-pair: the nearest pair of views, one from each case;
- matched-views: views of the same view code and modality paired (CC with CC, MLO with MLO),
  their scores averaged; else the same view code whatever the modality; else best-pair.
Measured by patient-excluded evaluation on the dev archive (docs/learned-embeddings.md,
"Case-level search"); `DEFAULT_FUSION` is the one that won there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

CASE_FUSIONS: tuple[str, ...] = ("mean", "best-pair", "matched-views")
DEFAULT_FUSION = "mean"
SEARCH_UNITS: tuple[str, ...] = ("image", "case")
MAX_CASE_VIEWS = 4
"""The most files one case query takes: CC and MLO, low-energy and subtracted, of one breast."""
PATHOLOGY_SEVERITY = ("normal", "benign", "malignant")
"""A case's pathology is its most severe view's (lower case compared; others rank below)."""


class CaseKey(NamedTuple):
    """One breast of one study. `study_uid` "" where the source has none; `side` "" unknown."""

    patient_id: int  # patients.id
    study_uid: str
    side: str

    @property
    def case_id(self) -> str:
        """The case's address: `<patients.id>-<L|R|U>[-<StudyInstanceUID>]` (URL-safe)."""
        base = f"{self.patient_id}-{self.side or 'U'}"
        return f"{base}-{self.study_uid}" if self.study_uid else base


def case_key(patient_id: int, study_instance_uid: str | None, side: str | None) -> CaseKey:
    """The case an image row belongs to (its patients.id, StudyInstanceUID and side)."""
    side_letter = (side or "").strip().upper()[:1]
    return CaseKey(int(patient_id), (study_instance_uid or "").strip(), side_letter)


def parse_case_id(text: str) -> CaseKey:
    """`CaseKey.case_id` back into its key; ValueError names the text."""
    patient, _, rest = str(text).strip().partition("-")
    side, _, study_uid = rest.partition("-")
    if not patient.isdigit() or side not in ("L", "R", "U"):
        raise ValueError(f"case id {text!r}: expected <patient>-<L|R|U>[-<study uid>]")
    return CaseKey(int(patient), study_uid, "" if side == "U" else side)


class ViewTag(NamedTuple):
    """What the matched-views rule pairs views by: view code (upper) and modality (lower)."""

    view: str
    modality: str


def view_tag(view: str | None, modality: str | None) -> ViewTag:
    return ViewTag((view or "").strip().upper(), (modality or "").strip().lower())


def case_birads(values: Iterable[int | None]) -> int | None:
    """The case's BIRADS: its most suspicious view's (views of one breast rarely differ)."""
    known = [int(value) for value in values if value is not None]
    return max(known) if known else None


def case_pathology(values: Iterable[str | None]) -> str | None:
    """The case's pathology: its most severe view's (normal < benign < malignant)."""
    known = [value for value in values if value]

    def severity(value: str) -> int:
        lowered = value.strip().lower()
        return PATHOLOGY_SEVERITY.index(lowered) if lowered in PATHOLOGY_SEVERITY else -1

    return max(known, key=severity) if known else None


def check_fusion(name: str) -> str:
    if name not in CASE_FUSIONS:
        raise ValueError(f"fusion {name!r}: unknown; choose one of {', '.join(CASE_FUSIONS)}")
    return name


def _prepared(vectors: np.ndarray, metric: str) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.where(norms > 0, norms, 1.0)
    return matrix


def _raw_scores(rows: np.ndarray, columns: np.ndarray, metric: str) -> np.ndarray:
    """Pairwise scores of prepared vectors: cosine similarity, or squared L2 distance."""
    if metric == "cosine":
        cosine: np.ndarray = rows @ columns.T
        return cosine
    squared: np.ndarray = (
        np.einsum("ij,ij->i", rows, rows)[:, None]
        - 2.0 * rows @ columns.T
        + np.einsum("ij,ij->i", columns, columns)[None, :]
    )
    nonnegative: np.ndarray = np.maximum(squared, 0.0)
    return nonnegative


def _block_sums(values: np.ndarray, row_starts: np.ndarray, col_starts: np.ndarray) -> np.ndarray:
    return np.add.reduceat(np.add.reduceat(values, row_starts, axis=0), col_starts, axis=1)


def _means(vectors: np.ndarray, starts: np.ndarray) -> np.ndarray:
    counts = np.diff(np.append(starts, vectors.shape[0]))
    return np.add.reduceat(vectors, starts, axis=0) / counts[:, None]


def fused_scores(
    row_vectors: np.ndarray,
    row_tags: Sequence[ViewTag],
    row_starts: Sequence[int] | np.ndarray,
    col_vectors: np.ndarray,
    col_tags: Sequence[ViewTag],
    col_starts: Sequence[int] | np.ndarray,
    rule: str,
    metric: str,
) -> np.ndarray:
    """Case-by-case scores (row cases, column cases) under `rule`, in the index's convention
    (cosine similarity / squared L2). Each side's views are given case after case, `starts`
    the position of each case's first view."""
    check_fusion(rule)
    rows, cols = _prepared(row_vectors, metric), _prepared(col_vectors, metric)
    row_starts_array = np.asarray(row_starts, dtype=np.int64)
    col_starts_array = np.asarray(col_starts, dtype=np.int64)
    if rule == "mean":
        return _raw_scores(
            _prepared(_means(rows, row_starts_array), metric),
            _prepared(_means(cols, col_starts_array), metric),
            metric,
        )
    raw = _raw_scores(rows, cols, metric)
    nearness = raw if metric == "cosine" else -raw  # higher is nearer, both metrics
    best = np.maximum.reduceat(
        np.maximum.reduceat(nearness, row_starts_array, axis=0), col_starts_array, axis=1
    )
    fused = best
    if rule == "matched-views":
        # the loose match (same view code, any modality) first, the exact one over it
        for exact in (False, True):
            same = _same(row_tags, col_tags, exact)
            counts = _block_sums(same.astype(np.float64), row_starts_array, col_starts_array)
            sums = _block_sums(np.where(same, nearness, 0.0), row_starts_array, col_starts_array)
            fused = np.where(counts > 0, sums / np.maximum(counts, 1.0), fused)
    return fused if metric == "cosine" else -fused


def best_view_pairs(
    row_vectors: np.ndarray,
    col_vectors: np.ndarray,
    col_starts: Sequence[int] | np.ndarray,
    metric: str,
) -> list[tuple[int, int, float]]:
    """For one row case against each column case: (row view, column view, raw score) of the
    nearest view pair, the view that "matched best" whatever the fusion rule."""
    raw = _raw_scores(_prepared(row_vectors, metric), _prepared(col_vectors, metric), metric)
    nearness = raw if metric == "cosine" else -raw
    ends = list(col_starts[1:]) + [nearness.shape[1]]
    pairs = []
    for start, end in zip(col_starts, ends, strict=True):
        block = nearness[:, start:end]
        row, column = np.unravel_index(int(np.argmax(block)), block.shape)
        pairs.append((int(row), int(start + column), float(raw[row, start + column])))
    return pairs


def _same(row_tags: Sequence[ViewTag], col_tags: Sequence[ViewTag], exact: bool) -> np.ndarray:
    """Which view pairs the matched-views rule pairs: same view code (and modality if exact);
    views without a code pair with nothing."""
    row_view = np.array([tag.view for tag in row_tags], dtype=object)
    col_view = np.array([tag.view for tag in col_tags], dtype=object)
    same: np.ndarray = (row_view[:, None] == col_view[None, :]) & (row_view[:, None] != "")
    if exact:
        row_modality = np.array([tag.modality for tag in row_tags], dtype=object)
        col_modality = np.array([tag.modality for tag in col_tags], dtype=object)
        same &= row_modality[:, None] == col_modality[None, :]
    return same


def group_starts(keys: Sequence[Any]) -> np.ndarray:
    """Start positions of runs of equal keys (the views of one case, given case after case)."""
    starts = [0] + [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]]
    return np.asarray(starts if len(keys) else [], dtype=np.int64)
