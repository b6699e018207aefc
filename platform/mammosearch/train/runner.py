"""Cross-validate, then train the final model on every labelled image, then export.

Everything resumable lives in `<MODEL_DIR>.work/` (per-epoch checkpoints, finished folds);
the model directory itself appears only when complete, by one rename.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mammosearch.durable.atomic_files import atomic_write_bytes
from mammosearch.ingest.storage import open_upright
from mammosearch.train.breasts import APART, breasts_of
from mammosearch.train.config import TrainConfig
from mammosearch.train.crossval import (
    ARCHIVE_PROTOCOL,
    PANEL_LABELS,
    CaseFoldFigures,
    FoldFigures,
)
from mammosearch.train.dataset import LabelledImages, load_pixels
from mammosearch.train.fit import embed_cached, fit_top, patient_excluded_precision
from mammosearch.train.folds import patient_folds
from mammosearch.train.losses import class_weights, make_loss
from mammosearch.train.network import EmbeddingModel, Top, TopEnsemble, Trunk, build_networks
from mammosearch.train.trunk_cache import fixed_view_count, trunk_views

log = logging.getLogger(__name__)

BASE_SPACE_BACKBONE = "efficientnet-lite0"
PROGRESS_TEST_VIEWS = 2
"""Views averaged for the progress bar's per-epoch validation P@5 (cheap, close to served)."""
Status = Callable[[str, dict[str, Any]], None]
"""(stage, details) -> None: how a Celery task or the web page follows the run."""


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _write_json(path: Path, document: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(document, indent=2, default=str).encode())


@dataclass
class Prepared:
    """What every fold shares: the pixels' trunk views and the base space's vectors."""

    data: LabelledImages
    cache: torch.Tensor
    trunk: Trunk
    base_vectors: np.ndarray
    weights_path: str


def base_space_vectors(data: LabelledImages) -> np.ndarray:
    """The product's base space (ImageNet efficientnet-lite0, 224 px) for the same images."""
    from mammosearch.embed.loader import load_embedder

    embedder = load_embedder(BASE_SPACE_BACKBONE, runtime="torch")
    vectors = []
    for start in range(0, len(data), 32):
        images = []
        for path in data.paths[start : start + 32]:
            images.append(open_upright(path))
        vectors.append(embedder.embed_pil(images))
    return np.concatenate(vectors)


def prepare(
    data: LabelledImages,
    config: TrainConfig,
    device: torch.device,
    quiet: bool = False,
    status: Status | None = None,
) -> Prepared:
    """Load pixels, cache the trunk's views, embed the base space.

    Caching is the first long stage (minutes on a CPU), so `status` hears how many images
    are cached, at most every few seconds: a banner must not sit at "preparing".
    """
    n_classes = {label: len(data.classes[label]) for label in config.labels}
    trunk, _top, weights_path = build_networks(
        config.base, config.trained_blocks, config.dim, n_classes
    )
    pixels = load_pixels(data.paths, data.names, config.image_size_px)
    cached = _CachedCount(len(data), status)
    with tqdm(
        total=len(data), desc=f"trunk views x{config.n_views}", unit="img", disable=quiet
    ) as bar:

        def advance(images: int) -> None:
            bar.update(images)
            cached.add(images)

        cache = trunk_views(
            trunk, pixels, config.n_views, config.test_views, config.seed, device, advance
        )
    if status is not None:
        status("embedding the base space", {"images": len(data)})
    return Prepared(data, cache, trunk, base_space_vectors(data), weights_path)


class _CachedCount:
    """Reports "caching views" progress to a status callback, throttled to one per 5 s."""

    def __init__(self, total: int, status: Status | None, every_s: float = 5.0) -> None:
        self.total, self.status, self.every_s = total, status, every_s
        self.done, self.reported_at = 0, float("-inf")

    def add(self, images: int) -> None:
        self.done += images
        now = time.monotonic()
        if self.status is None or (
            now - self.reported_at < self.every_s and self.done < self.total
        ):
            return
        self.reported_at = now
        self.status("caching views", {"done": self.done, "total": self.total})


