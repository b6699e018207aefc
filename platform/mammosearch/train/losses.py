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
Which same-class pairs the metric loss pulls together is `train/positives.py`'s choice.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

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

LossFn = Callable[
    [torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor], torch.Tensor
]


def class_weights(targets: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 over the examples: rare classes count as much."""
    counts = np.bincount(targets[targets >= 0], minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def check_loss(name: str, positives: str = ANY_PATIENT) -> None:
    """Refuse an unknown loss or a pair rule it cannot apply, naming the choices."""
    if name not in LOSSES:
        raise ValueError(f"--loss {name!r}: choose one of {', '.join(LOSSES)}")
    if positives not in POSITIVES:
        raise ValueError(f"--positives {positives!r}: choose one of {', '.join(POSITIVES)}")
    if positives == OTHER_PATIENTS and name not in PAIR_LOSSES:
        raise ValueError(
            f"--positives {OTHER_PATIENTS}: not with --loss {name} (it has no pairs of "
            f"patients to leave out); choose one of {', '.join(PAIR_LOSSES)}"
        )


def make_loss(
    name: str,
    primary: str,
    weights: dict[str, torch.Tensor],
    temperature: float,
    embedding_size: int,
    batch_size: int,
    positives: str = ANY_PATIENT,
) -> LossFn:
    """The loss `name` over (embedding, logits per label, targets per label, patient ids).

    `temperature` is SupConLoss's (TrainConfig's default, chosen by cross-validation);
    `embedding_size` and `batch_size` size the cross-batch memory of `supcon+xbm`;
    `positives` says which same-class pairs the metric loss pulls together.
    """
    check_loss(name, positives)
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

    def cross_entropy(label: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if bool((target == IGNORE_INDEX).all()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, weight=weights[label], ignore_index=IGNORE_INDEX)

    def loss(
        embedding: torch.Tensor,
        logits: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        patients: torch.Tensor,
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
        for label in logits:
            if label != primary:
                total = total + SECONDARY_WEIGHT * cross_entropy(
                    label, logits[label], targets[label]
                )
        return total

    return loss
