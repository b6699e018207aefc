"""Fixed test-time views: every query and archive image is embedded as a few fixed variants.

Averaging an image's embedding over its mirror and a few small fixed rotations, zooms and
gamma changes makes the vector depend less on how one exposure happened to be positioned
and windowed. The served model applies these views inside its graph (`apply_view` is plain
tensor arithmetic that exports to ONNX), and training caches the same views through the
frozen trunk, so the out-of-fold figures score exactly what is served.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class FixedView:
    """One deterministic variant of an image: rotate and zoom about the centre, gamma, mirror."""

    angle_deg: float = 0.0
    scale: float = 1.0
    gamma: float = 1.0
    mirrored: bool = False

    @property
    def geometric(self) -> bool:
        return self.angle_deg != 0.0 or self.scale != 1.0

    def to_dict(self) -> dict[str, float | bool]:
        return asdict(self)


FIXED_VIEWS = (
    FixedView(),
    FixedView(mirrored=True),
    FixedView(angle_deg=6.0, scale=1.04, gamma=0.9),
    FixedView(angle_deg=-6.0, scale=0.96, gamma=1.1, mirrored=True),
    FixedView(angle_deg=-6.0, scale=1.04, gamma=1.1),
    FixedView(angle_deg=6.0, scale=0.96, gamma=0.9, mirrored=True),
    FixedView(angle_deg=3.0, scale=1.0, gamma=1.0, mirrored=True),
    FixedView(angle_deg=-3.0, scale=1.0, gamma=1.0),
)
"""In the order they are used: `test_views = n` averages the first n (1: the image alone,
2: with its mirror). The ranges stay inside the training augmentations' (see `augment`)."""


def views_for(count: int) -> tuple[FixedView, ...]:
    if not 1 <= count <= len(FIXED_VIEWS):
        raise ValueError(f"test views {count}: choose 1..{len(FIXED_VIEWS)}")
    return FIXED_VIEWS[:count]


def view_grid(view: FixedView, size_px: int) -> torch.Tensor:
    """(1, size_px, size_px, 2) sampling grid of the view's rotation and zoom.

    Computed once, outside the exported graph: ONNX has no affine-grid operator before
    opset 20, while sampling a given grid (GridSample) exists from opset 16.
    """
    radians = math.radians(view.angle_deg)
    cos, sin = math.cos(radians) / view.scale, math.sin(radians) / view.scale
    theta = torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0]]])
    return F.affine_grid(theta, [1, 1, size_px, size_px], align_corners=False)


def apply_view(
    gray: torch.Tensor, view: FixedView, grid: torch.Tensor | None = None
) -> torch.Tensor:
    """(n, 1, s, s) in [0, 1] -> the same images seen as `view`, still in [0, 1].

    `grid` is `view_grid(view, s)`, passed in where it is computed once (the served model).
    """
    if view.geometric:
        grid = view_grid(view, gray.shape[-1]) if grid is None else grid
        gray = F.grid_sample(
            gray,
            grid.to(gray).expand(gray.shape[0], -1, -1, -1),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
    if view.gamma != 1.0:
        gray = gray.clamp(0.0, 1.0).pow(view.gamma)
    if view.mirrored:
        gray = torch.flip(gray, dims=[3])
    return gray
