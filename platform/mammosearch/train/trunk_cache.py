"""Frozen-trunk outputs for a few views of every image, computed once per run.

The first views are the fixed test-time views (`test_views`: view 0 the image as served,
view 1 its mirror, then small fixed rotations, zooms and gamma changes), so scoring what the
served model computes costs nothing more; the rest are random augmentations. Kept as
float16 to halve the memory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mammosearch.train.augment import augment, normalise, to_unit
from mammosearch.train.network import Trunk
from mammosearch.train.test_views import apply_view, views_for

CHUNK = 16


def fixed_view_count(test_views: int) -> int:
    """How many of the cached views are fixed: the served ones, and at least plain + mirror."""
    return max(2, test_views)


def trunk_views(
    trunk: Trunk,
    pixels: np.ndarray,
    n_views: int,
    test_views: int,
    seed: int,
    device: torch.device,
    progress: Callable[[int], object] | None = None,
) -> torch.Tensor:
    """(n, n_views, channels, h, w) float16 trunk maps of `pixels` (n, s, s) uint8."""
    fixed = views_for(fixed_view_count(test_views))
    if n_views < len(fixed):
        raise ValueError(
            f"--views {n_views}: need at least {len(fixed)} (the {len(fixed)} fixed test views)"
        )
    generator = np.random.default_rng(seed)
    trunk = trunk.to(device, memory_format=torch.channels_last).eval()  # type: ignore[call-overload]  # torch's overloads lack (device, memory_format)
    cache: torch.Tensor | None = None
    with torch.inference_mode():
        for start in range(0, pixels.shape[0], CHUNK):
            gray = to_unit(pixels[start : start + CHUNK])
            views = [apply_view(gray, view) for view in fixed]
            views += [augment(gray, generator) for _ in range(n_views - len(fixed))]
            maps = torch.stack(
                [
                    trunk(normalise(view).to(device).contiguous(memory_format=torch.channels_last))
                    .to(torch.float16)
                    .cpu()
                    for view in views
                ],
                dim=1,
            )
            if cache is None:
                cache = torch.empty((pixels.shape[0], *maps.shape[1:]), dtype=torch.float16)
            cache[start : start + maps.shape[0]] = maps
            if progress is not None:
                progress(maps.shape[0])
    assert cache is not None
    return cache
