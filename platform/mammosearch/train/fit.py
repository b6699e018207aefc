"""Train the top on cached trunk views for one split; embed images with it; checkpoint."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammosearch.durable.atomic_files import atomic_write_bytes
from mammosearch.train.breasts import Breasts, breast_batches
from mammosearch.train.losses import LossFn
from mammosearch.train.network import Top, TopEnsemble


@dataclass(frozen=True)
class FitConfig:
    """Everything that shapes one training run; part of the model's record."""

    epochs: int = 15
    batch_size: int = 48
    lr: float = 1e-3
    backbone_lr: float = 1e-3
    weight_decay: float = 1e-4
    balanced: bool = False  # draw each epoch's images class-balanced (with replacement)
    averaged_epochs: int = 0  # weights averaged over the last N epochs (0: the last epoch's)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EpochCallback = Callable[[int, float, Top], None]


def _maps(cached: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Cached float16 trunk maps -> float32 on `device`, channels-last (faster on CPU)."""
    return cached.float().to(device).contiguous(memory_format=torch.channels_last)


def _save_atomically(state: dict[str, Any], path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def fit_top(
    top: Top,
    cache: torch.Tensor,
    targets: dict[str, np.ndarray],
    positions: np.ndarray,
    loss_fn: LossFn,
    config: FitConfig,
    device: torch.device,
    patient_ids: np.ndarray,
    checkpoint: Path | None = None,
    on_epoch: EpochCallback | None = None,
    breasts: Breasts | None = None,
) -> Top:
    """Train `top` on the cached views of `positions`; resumes from `checkpoint` if present.

    `patient_ids` (one per cached image) let the loss tell one patient's pairs apart.
    `breasts` (train/breasts.py, per cached image) make every batch hold whole breasts and
    hand the loss each image's breast and its class.
    """
    top = top.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's overloads lack (device, memory_format)
    head_parameters = [*top.projection.parameters(), *top.classifiers.parameters()]
    head_ids = {id(p) for p in head_parameters}
    body_parameters = [p for p in top.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.AdamW(
        [
            {"params": body_parameters, "lr": config.backbone_lr},
            {"params": head_parameters, "lr": config.lr},
        ],
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = max(1, int(np.ceil(positions.size / config.batch_size)))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[config.backbone_lr, config.lr],
        total_steps=config.epochs * steps_per_epoch,
        pct_start=0.15,
    )
    start_epoch = 0
    generator = np.random.default_rng(config.seed)
    averaged = (
        torch.optim.swa_utils.AveragedModel(top, use_buffers=True)
        if config.averaged_epochs
        else None
    )
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        top.load_state_dict(state["top"])
        if averaged is not None:
            averaged.load_state_dict(state["averaged"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.bit_generator.state = state["generator"]
        torch.set_rng_state(state["torch_rng"])
        start_epoch = state["epoch"]
    label_targets = {label: torch.from_numpy(values) for label, values in targets.items()}
    patients = torch.from_numpy(np.asarray(patient_ids, dtype=np.int64))
    breast_ids = breast_targets = None
    if breasts is not None:
        breast_ids = torch.from_numpy(breasts.ids)
        breast_targets = torch.from_numpy(breasts.targets)
    primary_targets = next(iter(targets.values()))
    n_views = cache.shape[1]
    for epoch in range(start_epoch, config.epochs):
        top.train()
        if breasts is None:
            order = _epoch_order(generator, positions, primary_targets, config.balanced)
            batches = [
                order[start : start + config.batch_size]
                for start in range(0, order.size, config.batch_size)
            ]
        else:
            batches = breast_batches(generator, positions, breasts.ids, steps_per_epoch)
        losses = []
        for batch in batches:
            if batch.size < 2:
                continue
            views = generator.integers(0, n_views, size=batch.size)
            maps = _maps(cache[torch.from_numpy(batch), torch.from_numpy(views)], device)
            embedding = top.embed(maps)
            batch_targets = {
                label: values[torch.from_numpy(batch)].to(device)
                for label, values in label_targets.items()
            }
            batch_patients = patients[torch.from_numpy(batch)].to(device)
            batch_breasts = None
            if breast_ids is not None and breast_targets is not None:
                index = torch.from_numpy(batch)
                batch_breasts = (breast_ids[index].to(device), breast_targets[index].to(device))
            loss = loss_fn(
                embedding, top.logits(embedding), batch_targets, batch_patients, batch_breasts
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        if averaged is not None and epoch >= config.epochs - config.averaged_epochs:
            averaged.update_parameters(top)
        if checkpoint is not None:
            _save_atomically(
                {
                    "top": top.state_dict(),
                    "averaged": None if averaged is None else averaged.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "generator": copy.deepcopy(generator.bit_generator.state),
                    "torch_rng": torch.get_rng_state(),
                    "epoch": epoch + 1,
                },
                checkpoint,
            )
        if on_epoch is not None:
            on_epoch(epoch + 1, float(np.mean(losses)) if losses else float("nan"), top)
    if averaged is not None:
        mean_top: Top = averaged.module  # type: ignore[assignment]  # AveragedModel keeps a Module
        return mean_top.eval()  # the running mean of the last epochs' weights
    return top.eval()


def _epoch_order(
    generator: np.random.Generator, positions: np.ndarray, targets: np.ndarray, balanced: bool
) -> np.ndarray:
    """This epoch's images: shuffled, or drawn so that every class is equally likely."""
    if not balanced:
        return generator.permutation(positions)
    classes = targets[positions]
    counts = np.bincount(classes[classes >= 0])
    weights = np.where(classes >= 0, 1.0 / np.maximum(counts[np.maximum(classes, 0)], 1), 0.0)
    return generator.choice(positions, size=positions.size, p=weights / weights.sum())


def embed_cached(
    top: Top | TopEnsemble,
    cache: torch.Tensor,
    positions: np.ndarray,
    test_views: int,
    device: torch.device,
) -> np.ndarray:
    """Embeddings (n, dim) of `positions`, averaged over the first `test_views` cached views.

    Those are the fixed test-time views, so this is what the served model computes.
    """
    top = top.eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, positions.size, 64):
            batch = torch.from_numpy(positions[start : start + 64])
            embedding = torch.stack(
                [top.embed(_maps(cache[batch, view], device)) for view in range(test_views)]
            ).sum(dim=0)
            chunks.append(torch.nn.functional.normalize(embedding, dim=1).cpu().numpy())
    return np.concatenate(chunks).astype(np.float32) if chunks else np.empty((0, top.dim))


def patient_excluded_precision(
    vectors: np.ndarray, targets: np.ndarray, patient_ids: np.ndarray, k: int = 5
) -> float:
    """Mean same-class precision@k, candidates from other patients only (progress bar figure)."""
    similarity = vectors @ vectors.T
    similarity[patient_ids[:, None] == patient_ids[None, :]] = -np.inf
    labelled = targets >= 0
    similarity[:, ~labelled] = -np.inf
    depth = min(k, int(labelled.sum()) - 1)
    if depth < 1:
        return float("nan")
    top = np.argsort(-similarity, axis=1)[:, :depth]
    hits = (targets[top] == targets[:, None]) & np.isfinite(
        np.take_along_axis(similarity, top, axis=1)
    )
    return float(hits[labelled].sum(axis=1).mean() / k)
