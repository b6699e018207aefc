"""`mammosearch models quantize`: a reduced-precision variant checked on this archive."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mammosearch.config import Settings
from mammosearch.db.session import session_scope
from mammosearch.embed.embedder import Embedder
from mammosearch.embed.loader import (
    build_torch_embedder,
    load_embedder_from_settings,
    registry_dir,
    resolve_backbone_name,
    trained_model_for,
)
from mammosearch.embed.onnx_runtime import OnnxEmbedder
from mammosearch.embed.precision_names import split_precision
from mammosearch.embed.preprocess import resized_gray
from mammosearch.embed.quantize import (
    PrecisionCheck,
    PrecisionUnavailable,
    bf16_embedder,
    check_variant,
    quantize_int8,
    write_check,
)
from mammosearch.embed.serving_record import serving_backbone
from mammosearch.ingest.storage import open_upright
from mammosearch.train.dataset import load_labelled_images

SAMPLE_SEED = 0


def _decoded(paths: list[Path], size_px: int) -> list[Image.Image | None]:
    """Stored files -> network-size grayscale images (what `preprocess` would make of them,
    so 2,000 full-size mammograms do not sit in memory); None for one that cannot be read."""
    images: list[Image.Image | None] = []
    for path in paths:
        try:
            images.append(resized_gray(open_upright(path), size_px))
        except OSError:
            images.append(None)
    return images


def quantize_and_check(
    settings: Settings,
    calibration_images: int,
    check_images: int,
    precision: str = "int8",
    progress: bool = False,
    score_anyway: bool = False,
) -> tuple[Path, PrecisionCheck]:
    """Build the configured backbone's variant, time it against fp32 (ONNX) and, if faster
    here (or `score_anyway`), score both; record the verdict.

    Returns the int8 model file (int8) or the verdict file (bf16: nothing else to store).
    """
    base, _ = split_precision(serving_backbone(settings.backbone, settings.data_dir))
    if trained_model_for(base, registry_dir(settings)) is not None:
        raise PrecisionUnavailable(f"{base}: variants are built for registry backbones only")
    fp32 = load_embedder_from_settings(settings.with_overrides(backbone=base), runtime="onnx")
    if not isinstance(fp32, OnnxEmbedder):
        raise PrecisionUnavailable(f"{base}: no exported ONNX model to compare with")
    with session_scope(settings.database_url) as session:
        data = load_labelled_images(session, ["birads"])
    rng = np.random.default_rng(SAMPLE_SEED)
    chosen = np.sort(rng.permutation(len(data))[:check_images])
    decoded = _decoded([data.paths[i] for i in chosen], fp32.input_size_px)
    labels = data.label_values("birads")
    usable = [
        (image, labels[i], data.patient_ids[i])
        for image, i in zip(decoded, chosen, strict=True)
        if image is not None
    ]
    if len(usable) < 2:
        raise PrecisionUnavailable("fewer than 2 readable BIRADS-labelled images to check on")
    images = [image for image, _, _ in usable]
    calibration = [images[i] for i in rng.permutation(len(images))[:calibration_images]]
    variant: Embedder
    if precision == "int8":
        variant_file = quantize_int8(fp32.path, calibration, fp32.input_size_px)
        variant = OnnxEmbedder(
            variant_file, batch_size=settings.embed_batch_size, engine=settings.onnx_engine
        )
    else:
        name, _reason = resolve_backbone_name(base, settings.weights_path)
        torch_fp32 = build_torch_embedder(
            name, settings.weights_path, settings.allow_random_weights,
            batch_size=settings.embed_batch_size,
        )  # fmt: skip
        variant = bf16_embedder(torch_fp32)
    check = check_variant(
        precision,
        fp32,
        variant,
        images,
        [label for _, label, _ in usable],
        [patient for _, _, patient in usable],
        len(calibration) if precision == "int8" else 0,
        progress=progress,
        score_anyway=score_anyway,
    )
    verdict = write_check(fp32.path, check)
    return (variant_file if precision == "int8" else verdict), check
