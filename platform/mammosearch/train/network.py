"""An EfficientNet-Lite split into a frozen trunk and a trained top, plus the served model.

The trunk (stem and the first blocks) keeps its ImageNet weights; its outputs for a few
augmented views of every image are computed once and cached, so training the top over
many epochs costs a fraction of a full forward pass. The exported model is trunk + top,
averaged over the fixed test-time views (`test_views`), ending in an L2-normalised
embedding.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mammosearch.embed.backbones import get_backbone
from mammosearch.embed.weights import resolve_weights
from mammosearch.train.augment import denormalise, normalise
from mammosearch.train.bases import BASE_BACKBONES
from mammosearch.train.test_views import FixedView, apply_view, view_grid, views_for

DROP_CONNECT_RATE = 0.2
COSINE_SCALE = 16.0
POOLINGS = ("avg", "gem")
GEM_INITIAL_POWER = 3.0


class GeneralisedMeanPool(nn.Module):
    """GeM pooling (Radenović et al.) with a learned power: between average (1) and max (inf).

    A lesion fills a few cells of the final map; average pooling dilutes it with the rest of
    the breast, a higher power lets the bright cells count for more.
    """

    def __init__(self, power: float = GEM_INITIAL_POWER, eps: float = 1e-6) -> None:
        super().__init__()
        self.power = nn.Parameter(torch.tensor(float(power)))
        self.eps = eps

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(maps.clamp(min=self.eps).pow(self.power), 1)
        return torch.flatten(pooled.pow(1.0 / self.power), 1)


class AveragePool(nn.Module):
    """Plain average pooling (the default): every cell of the final map counts the same."""

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(maps, 1), 1)


def make_pool(name: str) -> nn.Module:
    """The pooling `--pooling` names."""
    if name not in POOLINGS:
        raise ValueError(f"--pooling {name!r}: choose one of {', '.join(POOLINGS)}")
    return GeneralisedMeanPool() if name == "gem" else AveragePool()


def load_base(name: str) -> tuple[Any, str]:  # Any: EfficientNet-Lite is untyped
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

    def __init__(self, net: Any, n_blocks: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[:n_blocks])
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> Trunk:
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps: torch.Tensor = self.stem(images)
        for block in self.blocks:
            maps = block(maps)
        return maps


class Top(nn.Module):
    """The trained blocks, the conv head, pooling, a projection and one cosine head per label."""

    def __init__(
        self,
        net: Any,  # an EfficientNet-Lite (untyped)
        first_block: int,
        dim: int,
        n_classes: dict[str, int],
        pooling: str = "avg",
    ) -> None:
        super().__init__()
        self.first_block = first_block
        self.n_total_blocks = len(net._blocks)
        self.blocks = nn.ModuleList(net._blocks[first_block:])
        self.head = nn.Sequential(net._conv_head, net._bn1, net._swish)
        self.pool = make_pool(pooling)
        pooled_dim = net._conv_head.out_channels
        self.projection = nn.Linear(pooled_dim, dim) if dim else nn.Identity()
        self.dim: int = dim or pooled_dim
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
        pooled = self.pool(self.head(maps))
        return F.normalize(self.projection(pooled), dim=1)

    def logits(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cosine classifier (normalised softmax): a strong, simple metric-learning loss."""
        return {
            label: COSINE_SCALE * embedding @ F.normalize(weight, dim=1).T
            for label, weight in self.classifiers.items()
        }


class TopEnsemble(nn.Module):
    """Tops trained from different seeds on the same trunk views; their embeddings averaged.

    With a few hundred training images each top also learns some of their noise; tops
    started from other seeds learn other noise, and the average keeps what they share.
    """

    def __init__(self, members: list[Top]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.dim = members[0].dim

    def embed(self, maps: torch.Tensor) -> torch.Tensor:
        tops: list[Top] = list(self.members)  # type: ignore[arg-type]  # ModuleList yields Module
        return F.normalize(torch.stack([top.embed(maps) for top in tops]).sum(dim=0), dim=1)


class EmbeddingModel(nn.Module):
    """Image batch (n, 3, s, s) -> L2-normalised embedding (n, dim): what is exported.

    The input is the product's preprocessing (three equal ImageNet-normalised channels);
    each fixed test view is made from it in the graph, all views go through the network as
    one batch, and their embeddings are averaged.
    """

    def __init__(self, trunk: Trunk, top: Top | TopEnsemble, test_views: int, size_px: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.top = top
        self.views = views_for(test_views)
        self.grids = [view_grid(view, size_px) if view.geometric else None for view in self.views]

    def _view_input(
        self, images: torch.Tensor, view: FixedView, grid: torch.Tensor | None
    ) -> torch.Tensor:
        if not view.geometric and view.gamma == 1.0:
            return torch.flip(images, dims=[3]) if view.mirrored else images
        return normalise(apply_view(denormalise(images), view, grid))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        views = torch.cat(
            [
                self._view_input(images, view, grid)
                for view, grid in zip(self.views, self.grids, strict=True)
            ]
        )
        embeddings = self.top.embed(self.trunk(views))
        per_view = embeddings.reshape(len(self.views), -1, embeddings.shape[1])
        return F.normalize(per_view.sum(dim=0), dim=1)


def build_networks(
    base: str,
    trained_blocks: int,
    dim: int,
    n_classes: dict[str, int],
    pooling: str = "avg",
) -> tuple[Trunk, Top, str]:
    """A fresh trunk and top from the base's ImageNet weights (the top's head is random)."""
    net, weights_path = load_base(base)
    first = len(net._blocks) - trained_blocks
    if not 0 <= first < len(net._blocks):
        raise ValueError(f"--trained-blocks {trained_blocks}: choose 1..{len(net._blocks)}")
    return Trunk(net, first), Top(net, first, dim, n_classes, pooling), weights_path
