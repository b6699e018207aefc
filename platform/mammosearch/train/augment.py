"""Augmentations that suit mammograms: flips, small affine, intensity and contrast jitter.

No colour jitter (the images are grayscale), no crops that could cut a lesion out, no
vertical flips (a breast is not upside down). Views are made once per image and cached
through the frozen trunk (see `trunk_cache`), so each epoch picks among them.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as tvf

from mammosearch.embed.preprocess import IMAGENET_MEAN, IMAGENET_STD

MAX_ROTATION_DEG = 10.0
MAX_SHIFT = 0.04  # of the image side
SCALE_RANGE = (0.92, 1.08)
GAMMA_RANGE = (0.8, 1.25)
CONTRAST_RANGE = (0.85, 1.15)
BRIGHTNESS_SHIFT = 0.05

_MEAN = torch.from_numpy(IMAGENET_MEAN)[None, :, None, None]
_STD = torch.from_numpy(IMAGENET_STD)[None, :, None, None]


def to_unit(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (n, h, w) -> float (n, 1, h, w) in [0, 1]."""
    return torch.from_numpy(pixels).float().div_(255.0)[:, None]


def normalise(gray: torch.Tensor) -> torch.Tensor:
    """(n, 1, h, w) in [0, 1] -> (n, 3, h, w) ImageNet-normalised, as `preprocess` does."""
    return (gray - _MEAN) / _STD


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """`normalise`'s inverse for its equal channels: (n, 3, h, w) -> (n, 1, h, w) in [0, 1]."""
    return images[:, :1] * _STD[:, :1] + _MEAN[:, :1]


def augment(gray: torch.Tensor, generator: np.random.Generator) -> torch.Tensor:
    """One random view of each image in (n, 1, h, w): affine, intensity, maybe mirrored."""
    views = torch.empty_like(gray)
    side = gray.shape[-1]
    for position in range(gray.shape[0]):
        image = gray[position]
        image = tvf.affine(
            image,
            angle=float(generator.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)),
            translate=[int(round(generator.uniform(-MAX_SHIFT, MAX_SHIFT) * side)) for _ in "xy"],
            scale=float(generator.uniform(*SCALE_RANGE)),
            shear=[0.0, 0.0],
            interpolation=tvf.InterpolationMode.BILINEAR,
        )
        image = image.clamp(0.0, 1.0).pow(float(generator.uniform(*GAMMA_RANGE)))
        mean = image.mean()
        image = (image - mean) * float(generator.uniform(*CONTRAST_RANGE)) + mean
        image = image + float(generator.uniform(-BRIGHTNESS_SHIFT, BRIGHTNESS_SHIFT))
        if generator.random() < 0.5:
            image = image.flip(-1)
        views[position] = image.clamp(0.0, 1.0)
    return views
