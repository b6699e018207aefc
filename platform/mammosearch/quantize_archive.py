"""`mammosearch models quantize`: an int8 model calibrated and checked on this archive."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mammosearch.config import Settings
from mammosearch.db.session import session_scope
from mammosearch.embed.loader import load_embedder_from_settings, registry_dir, trained_model_for
from mammosearch.embed.onnx_runtime import OnnxEmbedder
from mammosearch.embed.quantize import (
    Int8Check,
    Int8Unavailable,
    check_int8,
    quantize_int8,
    split_int8,
    write_check,
)
from mammosearch.train.dataset import load_labelled_images

SAMPLE_SEED = 0


def _decoded(paths: list[Path]) -> list[Image.Image | None]:
    """Stored files -> grayscale images; None for one that cannot be read (left out)."""
    images: list[Image.Image | None] = []
    for path in paths:
        try:
            with Image.open(path) as opened:
                images.append(opened.convert("L"))
        except OSError:
            images.append(None)
    return images


def quantize_and_check(
    settings: Settings, calibration_images: int, check_images: int
) -> tuple[Path, Int8Check]:
    """Quantize the configured backbone's ONNX model, score it against fp32, record both."""
    base, _ = split_int8(settings.backbone)
    if trained_model_for(base, registry_dir(settings)) is not None:
        raise Int8Unavailable(
            f"{base}: int8 is built for registry backbones; this is a trained model"
        )
    fp32 = load_embedder_from_settings(settings.with_overrides(backbone=base), runtime="onnx")
    if not isinstance(fp32, OnnxEmbedder):
        raise Int8Unavailable(f"{base}: no exported ONNX model to quantize")
    with session_scope(settings.database_url) as session:
        data = load_labelled_images(session, ["birads"])
    rng = np.random.default_rng(SAMPLE_SEED)
    chosen = np.sort(rng.permutation(len(data))[:check_images])
    decoded = _decoded([data.paths[i] for i in chosen])
    labels = data.label_values("birads")
    usable = [
        (image, labels[i], data.patient_ids[i])
        for image, i in zip(decoded, chosen, strict=True)
        if image is not None
    ]
    if len(usable) < 2:
        raise Int8Unavailable("fewer than 2 readable BIRADS-labelled images: nothing to check on")
    images = [image for image, _, _ in usable]
    calibration = [images[i] for i in rng.permutation(len(images))[:calibration_images]]
    int8_path = quantize_int8(fp32.path, calibration, fp32.input_size_px)
    int8 = OnnxEmbedder(int8_path, batch_size=settings.embed_batch_size)
    check = check_int8(
        fp32,
        int8,
        images,
        [label for _, label, _ in usable],
        [patient for _, _, patient in usable],
        len(calibration),
    )
    write_check(int8_path, check)
    return int8_path, check