def _fresh_top(config: TrainConfig, data: LabelledImages) -> Top:
    n_classes = {label: len(data.classes[label]) for label in config.labels}
    _trunk, top, _weights = build_networks(
        config.base, config.trained_blocks, config.dim, n_classes, config.pooling
    )
    return top


def _member_checkpoint(checkpoint: Path, member: int) -> Path:
    """Member 0 keeps the plain name, so a run without an ensemble resumes as before."""
    if member == 0:
        return checkpoint
    return checkpoint.with_name(f"{checkpoint.stem}-member{member + 1}{checkpoint.suffix}")


def train_top(
    prepared: Prepared,
    config: TrainConfig,
    positions: np.ndarray,
    device: torch.device,
    checkpoint: Path | None,
    description: str,
    validation: np.ndarray | None = None,
    quiet: bool = False,
    status: Status | None = None,
) -> Top | TopEnsemble:
    """One top, or `config.ensemble` tops from consecutive seeds, trained on `positions`."""
    members = [
        _train_member(
            prepared,
            config.with_fit(seed=config.seed + member),
            positions,
            device,
            None if checkpoint is None else _member_checkpoint(checkpoint, member),
            description
            if config.ensemble == 1
            else f"{description} member {member + 1}/{config.ensemble}",
            validation,
            quiet,
            status,
        )
        for member in range(config.ensemble)
    ]
    return members[0] if len(members) == 1 else TopEnsemble(members).eval()


def _train_member(
    prepared: Prepared,
    config: TrainConfig,
    positions: np.ndarray,
    device: torch.device,
    checkpoint: Path | None,
    description: str,
    validation: np.ndarray | None,
    quiet: bool,
    status: Status | None,
) -> Top:
    data = prepared.data
    targets = {label: data.targets[label] for label in config.labels}
    torch.manual_seed(config.seed)
    top = _fresh_top(config, data)
    weights = {
        label: class_weights(values[positions], len(data.classes[label])).to(device)
        for label, values in targets.items()
    }
    loss_fn = make_loss(
        config.loss,
        config.labels[0],
        weights,
        config.temperature,
        top.dim,
        config.fit.batch_size,
        config.positives,
        config.cases,
    )
    breasts = None
    if config.cases != APART:
        primary = config.labels[0]
        breasts = breasts_of(data.case_rows, data.classes[primary], primary)
    bar = tqdm(total=config.fit.epochs, desc=description, unit="epoch", disable=quiet)

    def on_epoch(epoch: int, loss: float, trained: Top) -> None:
        details: dict[str, Any] = {"epoch": epoch, "epochs": config.fit.epochs, "loss": loss}
        if validation is not None:
            # plain + mirror views only: every epoch pays for it, the fold's figure uses all
            views = min(config.test_views, PROGRESS_TEST_VIEWS)
            vectors = embed_cached(trained, prepared.cache, validation, views, device)
            details["val_p@5"] = patient_excluded_precision(
                vectors, targets[config.labels[0]][validation], data.patient_ids[validation]
            )
        bar.n = epoch
        bar.set_postfix({k: f"{v:.3f}" for k, v in details.items() if isinstance(v, float)})
        bar.refresh()
        if status is not None:
            status(description, details)

    try:
        return fit_top(
            top,
            prepared.cache,
            targets,
            positions,
            loss_fn,
            config.fit,
            device,
            data.patient_ids,
            checkpoint,
            on_epoch,
            breasts,
        )
    finally:
        bar.close()


