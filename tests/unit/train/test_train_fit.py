"""fit_top: weight averaging over the last epochs, resumable, and the patients the loss sees."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from mammosearch.train.fit import FitConfig, fit_top
from mammosearch.train.losses import make_loss
from mammosearch.train.network import Top, build_networks

SIZE_PX = 64
N_IMAGES = 8
LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1], dtype=np.int64)
PATIENTS = np.array([10, 10, 11, 11, 12, 12, 13, 13], dtype=np.int64)


def _setup() -> tuple[Top, torch.Tensor]:
    torch.manual_seed(0)
    trunk, top, _ = build_networks("efficientnet-lite0", 2, 16, {"birads": 3})
    pixels = torch.rand(
        N_IMAGES * 2, 3, SIZE_PX, SIZE_PX, generator=torch.Generator().manual_seed(1)
    )
    with torch.inference_mode():
        maps = trunk.eval()(pixels)
    return top, maps.reshape(N_IMAGES, 2, *maps.shape[1:]).half()


def _fit(top: Top, cache: torch.Tensor, config: FitConfig, **kwargs: object) -> Top:
    torch.manual_seed(config.seed)  # drop-connect draws from torch's generator, as in runner
    loss = make_loss("supcon", "birads", {"birads": torch.ones(3)}, 0.1, top.dim, config.batch_size)
    return fit_top(
        top,
        cache,
        {"birads": LABELS},
        np.arange(N_IMAGES),
        loss,
        config,
        torch.device("cpu"),
        PATIENTS,
        **kwargs,
    )


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_averaged_epochs_serve_the_mean_of_the_last_epochs_weights() -> None:
    top, cache = _setup()
    seen: list[torch.Tensor] = []
    config = FitConfig(epochs=3, batch_size=4, averaged_epochs=2)
    averaged = _fit(top, cache, config, on_epoch=lambda e, loss, t: seen.append(_flat(t)))
    assert len(seen) == 3
    assert torch.allclose(_flat(averaged), (seen[1] + seen[2]) / 2, atol=1e-6)
    assert not torch.allclose(_flat(averaged), seen[2])
    assert not averaged.training


def test_an_averaging_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path: Path) -> None:
    top, cache = _setup()
    config = FitConfig(epochs=3, batch_size=4, averaged_epochs=2)
    whole = _fit(copy.deepcopy(top), cache, config)

    def stop_after_two(epoch: int, loss: float, trained: Top) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    checkpoint = tmp_path / "top.pt"
    with pytest.raises(KeyboardInterrupt):
        _fit(copy.deepcopy(top), cache, config, checkpoint=checkpoint, on_epoch=stop_after_two)
    resumed = _fit(copy.deepcopy(top), cache, config, checkpoint=checkpoint)
    assert torch.allclose(_flat(resumed), _flat(whole), atol=1e-6)


def test_the_loss_sees_each_batch_images_patients() -> None:
    top, cache = _setup()
    batches: list[tuple[list[int], list[int]]] = []
    loss = make_loss("supcon", "birads", {"birads": torch.ones(3)}, 0.1, top.dim, 4)

    def spying(embedding, logits, targets, patients, breasts=None):  # noqa: ANN001, ANN202
        assert breasts is None  # batches of loose images by default
        batches.append((targets["birads"].tolist(), patients.tolist()))
        return loss(embedding, logits, targets, patients)

    fit_top(
        top,
        cache,
        {"birads": LABELS},
        np.arange(N_IMAGES),
        spying,
        FitConfig(epochs=1, batch_size=4),
        torch.device("cpu"),
        PATIENTS,
    )
    pairs = {
        (label, patient)
        for labels, patients in batches
        for label, patient in zip(labels, patients, strict=True)
    }
    assert pairs == set(zip(LABELS.tolist(), PATIENTS.tolist(), strict=True))
