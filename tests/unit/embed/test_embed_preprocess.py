"""Preprocessing: the paper's grayscale -> 224x224 -> 3 channels -> ImageNet normalisation."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from mammosearch.embed import PREPROCESSING_VERSION, preprocess, preprocess_batch
from mammosearch.embed.preprocess import IMAGENET_MEAN, IMAGENET_STD

# sha256 of preprocess(_synthetic_image()) as float32 bytes, for PREPROCESSING_VERSION 1.
PINNED_OUTPUT = (1, "b48ded41dea1814b0474ab90022630079c0e20133d0403b9f5360c682b91a25e")


def _synthetic_image() -> Image.Image:
    """A fixed, non-square RGB pattern (exercises grayscale conversion and the resize)."""
    rows, cols = np.mgrid[0:300, 0:200]
    channels = [(rows * 7 + cols * 3) % 256, (rows * cols) % 256, (255 - cols) % 256]
    return Image.fromarray(np.stack(channels, axis=-1).astype(np.uint8), "RGB")


def test_output_is_three_equal_normalised_channels_of_224_px() -> None:
    """One gray plane, repeated, each channel normalised with its own ImageNet mean/std."""
    tensor = preprocess(_synthetic_image())
    assert tensor.shape == (3, 224, 224) and tensor.dtype == torch.float32
    unnormalised = tensor.numpy() * IMAGENET_STD[:, None, None] + IMAGENET_MEAN[:, None, None]
    np.testing.assert_allclose(unnormalised[0], unnormalised[1], atol=1e-6)
    np.testing.assert_allclose(unnormalised[0], unnormalised[2], atol=1e-6)
    assert unnormalised.min() >= -1e-6 and unnormalised.max() <= 1 + 1e-6


def test_a_white_image_maps_to_one_minus_mean_over_std() -> None:
    """Pixel 255 -> (1 - mean) / std per channel: the scale is 0..1 before normalising."""
    tensor = preprocess(Image.new("L", (512, 512), 255))
    expected = (1 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(tensor.numpy().reshape(3, -1).mean(axis=1), expected, rtol=1e-6)


def test_matches_the_torchvision_pipeline_of_the_paper_exactly() -> None:
    """Same numbers as Grayscale(3) -> Resize((224, 224)) -> ToTensor -> Normalize."""
    paper_pipeline = transforms.Compose(
        [
            transforms.Grayscale(3),
            transforms.Resize((224, 224)),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN.tolist(), IMAGENET_STD.tolist()),
        ]
    )
    image = _synthetic_image()
    assert torch.equal(preprocess(image), paper_pipeline(image))


def test_output_change_is_noticed_by_the_pinned_checksum() -> None:
    """If this fails, preprocessing output changed: bump PREPROCESSING_VERSION, re-pin."""
    digest = hashlib.sha256(preprocess(_synthetic_image()).numpy().tobytes()).hexdigest()
    assert (PREPROCESSING_VERSION, digest) == PINNED_OUTPUT


def test_16_bit_images_are_stretched_not_clipped() -> None:
    """A 12-bit mammogram keeps its contrast instead of turning white above 255."""
    pixels = np.tile(np.linspace(0, 4095, 256, dtype=np.uint16), (256, 1))
    tensor = preprocess(Image.fromarray(pixels))
    unnormalised = tensor[0].numpy() * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    assert unnormalised.min() == pytest.approx(0, abs=1e-6)
    assert unnormalised.max() == pytest.approx(1, abs=1e-6)
    assert 0.4 < unnormalised.mean() < 0.6


def test_batch_stacks_images_and_handles_none() -> None:
    """(n, 3, 224, 224) for n images, (0, 3, 224, 224) for none."""
    images = [_synthetic_image(), Image.new("L", (100, 80), 30)]
    batch = preprocess_batch(images)
    assert batch.shape == (2, 3, 224, 224)
    assert torch.equal(batch[1], preprocess(images[1]))
    assert preprocess_batch([]).shape == (0, 3, 224, 224)
