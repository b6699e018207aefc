"""Every training loss one can choose: finite, differentiable, lower for a separated space."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mammosearch.train.losses import LOSSES, XBM_BATCHES, make_loss

N_CLASSES = 3
BATCH = 12
DIM = 8


def _loss(name: str):  # noqa: ANN202
    weights = {"birads": torch.ones(N_CLASSES)}
    return make_loss(name, "birads", weights, 0.1, DIM, BATCH)


def _batch(separated: bool, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(BATCH) % N_CLASSES
    noise = torch.randn(BATCH, DIM, generator=generator)
    if separated:
        centres = torch.eye(DIM)[:N_CLASSES] * 10
        noise = centres[labels] + noise
    return F.normalize(noise, dim=1), {"birads": labels}


def _logits(embedding: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    weight = torch.eye(DIM)[:N_CLASSES]
    return {"birads": 16.0 * embedding @ weight.T}


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_is_finite_differentiable_and_lower_when_classes_separate(name: str) -> None:
    loss = _loss(name)
    mixed, targets = _batch(separated=False, seed=0)
    mixed.requires_grad_(True)
    value = loss(mixed, _logits(mixed, targets), targets)
    value.backward()
    assert torch.isfinite(value)
    assert mixed.grad is not None and float(mixed.grad.abs().sum()) > 0

    separated, targets = _batch(separated=True, seed=0)
    fresh = _loss(name)
    assert float(fresh(separated, _logits(separated, targets), targets)) < float(value.detach())


def test_the_cross_batch_memory_compares_a_batch_with_earlier_ones() -> None:
    plain, memory = _loss("supcon"), _loss("supcon+xbm")
    first, targets = _batch(separated=False, seed=1)
    second, _ = _batch(separated=False, seed=2)
    first_values = [float(f(first, {}, targets)) for f in (plain, memory)]
    assert first_values[0] == pytest.approx(first_values[1], rel=1e-5)  # memory held only it
    second_values = [float(f(second, {}, targets)) for f in (plain, memory)]
    assert second_values[0] != pytest.approx(second_values[1], rel=1e-3)  # now it holds both
    assert XBM_BATCHES * BATCH >= 2 * BATCH


def test_an_unknown_loss_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="supcon\\+xbm"):
        _loss("arcface")
