"""Patient-grouped, label-stratified folds: no patient on both sides of a split."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


def patient_folds(
    targets: np.ndarray, patient_ids: np.ndarray, n_folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train positions, validation positions) per fold, stratified by label where possible."""
    n_patients = np.unique(patient_ids).size
    if n_folds < 2 or n_folds > n_patients:
        raise ValueError(f"--folds {n_folds}: need 2..{n_patients} (one patient per fold at most)")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [
        (np.sort(train), np.sort(valid))
        for train, valid in splitter.split(np.zeros(targets.size), targets, patient_ids)
    ]
