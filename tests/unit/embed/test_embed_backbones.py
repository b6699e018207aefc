"""Backbone registry, weights resolution, auto choice, random weights and the lite0 embedder."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import densenet121

from mammosearch.embed import (
    BACKBONES,
    Embedder,
    WeightsUnavailable,
    build_torch_embedder,
    load_embedder,
    resolve_backbone_name,
)
from tests.conftest import DEV_DATA

DEV_IMAGES = DEV_DATA / "Subtracted images"


@pytest.fixture
def empty_torch_home(no_weights_offline: Path) -> Path:
    """A TORCH_HOME with no cached weights, downloads blocked, no embedders from other tests."""
    return no_weights_offline


def _gray_images(count: int, size_px: int = 256) -> list[Image.Image]:
    rng = np.random.default_rng(7)
    return [
        Image.fromarray(rng.integers(0, 256, (size_px, size_px), dtype=np.uint8), "L")
        for _ in range(count)
    ]


def test_registry_lists_the_seven_backbones_with_their_dims() -> None:
    """One list: the paper's DenseNet121 and its comparisons, plus EfficientNet-Lite0/1/2."""
    assert {name: backbone.dim for name, backbone in BACKBONES.items()} == {
        "densenet121": 1024,
        "resnet50": 2048,
        "vgg16": 512,
        "efficientnet_b0": 1280,
        "efficientnet-lite0": 1280,
        "efficientnet-lite1": 1280,
        "efficientnet-lite2": 1280,
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_each_feature_extractor_outputs_its_registered_dim(name: str) -> None:
    """The registered dim is what the pooled, classifier-free network really yields."""
    backbone = BACKBONES[name]
    extractor = backbone.to_feature_extractor(backbone.build_classifier()).eval()
    with torch.inference_mode():
        assert extractor(torch.zeros(1, 3, 224, 224)).shape == (1, backbone.dim)


@pytest.mark.parametrize(
    ("name", "weights_file"),
    [
        ("efficientnet-lite0", "efficientnet-lite0-57934424.pth"),
        ("efficientnet-lite1", "efficientnet-lite1-77cc7160.pth"),
        ("efficientnet-lite2", "efficientnet-lite2-9656183e.pth"),
    ],
)
def test_efficientnet_lites_embed_with_their_real_imagenet_weights(
    name: str, weights_file: str
) -> None:
    """Packaged weights: pretrained, hashed, (n, 1280) finite, same output every time."""
    embedder = load_embedder(name)
    assert isinstance(embedder, Embedder) and embedder.pretrained
    weights_path = Path(embedder.weights_source)
    assert weights_path.name == weights_file
    assert embedder.weights_sha256 == hashlib.sha256(weights_path.read_bytes()).hexdigest()
    images = _gray_images(3)
    vectors = embedder.embed_pil(images)
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all() and not np.allclose(vectors[0], vectors[1])
    np.testing.assert_array_equal(embedder.embed_pil(images), vectors)


def test_batching_does_not_change_the_vectors() -> None:
    """embed_pil in batches of 2 equals one batch of 3, and no images give (0, dim)."""
    embedder = load_embedder("efficientnet-lite0")
    images = _gray_images(3)
    whole = embedder.embed_tensors(torch.stack([_preprocessed(i) for i in images]))
    batched = build_torch_embedder("efficientnet-lite0", batch_size=2).embed_pil(images)
    np.testing.assert_allclose(batched, whole, atol=1e-4)
    assert embedder.embed_pil([]).shape == (0, 1280)


def _preprocessed(image: Image.Image) -> torch.Tensor:
    from mammosearch.embed import preprocess

    return preprocess(image)


def test_a_wrongly_shaped_batch_is_refused_with_the_shape_named() -> None:
    """A raw image tensor is not silently embedded."""
    with pytest.raises(ValueError, match=r"\(n, 3, 224, 224\).*\(2, 1, 224, 224\)"):
        load_embedder("efficientnet-lite0").embed_tensors(torch.zeros(2, 1, 224, 224))


@pytest.mark.skipif(not DEV_IMAGES.is_dir(), reason=f"dev data absent: {DEV_IMAGES}")
def test_real_mammograms_give_distinct_finite_vectors() -> None:
    """Three real CESM images -> three different, finite vectors."""
    paths = sorted(DEV_IMAGES.glob("*.jpg"))[:3]
    vectors = load_embedder("efficientnet-lite0").embed_pil([Image.open(p) for p in paths])
    assert vectors.shape == (3, 1280) and np.isfinite(vectors).all()
    assert len({vector.tobytes() for vector in vectors}) == 3


def test_densenet121_without_weights_says_which_file_goes_where(empty_torch_home: Path) -> None:
    """The error names the torchvision file, the exact checkpoints dir and the setting."""
    with pytest.raises(WeightsUnavailable) as raised:
        load_embedder("densenet121")
    message = str(raised.value)
    assert "densenet121-a639ec97.pth" in message
    assert str(empty_torch_home) in message
    assert "MAMMOSEARCH_WEIGHTS" in message


def test_a_missing_explicit_weights_file_is_named(tmp_path: Path) -> None:
    """An explicit path that does not exist is an error, never a silent fallback."""
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(WeightsUnavailable, match=re.escape(str(missing))):
        load_embedder("densenet121", weights=missing, allow_random=True)


def test_explicit_weights_file_is_loaded_and_hashed(tmp_path: Path, empty_torch_home: Path) -> None:
    """A torchvision densenet121 state_dict (old 'norm.1' key names too) loads from a path."""
    source = densenet121(weights=None)
    with torch.no_grad():
        source.features.conv0.weight.fill_(0.01)  # recognisable after loading
    old_style = {
        re.sub(r"(denselayer\d+\.(?:norm|relu|conv))(\d)\.", r"\1.\2.", key): value
        for key, value in source.state_dict().items()
    }
    assert any(".norm.1." in key for key in old_style)  # as in the file torchvision serves
    weights_path = tmp_path / "my-densenet121.pth"
    torch.save(old_style, weights_path)

    embedder = load_embedder("densenet121", weights=weights_path)
    assert embedder.backbone == "densenet121" and embedder.dim == 1024 and embedder.pretrained
    assert embedder.weights_sha256 == hashlib.sha256(weights_path.read_bytes()).hexdigest()
    assert embedder.weights_source == str(weights_path.resolve())
    assert torch.all(embedder.model.features.conv0.weight == 0.01)
    assert embedder.embed_pil(_gray_images(2)).shape == (2, 1024)
    assert load_embedder("densenet121", weights=weights_path) is embedder  # loaded once


def test_weights_of_another_backbone_are_refused_with_the_path(tmp_path: Path) -> None:
    """The lite0 file given as densenet121 weights: error names the file and the backbone."""
    lite_weights = Path(load_embedder("efficientnet-lite0").weights_source)
    with pytest.raises(WeightsUnavailable, match=r"not densenet121 weights"):
        build_torch_embedder("densenet121", weights=lite_weights)


def test_auto_picks_efficientnet_lite0_here_and_says_why(empty_torch_home: Path) -> None:
    """No densenet121 weights offline: auto falls back and the reason, one short line, names
    the file (not the download error and the settings paragraph of a real failure)."""
    name, reason = resolve_backbone_name("auto")
    assert name == "efficientnet-lite0"
    assert "densenet121-a639ec97.pth" in reason
    assert "\n" not in reason and "download" not in reason and len(reason) < 200
    assert load_embedder("auto").backbone == "efficientnet-lite0"


def test_auto_picks_densenet121_when_its_weights_are_cached(empty_torch_home: Path) -> None:
    """A file in torchvision's cache is enough for auto to prefer the paper's backbone."""
    empty_torch_home.mkdir(parents=True)
    (empty_torch_home / "densenet121-a639ec97.pth").write_bytes(b"placeholder")
    name, reason = resolve_backbone_name("auto")
    assert name == "densenet121" and str(empty_torch_home) in reason


def test_unknown_backbone_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'alexnet'.*densenet121"):
        resolve_backbone_name("alexnet")


def test_random_weights_only_when_allowed_and_marked_untrained(empty_torch_home: Path) -> None:
    """allow_random gives a deterministic, clearly untrained space; without it, an error."""
    with pytest.raises(WeightsUnavailable):
        load_embedder("densenet121")
    embedder = load_embedder("densenet121", allow_random=True)
    assert embedder.pretrained is False
    assert embedder.weights_sha256 == "untrained-random-seed-0"
    assert embedder.weights_source == "random (untrained)"
    assert embedder.describe()["untrained"] is True
    again = build_torch_embedder("densenet121", allow_random=True)
    images = _gray_images(1)
    np.testing.assert_array_equal(again.embed_pil(images), embedder.embed_pil(images))
