"""Training on breasts, not loose images (`--cases`; no torch at import).

A case is one breast of one study (mammosearch.search.cases) with its views, and a case search
ranks cases by the mean of their views' vectors (the served fusion, `mean`).

- `apart` (the default): each batch draws its images at random, so the two views of a
  breast meet in one batch about one time in eight.
- `together`: each batch holds whole breasts, so the metric loss always has the pairs of
  the same breast among its same-class positives (its views pulled together).
- `mean`: as `together`, plus a supervised contrastive term over each breast's mean
  embedding, labelled as a case search labels a case (most suspicious BIRADS, most severe
  pathology): the quantity a case search ranks by, trained directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mammosearch.evaluate.case_units import case_label_rows, group_cases
from mammosearch.evaluate.labels import get_label
from mammosearch.train.dataset import IGNORE_INDEX

APART, TOGETHER, MEAN = "apart", "together", "mean"
CASE_MODES = (APART, TOGETHER, MEAN)


@dataclass(frozen=True)
class Breasts:
    """Per training image: the index of its breast and that breast's class code."""

    ids: np.ndarray
    targets: np.ndarray


def breasts_of(
    case_rows: tuple[dict[str, Any], ...],
    classes: tuple[Any, ...],
    label: str,
    positions: np.ndarray | None = None,
) -> Breasts:
    """Group images (their `case_rows`, train.dataset's) into breasts; label each breast by
    the case rule of `label`, coded by its index in `classes`."""
    if not case_rows:
        raise ValueError("--cases: the training images carry no case rows (patient, side)")
    groups = group_cases(case_rows)
    ids = np.empty(len(case_rows), dtype=np.int64)
    for case in range(len(groups)):
        ids[groups.views_of(case)] = case
    spec = get_label(label)
    code = {value: index for index, value in enumerate(classes)}
    case_targets = np.array(
        [code.get(spec.of_image(row), IGNORE_INDEX) for row in case_label_rows(groups, case_rows)],
        dtype=np.int64,
    )
    return Breasts(ids=ids, targets=case_targets[ids])


def breast_batches(
    generator: np.random.Generator, positions: np.ndarray, breast_ids: np.ndarray, batches: int
) -> list[np.ndarray]:
    """`positions` cut into at most `batches` batches of whole breasts, breasts shuffled.

    Cuts fall on the breast boundary nearest an even split, so a batch keeps about the
    size it would have had without breasts, and an epoch never takes more steps than the
    learning-rate schedule was built for.
    """
    owners = breast_ids[positions]
    breasts = generator.permutation(np.unique(owners))
    rank = np.empty(int(breast_ids.max()) + 1, dtype=np.int64)
    rank[breasts] = np.arange(breasts.size)
    order = positions[np.argsort(rank[owners], kind="stable")]
    starts = np.flatnonzero(np.diff(breast_ids[order])) + 1
    if not starts.size or batches <= 1:
        return [order]
    wanted = np.linspace(0, order.size, batches + 1)[1:-1]
    nearest = np.abs(starts[None, :] - wanted[:, None]).argmin(axis=1)
    cuts = np.unique(starts[nearest])
    return [batch for batch in np.split(order, cuts) if batch.size]


def check_cases(mode: str, loss: str, balanced: bool, pair_losses: tuple[str, ...]) -> None:
    """Refuse an unknown mode, or one the loss or the epoch's draw cannot honour."""
    if mode not in CASE_MODES:
        raise ValueError(f"--cases {mode!r}: choose one of {', '.join(CASE_MODES)}")
    if mode == APART:
        return
    if loss not in pair_losses:
        raise ValueError(
            f"--cases {mode}: not with --loss {loss} (it has no pairs for the views of a "
            f"breast); choose one of {', '.join(pair_losses)}"
        )
    if balanced:
        raise ValueError(f"--cases {mode}: not with class-balanced epochs (they draw images)")
