"""What makes two vectors comparable; its own module so reading a space needs no torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mammosearch.embed.preprocess import PREPROCESSING_VERSION


@dataclass(frozen=True)
class SpaceIdentity:
    """What makes vectors comparable: same backbone, weights, preprocessing and dim."""

    backbone: str
    weights_sha256: str
    weights_source: str
    pretrained: bool
    dim: int
    preprocessing_version: int = PREPROCESSING_VERSION

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "untrained": not self.pretrained}
