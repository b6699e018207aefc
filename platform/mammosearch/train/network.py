"""EfficientNet-Lite0 split into a frozen trunk and a trained top, plus the served model.

The trunk (stem and the first blocks) keeps its ImageNet weights; its outputs for a few
augmented views of every image are computed once and cached, so training the top over
many epochs costs a fraction of a full forward pass. The exported model is trunk + top,
optionally averaged over a horizontal flip, ending in an L2-normalised embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mammosearch.embed.backbones import get_backbone
from mammosearch.embed.weights import resolve_weights

BASE_BACKBONES = ("efficientnet-lite0",)
"""Bases `mammosearch train` can start from (their trunk/top split is defined here)."""
DROP_CONNECT_RATE = 0.2
COSINE_SCALE = 16.0


def load_base(name: str) -> tuple[nn.Module, str]:
    """The base network with its real ImageNet weights, and the weights file's path."""
    if name not in BASE_BACKBONES:
        raise ValueError(f"--base {name!r}: choose one of {', '.join(BASE_BACKBONES)}")
    backbone = get_backbone(name)
    resolved = resolve_weights(backbone)
    net = backbone.build_classifier()
    state = torch.load(resolved.path, map_location="cpu", weights_only=True)
    net.load_state_dict(backbone.prepare_state_dict(dict(state)))
    return net.eval(), str(resolved.path)


class Trunk(nn.Module):
    """Stem and the first `n_blocks` blocks; frozen, always in eval mode."""

    def __init__(self, net: nn.Module, n_blocks: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[:n_blocks])
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> Trunk:
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.stem(images)
        for block in self.blocks:
            maps = block(maps)
        return maps


class Top(nn.Module):
    """The trained blocks, the conv head, pooling, a projection and one cosine head per label."""

    def __init__(
        self, net: nn.Module, first_block: int, dim: int, n_classes: dict[str, int]
    ) -> None:
        super().__init__()
        self.first_block = first_block
        self.n_total_blocks = len(net._blocks)
        self.blocks = nn.ModuleList(net._blocks[first_block:])
        self.head = nn.Sequential(net._conv_head, net._bn1, net._swish)
        pooled_dim = net._conv_head.out_channels
        self.projection = nn.Linear(pooled_dim, dim) if dim else nn.Identity()
        self.dim = dim or pooled_dim
        self.classifiers = nn.ParameterDict(
            {
                label: nn.Parameter(torch.randn(count, self.dim) * 0.01)
                for label, count in n_classes.items()
            }
        )

    def embed(self, maps: torch.Tensor) -> torch.Tensor:
        for offset, block in enumerate(self.blocks):
            rate = DROP_CONNECT_RATE * (self.first_block + offset) / self.n_total_blocks
            maps = block(maps, drop_connect_rate=rate)
        pooled = torch.flatten(F.adaptive_avg_pool2d(self.head(maps), 1), 1)
        return F.normalize(self.projection(pooled), dim=1)

    def logits(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cosine classifier (normalised softmax): a strong, simple metric-learning loss."""
        return {
            label: COSINE_SCALE * embedding @ F.normalize(weight, dim=1).T
            for label, weight in self.classifiers.items()
        }


class EmbeddingModel(nn.Module):
    """Image batch (n, 3, s, s) -> L2-normalised embedding (n, dim): what is exported."""

    def __init__(self, trunk: Trunk, top: Top, flip_average: bool) -> None:
        super().__init__()
        self.trunk = trunk
        self.top = top
        self.flip_average = flip_average

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embedding = self.top.embed(self.trunk(images))
        if self.flip_average:
            flipped = self.top.embed(self.trunk(torch.flip(images, dims=[3])))
            embedding = F.normalize(embedding + flipped, dim=1)
        return embedding


def build_networks(
    base: str, trained_blocks: int, dim: int, n_classes: dict[str, int]
) -> tuple[Trunk, Top, str]:
    """A fresh trunk and top from the base's ImageNet weights (the top's head is random)."""
    net, weights_path = load_base(base)
    first = len(net._blocks) - trained_blocks
    if not 0 <= first < len(net._blocks):
        raise ValueError(f"--trained-blocks {trained_blocks}: choose 1..{len(net._blocks)}")
    return Trunk(net, first), Top(net, first, dim, n_classes), weights_path
