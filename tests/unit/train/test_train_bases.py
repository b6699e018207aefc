"""Every base `mammosearch train` offers starts from its real ImageNet weights and exports."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from mammosearch.train.augment import normalise, to_unit
from mammosearch.train.bases import BASE_BACKBONES
from mammosearch.train.model_dir import export_onnx_model
from mammosearch.train.network import EmbeddingModel, build_networks, load_base

SIZE_PX = 64


@pytest.mark.parametrize("base", BASE_BACKBONES)
def test_each_base_loads_its_real_weights_and_its_model_exports(base: str, tmp_path: Path) -> None:
    import onnxruntime

    net, weights_path = load_base(base)
    assert Path(weights_path).name.startswith(base)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    assert torch.equal(net._conv_stem.weight, state["_conv_stem.weight"]), "not the real weights"
    assert hashlib.sha256(Path(weights_path).read_bytes()).hexdigest()

    torch.manual_seed(0)
    trunk, top, _ = build_networks(base, 2, 16, {"birads": 3})
    assert len(top.blocks) == 2 and all(not p.requires_grad for p in trunk.parameters())
    pixels = np.random.default_rng(1).integers(0, 255, size=(3, SIZE_PX, SIZE_PX), dtype=np.uint8)
    inputs = normalise(to_unit(pixels)).contiguous()
    model = EmbeddingModel(trunk, top.eval(), test_views=2, size_px=SIZE_PX).eval()
    with torch.inference_mode():
        served_torch = model(inputs).numpy()
    assert served_torch.shape == (3, 16)
    export_onnx_model(model, SIZE_PX, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    assert np.allclose(session.run(None, {"images": inputs.numpy()})[0], served_torch, atol=1e-4)


def test_an_unknown_base_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="efficientnet-lite0, efficientnet-lite1"):
        load_base("densenet121")
