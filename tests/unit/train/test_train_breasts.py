"""`--cases`: batches of whole breasts, and a term over each breast's mean embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mammosearch.train.breasts import (
    APART,
    CASE_MODES,
    MEAN,
    TOGETHER,
    breast_batches,
    breasts_of,
)
from mammosearch.train.config import TrainConfig
from mammosearch.train.dataset import IGNORE_INDEX
from mammosearch.train.fit import FitConfig, fit_top
from mammosearch.train.losses import breast_mean_embeddings, check_loss, make_loss
from mammosearch.train.network import build_networks


def _row(patient: int, side: str, view: str, birads: int | None) -> dict:
    return {
        "patient_id": patient,
        "study_instance_uid": None,
        "side": side,
        "view": view,
        "modality": "CM",
        "birads": birads,
        "pathology": None,
        "findings": None,
    }


ROWS = (
    _row(1, "L", "CC", 1),
    _row(1, "L", "MLO", 4),  # the breast is BIRADS 4: its most suspicious view
    _row(1, "R", "CC", 1),
    _row(2, "L", "MLO", 2),
    _row(2, "L", "CC", 2),
    _row(3, "R", "CC", None),
)
CLASSES = (1, 2, 4)


def test_images_of_one_breast_share_its_index_and_its_most_suspicious_class() -> None:
    breasts = breasts_of(ROWS, CLASSES, "birads")
    ids = breasts.ids.tolist()
    assert ids[0] == ids[1] and ids[3] == ids[4]
    assert len({ids[0], ids[2], ids[3], ids[5]}) == 4  # other side, other patients: apart
    assert breasts.targets.tolist() == [2, 2, 0, 1, 1, IGNORE_INDEX]


def test_breast_batches_hold_whole_breasts_every_image_once_and_no_more_batches() -> None:
    breast_ids = np.repeat(np.arange(30), [1, 2, 3] * 10)
    positions = np.arange(breast_ids.size)
    batches = breast_batches(np.random.default_rng(0), positions, breast_ids, 6)
    assert len(batches) <= 6
    assert sorted(np.concatenate(batches).tolist()) == positions.tolist()
    owners = [set(breast_ids[batch].tolist()) for batch in batches]
    for first in range(len(owners)):
        for second in range(first + 1, len(owners)):
            assert not owners[first] & owners[second]  # a breast is never split
    sizes = [batch.size for batch in batches]
    assert max(sizes) - min(sizes) <= 4  # cuts near an even split


def test_breast_batches_draw_breasts_in_a_new_order_each_epoch_and_by_seed() -> None:
    breast_ids = np.repeat(np.arange(20), 2)
    positions = np.arange(breast_ids.size)
    generator = np.random.default_rng(0)
    first = np.concatenate(breast_batches(generator, positions, breast_ids, 4))
    second = np.concatenate(breast_batches(generator, positions, breast_ids, 4))
    again = np.concatenate(breast_batches(np.random.default_rng(0), positions, breast_ids, 4))
    assert first.tolist() != second.tolist()
    assert first.tolist() == again.tolist()


def test_a_breast_mean_is_the_normalised_mean_of_its_views_with_its_class() -> None:
    embedding = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=1)
    means, labels = breast_mean_embeddings(
        embedding, torch.tensor([5, 5, 9]), torch.tensor([2, 2, 0])
    )
    assert torch.allclose(means[0], F.normalize(torch.tensor([1.0, 1.0]), dim=0))
    assert labels.tolist() == [2, 0]


def _views() -> torch.Tensor:
    """Six breasts of two views, three classes, noisy around their class centres."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(8)[:3] * 4
    labels = torch.tensor([0, 0, 1, 1, 2, 2]).repeat_interleave(2)
    return F.normalize(centres[labels] + torch.randn(12, 8, generator=generator), dim=1)


def test_the_mean_term_adds_to_the_loss_only_when_the_batch_names_its_breasts() -> None:
    weights = {"birads": torch.ones(3)}
    labels = torch.tensor([0, 0, 1, 1, 2, 2]).repeat_interleave(2)
    breasts = (torch.arange(6).repeat_interleave(2), labels)
    patients = torch.arange(12)
    plain = make_loss("supcon", "birads", weights, 0.1, 8, 12)
    with_mean = make_loss("supcon", "birads", weights, 0.1, 8, 12, cases=MEAN)
    views = _views().requires_grad_(True)
    targets = {"birads": labels}
    value = with_mean(views, {}, targets, patients, breasts)
    value.backward()
    assert torch.isfinite(value) and views.grad is not None
    assert float(value.detach()) > float(plain(views.detach(), {}, targets, patients))
    assert float(with_mean(views.detach(), {}, targets, patients)) == pytest.approx(
        float(plain(views.detach(), {}, targets, patients))
    )  # no breasts given: the image term alone


@pytest.mark.parametrize("mode", [TOGETHER, MEAN])
def test_breast_modes_are_refused_without_pairs_or_with_balanced_epochs(mode: str) -> None:
    with pytest.raises(ValueError, match=f"--cases {mode}: not with --loss ce"):
        check_loss("ce", cases=mode)
    with pytest.raises(ValueError, match="class-balanced"):
        check_loss("supcon", cases=mode, balanced=True)
    check_loss("supcon", cases=mode)


def test_an_unknown_breast_mode_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=", ".join(CASE_MODES)):
        check_loss("supcon", cases="pairs")


def test_the_default_keeps_images_apart() -> None:
    assert TrainConfig().cases == APART


def test_fit_hands_the_loss_whole_breasts_with_their_classes() -> None:
    torch.manual_seed(0)
    trunk, top, _ = build_networks("efficientnet-lite0", 2, 16, {"birads": 3})
    pixels = torch.rand(12, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        maps = trunk.eval()(pixels)
    cache = maps.reshape(12, 1, *maps.shape[1:]).half()
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2], dtype=np.int64)
    breasts = breasts_of(
        tuple(_row(index // 2, "L", ("CC", "MLO")[index % 2], int(labels[index]) + 1)
              for index in range(12)),
        (1, 2, 3), "birads",
    )  # fmt: skip
    loss = make_loss("supcon", "birads", {"birads": torch.ones(3)}, 0.1, top.dim, 4, cases=MEAN)
    seen: list[tuple[list[int], list[int]]] = []

    def spying(embedding, logits, targets, patients, batch_breasts=None):  # noqa: ANN001, ANN202
        ids, classes = batch_breasts
        seen.append((ids.tolist(), classes.tolist()))
        return loss(embedding, logits, targets, patients, batch_breasts)

    fit_top(
        top, cache, {"birads": labels}, np.arange(12), spying,
        FitConfig(epochs=2, batch_size=4), torch.device("cpu"), np.arange(12) // 2,
        breasts=breasts,
    )  # fmt: skip
    assert len(seen) == 2 * 3  # the schedule's steps, never more
    for ids, classes in seen:
        for breast in set(ids):
            assert ids.count(breast) == 2  # both views of every breast in the batch
        assert classes == [int(labels[2 * breast]) for breast in ids]