def cross_validate(
    prepared: Prepared,
    config: TrainConfig,
    device: torch.device,
    work_dir: Path | None = None,
    quiet: bool = False,
    status: Status | None = None,
    compare_test_views: tuple[int, ...] = (),
    first_folds: int | None = None,
    epoch_validation: bool = True,
) -> dict[str, Any]:
    """Patient-grouped k-fold CV; out-of-fold figures of the trained and the base space.

    The folds are stratified by BIRADS where the data holds it, whichever label is trained
    (else by the trained label), so models of different labels share their folds. Every
    other label the data holds is scored too, same folds and rule (`other_labels`): how a
    space trained for one label retrieves and votes for another.

    Beside them, `trained_archive` / `base_archive`: the same unseen queries against each
    fold's whole archive (crossval's archive protocol: what a site searching the archive
    that trained its model sees). `compare_test_views` also scores the trained space
    averaged over other numbers of the fixed test views, up to the cached ones (a sweep's
    comparison, free: they are cached). `first_folds` stops after that many folds (a
    partial run's pooled figures, `folds_scored`); `epoch_validation` False skips the
    progress bar's per-epoch validation P@5 (about a sixth of an epoch's cost).
    """
    data = prepared.data
    primary = config.labels[0]
    labels = data.label_values(primary)
    folds_by = PANEL_LABELS[0] if PANEL_LABELS[0] in data.targets else primary
    folds = patient_folds(data.targets[folds_by], data.patient_ids, config.folds, config.seed)
    classes = list(data.classes[primary])
    others = {
        name: (data.label_values(name), FoldFigures(list(data.classes[name])),
               FoldFigures(list(data.classes[name])), CaseFoldFigures(name),
               CaseFoldFigures(name))
        for name in data.classes
        if name != primary
    }  # fmt: skip
    trained, base = FoldFigures(classes), FoldFigures(classes)
    trained_archive, base_archive = FoldFigures(classes), FoldFigures(classes)
    trained_case, base_case = CaseFoldFigures(primary), CaseFoldFigures(primary)
    cached_fixed = fixed_view_count(config.test_views)
    other_views = {n: FoldFigures(classes) for n in compare_test_views if n <= cached_fixed}
    per_fold = []
    for number, (train_positions, valid_positions) in enumerate(folds, start=1):
        if first_folds is not None and number > first_folds:
            break
        overlap = set(data.patient_ids[train_positions]) & set(data.patient_ids[valid_positions])
        assert not overlap, f"fold {number}: patients {sorted(overlap)[:5]} on both sides"
        done_file = work_dir / f"fold-{number}.npz" if work_dir is not None else None
        done = _load_fold(done_file)
        if done is not None:
            vectors, training_vectors = done
        else:
            top = train_top(
                prepared,
                config,
                train_positions,
                device,
                work_dir / f"fold-{number}.pt" if work_dir is not None else None,
                f"fold {number}/{len(folds)}",
                validation=valid_positions if epoch_validation else None,
                quiet=quiet,
                status=status,
            )
            vectors = embed_cached(top, prepared.cache, valid_positions, config.test_views, device)
            training_vectors = embed_cached(
                top, prepared.cache, train_positions, config.test_views, device
            )
            if work_dir is not None and done_file is not None:
                buffer = io.BytesIO()
                np.savez(buffer, vectors=vectors, training_vectors=training_vectors)
                atomic_write_bytes(done_file, buffer.getvalue())
                for member in range(config.ensemble):
                    _member_checkpoint(work_dir / f"fold-{number}.pt", member).unlink(
                        missing_ok=True
                    )
        fold_labels = [labels[i] for i in valid_positions]
        fold_patients = data.patient_ids[valid_positions].tolist()
        if done is None:
            for count, figures in other_views.items():
                views_vectors = embed_cached(top, prepared.cache, valid_positions, count, device)
                figures.add_fold(views_vectors, fold_labels, fold_patients, primary)
        fold_case_rows = [data.case_rows[i] for i in valid_positions]
        if data.case_rows:
            trained_case.add_fold(vectors, fold_case_rows)
            base_case.add_fold(prepared.base_vectors[valid_positions], fold_case_rows)
        for name, (values, other, other_base, other_case, other_base_case) in others.items():
            other_labels = [values[i] for i in valid_positions]
            other.add_fold(vectors, other_labels, fold_patients, name)
            other_base.add_fold(
                prepared.base_vectors[valid_positions], other_labels, fold_patients, name
            )
            if data.case_rows:
                other_case.add_fold(vectors, fold_case_rows)
                other_base_case.add_fold(prepared.base_vectors[valid_positions], fold_case_rows)
        archive = np.concatenate([valid_positions, train_positions])
        archive_labels = [labels[i] for i in archive]
        archive_patients = data.patient_ids[archive].tolist()
        new_patients = np.arange(archive.size) < valid_positions.size
        per_fold.append(
            {
                "fold": number,
                "train_images": int(train_positions.size),
                "validation_images": int(valid_positions.size),
                "validation_patients": int(np.unique(fold_patients).size),
                "trained": trained.add_fold(vectors, fold_labels, fold_patients, primary),
                "base": base.add_fold(
                    prepared.base_vectors[valid_positions], fold_labels, fold_patients, primary
                ),
                "trained_archive": trained_archive.add_fold(
                    np.concatenate([vectors, training_vectors]),
                    archive_labels,
                    archive_patients,
                    primary,
                    new_patients,
                ),
                "base_archive": base_archive.add_fold(
                    prepared.base_vectors[archive],
                    archive_labels,
                    archive_patients,
                    primary,
                    new_patients,
                ),
            }
        )
    return {
        "label": primary,
        "protocol": "patient-excluded, within each fold's unseen patients, cosine",
        "folds": config.folds,
        "folds_scored": len(per_fold),
        "trained": trained.summary(),
        "base": {"space": f"{BASE_SPACE_BACKBONE} ImageNet (224 px)", **base.summary()},
        "archive_protocol": ARCHIVE_PROTOCOL,
        "trained_archive": trained_archive.summary(),
        "base_archive": base_archive.summary(),
        "case_protocol": "each fold's unseen patients' cases (one breast of one study) "
        "against the fold's other cases, patient-excluded, cosine, similarity order",
        "trained_case": trained_case.summary(),
        "base_case": base_case.summary(),
        "per_fold": per_fold,
        "other_labels": {
            name: {
                "trained": other.summary(),
                "base": other_base.summary(),
                "trained_case": other_case.summary(),
                "base_case": other_base_case.summary(),
            }
            for name, (_values, other, other_base, other_case, other_base_case) in others.items()
        },
        **{
            f"trained_test_views_{count}": figures.summary()
            for count, figures in other_views.items()
            if figures.queries
        },
    }


