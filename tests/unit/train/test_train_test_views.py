"""The fixed test views: the served ONNX model computes exactly what cross-validation scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mammosearch.train.augment import normalise, to_unit
from mammosearch.train.fit import embed_cached
from mammosearch.train.model_dir import export_onnx_model
from mammosearch.train.network import EmbeddingModel, build_networks
from mammosearch.train.test_views import FIXED_VIEWS, FixedView, apply_view, views_for
from mammosearch.train.trunk_cache import trunk_views

SIZE_PX = 64


def _pixels(count: int) -> np.ndarray:
    """Images with structure off the centre, so a mirror or a rotation changes them."""
    generator = np.random.default_rng(3)
    pixels = generator.integers(0, 60, size=(count, SIZE_PX, SIZE_PX)).astype(np.uint8)
    pixels[:, 8:30, 5:20] = 230
    return pixels


def test_the_exported_model_embeds_as_the_cached_test_views_were_scored(tmp_path: Path) -> None:
    import onnxruntime

    torch.manual_seed(0)
    trunk, top, _ = build_networks("efficientnet-lite0", 2, 16, {"birads": 3})
    pixels = _pixels(5)
    cache = trunk_views(trunk, pixels, 6, 4, seed=0, device=torch.device("cpu"))
    scored = embed_cached(top, cache, np.arange(5), 4, torch.device("cpu"))

    model = EmbeddingModel(trunk, top, test_views=4, size_px=SIZE_PX).eval()
    inputs = normalise(to_unit(pixels)).contiguous()
    with torch.inference_mode():
        served_torch = model(inputs).numpy()
    export_onnx_model(model, SIZE_PX, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    served_onnx = session.run(None, {"images": inputs.numpy()})[0]

    assert np.allclose(served_torch, scored, atol=2e-3)  # the cache is float16
    assert np.allclose(served_onnx, served_torch, atol=1e-4)
    assert np.allclose(np.linalg.norm(served_onnx, axis=1), 1.0, atol=1e-5)
    one_view = embed_cached(top, cache, np.arange(5), 1, torch.device("cpu"))
    assert not np.allclose(one_view, scored, atol=1e-2)  # the views do change the vector


def test_each_fixed_view_changes_the_image_and_keeps_it_in_range() -> None:
    gray = to_unit(_pixels(2))
    assert torch.equal(apply_view(gray, FixedView()), gray)
    for view in FIXED_VIEWS[1:]:
        seen = apply_view(gray, view)
        assert seen.shape == gray.shape
        assert float(seen.min()) >= 0.0 and float(seen.max()) <= 1.0
        assert not torch.allclose(seen, gray, atol=1e-3), view


def test_an_impossible_number_of_test_views_is_refused_with_the_range() -> None:
    with pytest.raises(ValueError, match=f"1..{len(FIXED_VIEWS)}"):
        views_for(len(FIXED_VIEWS) + 1)
    with pytest.raises(ValueError, match="need at least 4"):
        trunk, _top, _ = build_networks("efficientnet-lite0", 2, 16, {"birads": 3})
        trunk_views(trunk, _pixels(1), 3, 4, seed=0, device=torch.device("cpu"))
