"""Image -> network input, as in Rahman et al.: grayscale, 224x224, 3 channels, ImageNet norm.

Equivalent to torchvision's `Grayscale(3) -> Resize((224, 224)) -> ToTensor() ->
Normalize(IMAGENET_MEAN, IMAGENET_STD)` on an 8-bit image, done in NumPy to skip three
intermediate copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

PREPROCESSING_VERSION = 1
"""Bump whenever `preprocess` gives different output: vectors of two versions are not comparable."""

INPUT_SIZE_PX = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

_HIGH_BIT_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
DETECTOR_BIT_DEPTHS = (10, 12, 14, 16)
"""Depths a mammography detector stores; a 16-bit file whose values never pass 4095 holds
12-bit data (DICOM's BitsStored), and its full range is 4095, not 65535."""


def full_range(pixels: np.ndarray) -> float:
    """The brightest value the data's bit depth can hold: 65535 for 16-bit data (so a
    16-bit twin of an 8-bit image, value * 257, maps back to the same 8 bits), 4095 for
    12-bit data in a 16-bit file. Never the image's own maximum: a stretch per image would
    brighten a dark image and rank a twin differently (the issue this replaced)."""
    brightest = int(np.ceil(max(float(pixels.max(initial=0)), 0.0)))
    bits = brightest.bit_length()
    depth = next((depth for depth in DETECTOR_BIT_DEPTHS if bits <= depth), bits)
    return float(2**depth - 1)


def to_grayscale_8bit(img: Image.Image) -> Image.Image:
    """An 8-bit grayscale ('L') copy, one intensity rule for every depth: value / full
    range of its bit depth * 255 (see `full_range`); float images in 0..1 are that range.

    DICOM never gets here above 8 bits: `ingest.dicom` applies its window first.
    """
    if img.mode == "L":
        return img
    if img.mode in _HIGH_BIT_DEPTH_MODES:
        # PIL's convert("L") clips values above 255, which would whiten a 12/16-bit mammogram.
        pixels = np.asarray(img, dtype=np.float64)
        is_unit_float = img.mode == "F" and float(pixels.max(initial=0)) <= 1.0
        brightest = 1.0 if is_unit_float else full_range(pixels)
        scaled = np.clip(pixels, 0.0, brightest) * (255.0 / brightest)
        return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
    return img.convert("L")


def resized_gray(img: Image.Image, size_px: int = INPUT_SIZE_PX) -> Image.Image:
    """The 8-bit grayscale network-size image `preprocess` normalises; `preprocess` of it
    gives the same tensor as of the original, so it can stand in for a large image."""
    return to_grayscale_8bit(img).resize((size_px, size_px), Image.Resampling.BILINEAR)


def preprocess(img: Image.Image, size_px: int = INPUT_SIZE_PX) -> torch.Tensor:
    """One image -> float32 tensor (3, size_px, size_px), ImageNet-normalised.

    224 px is the paper's input; trained models may take more (their model.json says).
    """
    import torch  # here: the API and ONNX paths use _normalised's arrays without torch

    return torch.from_numpy(_normalised(img, size_px))


def preprocess_batch(images: Sequence[Image.Image], size_px: int = INPUT_SIZE_PX) -> torch.Tensor:
    """Images -> float32 tensor (n, 3, size_px, size_px).

    Stacked in NumPy: `torch.stack` opens an OpenMP parallel region whose idle threads then
    spin, which tripled the CPU time of preprocessing one uploaded query (7.1 ms of CPU for
    2.4 ms of wall time).
    """
    import torch

    if len(images) == 0:
        return torch.empty((0, 3, size_px, size_px), dtype=torch.float32)
    return torch.from_numpy(np.stack([_normalised(img, size_px) for img in images]))


def _normalised(img: Image.Image, size_px: int) -> np.ndarray:
    pixels = np.asarray(resized_gray(img, size_px), dtype=np.float32) / np.float32(255.0)
    # Broadcasting the one gray plane against the 3 channel means yields the 3 channels.
    normalised = (pixels[None, :, :] - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    return np.ascontiguousarray(normalised, dtype=np.float32)
