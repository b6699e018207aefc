"""`mammosearch train` as a function: data -> CV -> final model -> model directory."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session

from mammosearch.embed.weights import file_sha256
from mammosearch.evaluate.provenance import software_versions
from mammosearch.train.config import TrainConfig
from mammosearch.train.crossval import PANEL_LABELS
from mammosearch.train.dataset import load_labelled_images
from mammosearch.train.losses import check_loss
from mammosearch.train.model_dir import model_record, write_model_dir
from mammosearch.train.runner import (
    Status,
    cross_validate,
    pick_device,
    prepare,
    prepare_work_dir,
    train_final,
)
from mammosearch.train.test_views import views_for


def training_library_versions() -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for distribution in (
        "onnx",
        "onnxruntime",
        "pytorch-metric-learning",
        "efficientnet-lite-pytorch",
    ):
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[distribution] = None
    return versions


def run_training(
    session: Session,
    config: TrainConfig,
    out_dir: Path,
    command_line: str,
    name: str | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    status: Status | None = None,
    setting: dict[str, Any] | None = None,
) -> Path:
    """Train on the archive's labelled images and write `out_dir`; resumes `<out>.work/`.

    `setting`: who chose the config and why (automatic training's `TrainingSetting`), kept
    in the record's `training.setting`."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir.name}: already exists (pass --overwrite to replace it)")
    views_for(config.test_views)  # an impossible count fails before any work
    check_loss(config.loss, config.positives, config.cases, config.fit.balanced)
    started = time.perf_counter()
    device = pick_device()
    scored_only = [label for label in PANEL_LABELS if label not in config.labels]
    data = load_labelled_images(session, [*config.labels, *scored_only])
    fingerprint = data.fingerprint()
    work_dir = prepare_work_dir(out_dir, config, fingerprint)
    if status is not None:
        status("preparing", {"images": len(data), "patients": int(len(set(data.patient_ids)))})
    prepared = prepare(data, config, device, quiet=quiet, status=status)
    cv = cross_validate(prepared, config, device, work_dir, quiet=quiet, status=status)
    model = train_final(prepared, config, device, work_dir, quiet=quiet, status=status)
    training: dict[str, Any] = {
        "config": config.to_dict(),
        "command_line": command_line,
        "seed": config.seed,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "duration_s": round(time.perf_counter() - started, 1),
        "images": len(data),
        "patients": int(len(set(data.patient_ids.tolist()))),
        **({"setting": setting} if setting else {}),
    }
    record = model_record(
        name=name or out_dir.name,
        base={
            "backbone": config.base,
            "weights_sha256": file_sha256(Path(prepared.weights_path)),
            "weights_file": Path(prepared.weights_path).name,
            "trained_blocks": config.trained_blocks,
        },
        classes={label: data.classes[label] for label in config.labels},
        size_px=config.image_size_px,
        dim=model.top.dim,
        test_views=config.test_views,
        fingerprint=fingerprint,
        cross_validation=cv,
        training=training,
        software={**software_versions(), **training_library_versions()},
    )
    written = write_model_dir(out_dir, model, record, list(data.sha256s), overwrite=overwrite)
    shutil.rmtree(work_dir, ignore_errors=True)
    return written
