"""`--ensemble N`: tops from consecutive seeds, each checkpointed, averaged, exported as one."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from mammosearch.train.augment import normalise, to_unit
from mammosearch.train.config import TrainConfig
from mammosearch.train.dataset import LabelledImages
from mammosearch.train.fit import embed_cached
from mammosearch.train.model_dir import export_onnx_model
from mammosearch.train.network import EmbeddingModel, TopEnsemble, build_networks
from mammosearch.train.runner import Prepared, train_top
from mammosearch.train.trunk_cache import trunk_views

CPU = torch.device("cpu")


@dataclass
class Synthetic(Prepared):
    pixels: np.ndarray | None = None


def _prepared(config: TrainConfig) -> Synthetic:
    """Twelve synthetic 64 px images of six patients in three classes, views cached."""
    generator = np.random.default_rng(0)
    count = 12
    pixels = generator.integers(0, 255, size=(count, 64, 64)).astype(np.uint8)
    data = LabelledImages(
        image_ids=np.arange(count),
        patient_ids=np.repeat(np.arange(6), 2),
        paths=tuple(Path(f"{i}.png") for i in range(count)),
        names=tuple(f"{i}.png" for i in range(count)),
        sha256s=tuple(f"{i:064x}" for i in range(count)),
        classes={"birads": (1, 2, 3)},
        targets={"birads": np.arange(count) % 3},
    )
    trunk, _top, weights = build_networks(config.base, config.trained_blocks, config.dim, {})
    cache = trunk_views(trunk, pixels, config.n_views, config.test_views, config.seed, CPU)
    return Synthetic(data, cache, trunk, np.zeros((count, 4), np.float32), weights, pixels)


def test_an_ensemble_averages_members_trained_from_different_seeds(tmp_path: Path) -> None:
    config = replace(
        TrainConfig(), image_size_px=64, n_views=2, trained_blocks=2, dim=16, ensemble=2
    ).with_fit(epochs=1, batch_size=6)
    prepared = _prepared(config)
    everyone = np.arange(12)
    checkpoint = tmp_path / "fold-1.pt"
    ensemble = train_top(prepared, config, everyone, CPU, checkpoint, "test", quiet=True)

    assert isinstance(ensemble, TopEnsemble) and len(ensemble.members) == 2
    assert checkpoint.is_file() and (tmp_path / "fold-1-member2.pt").is_file()
    first, second = (embed_cached(m, prepared.cache, everyone, 1, CPU) for m in ensemble.members)
    assert not np.allclose(first, second, atol=1e-3)  # other seeds, other tops
    averaged = first + second
    averaged /= np.linalg.norm(averaged, axis=1, keepdims=True)
    assert np.allclose(
        embed_cached(ensemble, prepared.cache, everyone, 1, CPU), averaged, atol=1e-5
    )

    model = EmbeddingModel(prepared.trunk, ensemble, test_views=2, size_px=64).eval()
    export_onnx_model(model, 64, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    served = session.run(None, {"images": normalise(to_unit(prepared.pixels)).numpy()})[0]
    assert np.allclose(served, embed_cached(ensemble, prepared.cache, everyone, 2, CPU), atol=2e-3)

    resumed = train_top(prepared, config, everyone, CPU, checkpoint, "test", quiet=True)
    for kept, again in zip(
        ensemble.state_dict().values(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(kept, again)  # finished members are loaded, not trained again
