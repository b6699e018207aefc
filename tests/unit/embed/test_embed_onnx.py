"""ONNX Runtime serves the same space as PyTorch: same identity, same vectors within 1e-3."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from mammosearch.embed import (
    OnnxEmbedder,
    TorchEmbedder,
    clear_embedder_cache,
    export_onnx,
    load_embedder,
)
from mammosearch.embed.onnx_runtime import onnx_file_name


def _images(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(11)
    return [
        Image.fromarray(rng.integers(0, 256, (300, 240), dtype=np.uint8), "L") for _ in range(count)
    ]


def test_onnx_efficientnet_lite0_matches_torch_and_shares_its_identity(onnx_dir: Path) -> None:
    """Exported once into the cache folder; vectors equal torch's within 1e-3."""
    torch_embedder = load_embedder("efficientnet-lite0")
    onnx_embedder = load_embedder("efficientnet-lite0", runtime="onnx", onnx_dir=onnx_dir)
    assert isinstance(onnx_embedder, OnnxEmbedder)
    assert onnx_embedder.identity == torch_embedder.identity
    assert (onnx_embedder.backbone, onnx_embedder.dim) == ("efficientnet-lite0", 1280)
    images = _images(3)
    np.testing.assert_allclose(
        onnx_embedder.embed_pil(images), torch_embedder.embed_pil(images), atol=1e-3
    )
    (exported,) = onnx_dir.glob("*.onnx")
    assert torch_embedder.weights_sha256[:24] in exported.name


def test_an_existing_export_is_reused_not_rewritten(onnx_dir: Path) -> None:
    """A second process (cache cleared) loads the file instead of exporting again."""
    first = load_embedder("efficientnet-lite0", runtime="onnx", onnx_dir=onnx_dir)
    modified_ns = first.path.stat().st_mtime_ns
    clear_embedder_cache()
    second = load_embedder("efficientnet-lite0", runtime="onnx", onnx_dir=onnx_dir)
    assert second is not first and second.path == first.path
    assert second.path.stat().st_mtime_ns == modified_ns


def test_a_stale_export_with_another_identity_is_replaced(onnx_dir: Path) -> None:
    """A file whose stored identity differs (e.g. other weights) is exported again."""
    lite0 = load_embedder("efficientnet-lite0")
    expected_path = onnx_dir / onnx_file_name(lite0.identity)
    other_weights = replace(lite0.identity, weights_sha256="b" * 64)
    export_onnx(TorchEmbedder(lite0.model, other_weights), expected_path)
    assert OnnxEmbedder(expected_path).identity == other_weights
    reloaded = load_embedder("efficientnet-lite0", runtime="onnx", onnx_dir=onnx_dir)
    assert reloaded.path == expected_path and reloaded.identity == lite0.identity
