"""Frozen-trunk outputs for a few views of every image, computed once per run.

View 0 is the image as served, view 1 its mirror (so flip-averaged embeddings cost nothing
more), views 2.. are random augmentations. Kept as float16 to halve the memory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mammosearch.train.augment import augment, normalise, to_unit
from mammosearch.train.network import Trunk

PLAIN_VIEW = 0
MIRROR_VIEW = 1
CHUNK = 16


def trunk_views(
    trunk: Trunk,
    pixels: np.ndarray,
    n_views: int,
    seed: int,
    device: torch.device,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """(n, n_views, channels, h, w) float16 trunk maps of `pixels` (n, s, s) uint8."""
    if n_views < 2:
        raise ValueError(f"n_views {n_views}: need at least 2 (plain and mirrored)")
    generator = np.random.default_rng(seed)
    trunk = trunk.to(device, memory_format=torch.channels_last).eval()
    cache: torch.Tensor | None = None
    with torch.inference_mode():
        for start in range(0, pixels.shape[0], CHUNK):
            gray = to_unit(pixels[start : start + CHUNK])
            views = [gray, gray.flip(-1)]
            views += [augment(gray, generator) for _ in range(n_views - 2)]
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
