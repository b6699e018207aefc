"""Which same-class pairs the metric loss pulls together (`--positives`; no torch at import).

`any-patient` counts every same-class pair of a batch. `other-patients` drops the pairs of
one patient's own images (the two views of a breast, or both breasts with one label):
search never returns a query's own patient, so those pairs teach the look of a patient,
not of a class. Different-class pairs of one patient (a lesion breast against its normal
side) stay, as negatives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ANY_PATIENT, OTHER_PATIENTS = "any-patient", "other-patients"
POSITIVES = (ANY_PATIENT, OTHER_PATIENTS)

Pairs = tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"]
"""pytorch-metric-learning's pair tuple: (anchor, positive, anchor, negative) indices."""


def other_patient_pairs(
    labels: torch.Tensor, patients: torch.Tensor, mined: Pairs | None = None
) -> Pairs:
    """Pairs without one patient's same-class pairs: from `mined` if a miner chose them."""
    import torch

    if mined is None:
        same_class = labels[:, None] == labels[None, :]
        positive = same_class & (patients[:, None] != patients[None, :])
        anchors, positives = torch.where(positive)
        negative_anchors, negatives = torch.where(~same_class)
        return anchors, positives, negative_anchors, negatives
    anchors, positives, negative_anchors, negatives = mined
    keep = patients[anchors] != patients[positives]
    return anchors[keep], positives[keep], negative_anchors, negatives