def _load_fold(done_file: Path | None) -> tuple[np.ndarray, np.ndarray] | None:
    """A finished fold's validation and training vectors; None if it must be (re)trained.

    A fold file without the training vectors predates the archive protocol: trained again.
    """
    if done_file is None or not done_file.is_file():
        return None
    with np.load(done_file) as saved:
        if "training_vectors" not in saved:
            return None
        return saved["vectors"], saved["training_vectors"]


def train_final(
    prepared: Prepared,
    config: TrainConfig,
    device: torch.device,
    work_dir: Path | None = None,
    quiet: bool = False,
    status: Status | None = None,
) -> EmbeddingModel:
    """The served model: trained on every labelled image, trunk + top, over the test views."""
    everyone = np.arange(len(prepared.data))
    top = train_top(
        prepared,
        config,
        everyone,
        device,
        work_dir / "final.pt" if work_dir is not None else None,
        "final model",
        quiet=quiet,
        status=status,
    )
    return EmbeddingModel(prepared.trunk, top.cpu(), config.test_views, config.image_size_px).eval()


def prepare_work_dir(out_dir: Path, config: TrainConfig, fingerprint: dict[str, Any]) -> Path:
    """`<out>.work/`, reused only when it holds the same config and the same images."""
    work_dir = out_dir.with_name(out_dir.name + ".work")
    identity = {"config": config.fingerprint(), "images": fingerprint}
    marker = work_dir / "run.json"
    if work_dir.is_dir():
        try:
            if json.loads(marker.read_text()) == identity:
                log.info("resuming the interrupted run in %s", work_dir)
                return work_dir
        except (OSError, ValueError):
            pass
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    _write_json(marker, identity)
    return work_dir


def elapsed_since(started: float) -> float:
    return round(time.perf_counter() - started, 1)
