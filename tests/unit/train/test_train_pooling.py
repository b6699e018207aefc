"""GeM pooling: a training option whose exported model embeds as the trained top does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mammosearch.train.augment import normalise, to_unit
from mammosearch.train.model_dir import export_onnx_model
from mammosearch.train.network import (
    GEM_INITIAL_POWER,
    EmbeddingModel,
    GeneralisedMeanPool,
    build_networks,
)

SIZE_PX = 64


def test_gem_lies_between_average_and_max_pooling() -> None:
    maps = torch.rand(2, 4, 5, 5)
    pooled = GeneralisedMeanPool()(maps)
    assert torch.all(pooled >= maps.mean(dim=(2, 3)) - 1e-6)
    assert torch.all(pooled <= maps.amax(dim=(2, 3)) + 1e-6)


def test_gem_power_is_trained_and_the_onnx_export_matches_torch(tmp_path: Path) -> None:
    import onnxruntime

    torch.manual_seed(0)
    trunk, top, _ = build_networks("efficientnet-lite0", 2, 16, {"birads": 3}, pooling="gem")
    pixels = np.random.default_rng(1).integers(0, 255, size=(3, SIZE_PX, SIZE_PX), dtype=np.uint8)
    inputs = normalise(to_unit(pixels)).contiguous()
    top.train()
    top.embed(trunk(inputs)).sum().backward()
    assert top.pool.power.grad is not None and float(top.pool.power.grad.abs()) > 0
    assert float(top.pool.power.detach()) == GEM_INITIAL_POWER

    model = EmbeddingModel(trunk, top.eval(), test_views=2, size_px=SIZE_PX).eval()
    with torch.inference_mode():
        served_torch = model(inputs).numpy()
    export_onnx_model(model, SIZE_PX, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    served_onnx = session.run(None, {"images": inputs.numpy()})[0]
    assert np.allclose(served_onnx, served_torch, atol=1e-4)


def test_an_unknown_pooling_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="avg, gem"):
        build_networks("efficientnet-lite0", 2, 16, {"birads": 3}, pooling="max")
