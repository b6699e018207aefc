"""Case-level evaluation: a space's images grouped into cases, scored case against case.

A case is one breast of one study (mammosearch.search.cases); its label is its views' (BIRADS: the
most suspicious, pathology: the most severe). Every labelled case queries every other case
the protocol leaves it (patient-excluded: none of its patient's cases), ranked by the fused
case-to-case score of a fusion rule over all their views, so the figures are those of the
search's unit=case answers, each breast once.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mammosearch.evaluate.evaluator import DEFAULT_KS, Progress, evaluate_vectors
from mammosearch.evaluate.labels import get_label
from mammosearch.evaluate.neighbour_vote import measure_space_votes
from mammosearch.evaluate.result import EvaluationResult
from mammosearch.search.cases import (
    CaseKey,
    ViewTag,
    case_birads,
    case_key,
    case_pathology,
    fused_scores,
    group_starts,
    view_tag,
)


@dataclass(frozen=True)
class CaseGroups:
    """Images regrouped case after case: `order[i]` is the image position of grouped view i."""

    order: np.ndarray
    starts: np.ndarray  # in grouped positions, the first view of each case
    keys: list[CaseKey]
    tags: list[ViewTag]  # per grouped view

    def __len__(self) -> int:
        return len(self.keys)

    def views_of(self, case: int) -> np.ndarray:
        end = self.starts[case + 1] if case + 1 < len(self.starts) else len(self.order)
        return self.order[self.starts[case] : end]


def group_cases(image_rows: Sequence[Mapping[str, Any]]) -> CaseGroups:
    """Group image rows (patient_id, study_instance_uid, side, view, modality) into cases."""
    keys = [
        case_key(row["patient_id"], row.get("study_instance_uid"), row.get("side"))
        for row in image_rows
    ]
    order = np.array(sorted(range(len(keys)), key=lambda i: (keys[i], i)), dtype=np.int64)
    grouped_keys = [keys[i] for i in order]
    starts = group_starts(grouped_keys)
    return CaseGroups(
        order=order,
        starts=starts,
        keys=[grouped_keys[int(start)] for start in starts],
        tags=[view_tag(image_rows[i].get("view"), image_rows[i].get("modality")) for i in order],
    )


def case_label_rows(
    groups: CaseGroups, image_rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Per case the row a label reads: its BIRADS, pathology and findings."""
    rows = []
    for case in range(len(groups)):
        views = [image_rows[int(i)] for i in groups.views_of(case)]
        findings = [str(view["findings"]) for view in views if view.get("findings")]
        rows.append(
            {
                "birads": case_birads(view.get("birads") for view in views),
                "pathology": case_pathology(view.get("pathology") for view in views),
                "findings": "; ".join(dict.fromkeys(findings)) or None,
            }
        )
    return rows


def case_score_matrix(
    vectors: np.ndarray, groups: CaseGroups, fusion: str, metric: str
) -> np.ndarray:
    """(cases, cases) fused scores, every case against every case (mammosearch.search.cases)."""
    grouped = np.asarray(vectors)[groups.order]
    return fused_scores(
        grouped, groups.tags, groups.starts, grouped, groups.tags, groups.starts, fusion, metric
    )


def case_mean_vectors(vectors: np.ndarray, groups: CaseGroups) -> np.ndarray:
    grouped = np.asarray(vectors, dtype=np.float64)[groups.order]
    counts = np.diff(np.append(groups.starts, len(groups.order)))
    return (np.add.reduceat(grouped, groups.starts, axis=0) / counts[:, None]).astype(np.float32)


def evaluate_cases(
    vectors: np.ndarray,
    image_ids: Sequence[int],
    image_rows: Sequence[Mapping[str, Any]],
    label: str = "birads",
    fusion: str = "mean",
    metric: str = "cosine",
    protocol: str = "patient-excluded",
    ks: Sequence[int] = DEFAULT_KS,
    *,
    map_cutoff: int | None = None,
    per_query_limit: int | None = None,
    per_query_k: int = 5,
    embedding_space: dict[str, Any] | None = None,
    progress: Progress = False,
    ranking: str = "similarity",
    labels: Sequence[Hashable | None] | None = None,
) -> EvaluationResult:
    """Leave-one-out over cases; `queries` counts the cases scored.

    `image_rows` need patient_id, study_instance_uid, side, view, modality and what the label
    reads (birads, pathology, findings); `labels` (per case) overrides the label's own rule.
    """
    groups = group_cases(image_rows)
    if labels is None:
        spec = get_label(label)
        labels = [spec.of_image(row) for row in case_label_rows(groups, image_rows)]
    first_ids = [int(image_ids[int(groups.order[int(start)])]) for start in groups.starts]
    result = evaluate_vectors(
        case_mean_vectors(vectors, groups),
        first_ids,
        labels,
        [key.patient_id for key in groups.keys],
        metric=metric,
        protocol=protocol,
        ks=ks,
        label_name=label,
        map_cutoff=map_cutoff,
        per_query_limit=per_query_limit,
        per_query_k=per_query_k,
        image_names=[key.case_id for key in groups.keys],
        embedding_space=embedding_space,
        progress=progress,
        ranking=ranking,
        score_matrix=case_score_matrix(vectors, groups, fusion, metric),
    )
    views = np.diff(np.append(groups.starts, len(groups.order)))
    result.config.update(
        unit="case",
        fusion=fusion,
        cases=len(groups),
        images=len(groups.order),
        views_per_case={str(n): int(np.count_nonzero(views == n)) for n in np.unique(views)},
        timing="fused scores precomputed for every case pair (the timing is a lookup)",
    )
    return result


def measure_case_votes(
    vectors: np.ndarray,
    image_rows: Sequence[Any],
    fusion: str,
    metric: str = "cosine",
    source: str = "",
) -> dict[str, Any]:
    """measure_space_votes at case level: the images grouped into cases (case labels, one
    patient per case), each case's voters the nearest other patients' cases by `fusion`, as
    a case search votes. Each table says its unit and fusion."""
    groups = group_cases(image_rows)
    measured = measure_space_votes(
        case_mean_vectors(vectors, groups),
        case_label_rows(groups, image_rows),
        [key.patient_id for key in groups.keys],
        metric,
        source=source,
        score_matrix=case_score_matrix(vectors, groups, fusion, metric),
    )
    return {name: {**table, "unit": "case", "fusion": fusion} for name, table in measured.items()}
