"""The training losses one can choose (`--loss`): one registry, measured in the CV table.

- ce: class-weighted cross-entropy of a cosine classifier (normalised softmax) on the
  embedding: simple, stable, and a strong metric-learning baseline.
- supcon: supervised contrastive loss (pytorch-metric-learning's SupConLoss).
- ms: multi-similarity loss with its hard-pair miner (pytorch-metric-learning).
- ce+supcon: both, summed.
- supcon+xbm: supervised contrastive against a cross-batch memory of the last
  `XBM_BATCHES` batches' embeddings (pytorch-metric-learning's CrossBatchMemory): more
  pairs per step than one batch of a few hundred images holds.
Every label after the first adds its own class-weighted cross-entropy head (multi-task).
Which same-class pairs the metric loss pulls together is `train/positives.py`'s choice;
`--cases mean` adds a term over each breast's mean embedding (`train/breasts.py`).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from mammosearch.train.breasts import APART, MEAN, check_cases
from mammosearch.train.dataset import IGNORE_INDEX
from mammosearch.train.positives import (
    ANY_PATIENT,
    OTHER_PATIENTS,
    POSITIVES,
    other_patient_pairs,
)

LOSSES = ("ce", "supcon", "ms", "ce+supcon", "supcon+xbm")
SECONDARY_WEIGHT = 0.5
XBM_BATCHES = 4
PAIR_LOSSES = ("supcon", "ms", "ce+supcon")  # metric losses over one batch's own pairs
METRIC_LOSSES = (*PAIR_LOSSES, "supcon+xbm")  # every loss with a metric term
CASE_WEIGHT = 1.0  # the breast-mean term beside the image term (`--cases mean`)


class LossFn(Protocol):
    """(embedding, logits per label, targets per label, patient ids[, breasts]) -> loss.

    `breasts`: the batch's (breast index, breast class code) per image, for `--cases mean`.
    """

    def __call__(
        self,
        embedding: torch.Tensor,
        logits: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        patients: torch.Tensor,
        breasts: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor: ...


def class_weights(targets: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 over the examples: rare classes count as much."""
    counts = np.bincount(targets[targets >= 0], minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def check_loss(
    name: str, positives: str = ANY_PATIENT, cases: str = APART, balanced: bool = False
) -> None:
    """Refuse an unknown loss or a pair or breast rule it cannot apply, naming the choices."""
    if name not in LOSSES:
        raise ValueError(f"--loss {name!r}: choose one of {', '.join(LOSSES)}")
    if positives not in POSITIVES:
        raise ValueError(f"--positives {positives!r}: choose one of {', '.join(POSITIVES)}")
    if positives == OTHER_PATIENTS and name not in PAIR_LOSSES:
        raise ValueError(
            f"--positives {OTHER_PATIENTS}: not with --loss {name} (it has no pairs of "
            f"patients to leave out); choose one of {', '.join(PAIR_LOSSES)}"
        )
    check_cases(cases, name, balanced, METRIC_LOSSES)


def breast_mean_embeddings(
    embedding: torch.Tensor, breast_ids: torch.Tensor, breast_targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each breast's views' mean embedding, unit-normalised (a case search's `mean` fusion),
    and its class code: (breasts, dim), (breasts,)."""
    unique, inverse = torch.unique(breast_ids, return_inverse=True)
    sums = torch.zeros(unique.numel(), embedding.shape[1], dtype=embedding.dtype)
    sums = sums.to(embedding.device).index_add(0, inverse, embedding)
    labels = torch.full((unique.numel(),), IGNORE_INDEX, dtype=breast_targets.dtype)
    labels = labels.to(breast_targets.device).scatter(0, inverse, breast_targets)
    return F.normalize(sums, dim=1), labels


def make_loss(
    name: str,
    primary: str,
    weights: dict[str, torch.Tensor],
    temperature: float,
    embedding_size: int,
    batch_size: int,
    positives: str = ANY_PATIENT,
    cases: str = APART,
) -> LossFn:
    """The loss `name` over (embedding, logits per label, targets per label, patient ids).

    `temperature` is SupConLoss's (TrainConfig's default, chosen by cross-validation);
    `embedding_size` and `batch_size` size the cross-batch memory of `supcon+xbm`;
    `positives` says which same-class pairs the metric loss pulls together; `cases` `mean`
    adds a supervised contrastive term over the batch's breast means.
    """
    check_loss(name, positives, cases)
    other_patients = positives == OTHER_PATIENTS
    metric_loss = None
    miner = None
    if name in ("supcon", "ce+supcon"):
        from pytorch_metric_learning.losses import SupConLoss

        metric_loss = SupConLoss(temperature=temperature)
    elif name == "supcon+xbm":
        from pytorch_metric_learning.losses import CrossBatchMemory, SupConLoss

        metric_loss = CrossBatchMemory(
            SupConLoss(temperature=temperature),
            embedding_size,
            memory_size=XBM_BATCHES * batch_size,
        )
    elif name == "ms":
        from pytorch_metric_learning.losses import MultiSimilarityLoss
        from pytorch_metric_learning.miners import MultiSimilarityMiner

        metric_loss, miner = MultiSimilarityLoss(), MultiSimilarityMiner()
    case_loss = None
    if cases == MEAN:
        from pytorch_metric_learning.losses import SupConLoss

        case_loss = SupConLoss(temperature=temperature)

    def cross_entropy(label: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if bool((target == IGNORE_INDEX).all()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, weight=weights[label], ignore_index=IGNORE_INDEX)

    def loss(
        embedding: torch.Tensor,
        logits: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        patients: torch.Tensor,
        breasts: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        total = embedding.sum() * 0.0
        if name in ("ce", "ce+supcon"):
            total = total + cross_entropy(primary, logits[primary], targets[primary])
        if metric_loss is not None:
            labels = targets[primary]
            pairs = miner(embedding, labels) if miner is not None else None
            if other_patients:
                pairs = other_patient_pairs(labels, patients, pairs)
            total = total + metric_loss(embedding, labels, pairs)
        if case_loss is not None and breasts is not None:
            means, case_labels = breast_mean_embeddings(embedding, *breasts)
            labelled = case_labels != IGNORE_INDEX
            if int(labelled.sum()) > 1:
                total = total + CASE_WEIGHT * case_loss(means[labelled], case_labels[labelled])
        for label in logits:
            if label != primary:
                total = total + SECONDARY_WEIGHT * cross_entropy(
                    label, logits[label], targets[label]
                )
        return total

    return loss
