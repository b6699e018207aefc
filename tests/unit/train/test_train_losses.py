"""Every training loss one can choose: finite, differentiable, lower for a separated space."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from mammosearch.train.losses import LOSSES, XBM_BATCHES, make_loss
from mammosearch.train.positives import other_patient_pairs

N_CLASSES = 3
BATCH = 12
DIM = 8


PATIENTS = torch.arange(BATCH)  # one image per patient: every same-class pair counts


def _loss(name: str, positives: str = "any-patient"):  # noqa: ANN202
    weights = {"birads": torch.ones(N_CLASSES)}
    return make_loss(name, "birads", weights, 0.1, DIM, BATCH, positives)


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
    value = loss(mixed, _logits(mixed, targets), targets, PATIENTS)
    value.backward()
    assert torch.isfinite(value)
    assert mixed.grad is not None and float(mixed.grad.abs().sum()) > 0

    separated, targets = _batch(separated=True, seed=0)
    fresh = _loss(name)
    separated_value = fresh(separated, _logits(separated, targets), targets, PATIENTS)
    assert float(separated_value) < float(value.detach())


def test_the_cross_batch_memory_compares_a_batch_with_earlier_ones() -> None:
    plain, memory = _loss("supcon"), _loss("supcon+xbm")
    first, targets = _batch(separated=False, seed=1)
    second, _ = _batch(separated=False, seed=2)
    first_values = [float(f(first, {}, targets, PATIENTS)) for f in (plain, memory)]
    assert first_values[0] == pytest.approx(first_values[1], rel=1e-5)  # memory held only it
    second_values = [float(f(second, {}, targets, PATIENTS)) for f in (plain, memory)]
    assert second_values[0] != pytest.approx(second_values[1], rel=1e-3)  # now it holds both
    assert XBM_BATCHES * BATCH >= 2 * BATCH


def test_an_unknown_loss_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="supcon\\+xbm"):
        _loss("arcface")


@pytest.mark.parametrize("name", ["supcon", "ms", "ce+supcon"])
def test_other_patients_positives_equal_all_pairs_when_every_image_is_its_own_patient(
    name: str,
) -> None:
    embedding, targets = _batch(separated=False, seed=3)
    logits = _logits(embedding, targets)
    every_pair = _loss(name)(embedding, logits, targets, PATIENTS)
    other = _loss(name, "other-patients")(embedding, logits, targets, PATIENTS)
    assert float(other) == pytest.approx(float(every_pair), rel=1e-5)


def test_other_patients_positives_change_the_loss_when_a_patient_has_a_same_class_pair() -> None:
    embedding, targets = _batch(separated=False, seed=4)
    patients = PATIENTS.clone()
    patients[N_CLASSES] = patients[0]  # images 0 and 3: one patient, one class
    every_pair = _loss("supcon")(embedding, {}, targets, patients)
    other = _loss("supcon", "other-patients")(embedding, {}, targets, patients)
    assert float(other) != pytest.approx(float(every_pair), rel=1e-4)


def test_other_patient_pairs_keep_one_patients_different_class_pairs_as_negatives() -> None:
    labels = torch.tensor([0, 0, 1, 0])
    patients = torch.tensor([7, 7, 7, 8])
    anchors, positives, negative_anchors, negatives = other_patient_pairs(labels, patients)
    assert {(int(a), int(p)) for a, p in zip(anchors, positives, strict=True)} == {
        (0, 3),
        (3, 0),
        (1, 3),
        (3, 1),
    }
    negative_pairs = {(int(a), int(n)) for a, n in zip(negative_anchors, negatives, strict=True)}
    assert (0, 2) in negative_pairs and (2, 1) in negative_pairs  # same patient, other class


@pytest.mark.parametrize("name", ["supcon+xbm", "ce"])
def test_other_patients_positives_are_refused_where_the_loss_has_no_batch_pairs(
    name: str,
) -> None:
    with pytest.raises(ValueError, match=f"not with --loss {re.escape(name)}.*ce\\+supcon"):
        _loss(name, "other-patients")


def test_an_unknown_positives_rule_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="other-patients"):
        _loss("supcon", "same-breast")
