"""What one training run is: labels, base, input size, loss, head, views, folds, fit."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from mammosearch.train.bases import DEFAULT_BASE
from mammosearch.train.breasts import APART
from mammosearch.train.fit import FitConfig
from mammosearch.train.positives import ANY_PATIENT


@dataclass(frozen=True)
class TrainConfig:
    """Defaults are the variant chosen by cross-validation (docs/learned-embeddings.md)."""

    labels: tuple[str, ...] = ("birads",)
    base: str = DEFAULT_BASE
    image_size_px: int = 224
    loss: str = "supcon"
    temperature: float = 0.1  # supervised contrastive loss's
    positives: str = ANY_PATIENT  # same-class pairs the metric loss pulls together
    cases: str = APART  # batches of loose images, of whole breasts, + a breast-mean term
    dim: int = 256
    pooling: str = "avg"  # of the final feature map: "avg" or "gem" (learned power)
    trained_blocks: int = 5
    n_views: int = 8  # cached views per image: the fixed test views first, then random ones
    test_views: int = 2  # fixed views averaged when embedding (1: none, 2: with the mirror)
    folds: int = 5
    ensemble: int = 1  # tops trained from seeds seed, seed + 1, ...; embeddings averaged
    fit: FitConfig = field(default_factory=FitConfig)

    @property
    def seed(self) -> int:
        return self.fit.seed

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["labels"] = list(self.labels)
        return record

    def fingerprint(self) -> str:
        """Same fingerprint, same run: a work directory is resumed only for its own config."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def with_fit(self, **changes: Any) -> TrainConfig:
        return replace(self, fit=replace(self.fit, **changes))
