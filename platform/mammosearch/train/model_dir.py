"""Write a model directory in one step: ONNX model, model.json, training image hashes.

Everything is written into a hidden staging directory beside the target and renamed into
place at the end, so an interrupted run (Ctrl-C included) never leaves a half-written
MODEL_DIR; an existing MODEL_DIR is replaced only with `overwrite`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from mammosearch.embed.preprocess import IMAGENET_MEAN, IMAGENET_STD, PREPROCESSING_VERSION
from mammosearch.embed.trained import (
    MODEL_FILE,
    RECORD_FILE,
    RECORD_FORMAT,
    TRAINING_IMAGES_FILE,
)
from mammosearch.embed.weights import file_sha256
from mammosearch.train.network import EmbeddingModel
from mammosearch.train.test_views import views_for

OPSET_VERSION = 17
PREPROCESSING_TEXT = (
    "grayscale (16-bit scaled by its bit depth's full range to 8-bit) -> resize to "
    "image_size_px square, bilinear -> [0, 1] -> 3 identical channels -> ImageNet mean/std"
)


def export_onnx_model(model: EmbeddingModel, size_px: int, path: Path) -> None:
    example = torch.zeros((1, 3, size_px, size_px))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.cpu().eval(),
            (example,),
            str(path),
            input_names=["images"],
            output_names=["vectors"],
            dynamic_axes={"images": {0: "n"}, "vectors": {0: "n"}},
            opset_version=OPSET_VERSION,
            dynamo=False,
        )


def model_record(
    *,
    name: str,
    base: dict[str, Any],
    classes: dict[str, tuple[Any, ...]],
    size_px: int,
    dim: int,
    test_views: int,
    fingerprint: dict[str, Any],
    cross_validation: dict[str, Any],
    training: dict[str, Any],
    software: dict[str, Any],
) -> dict[str, Any]:
    return {
        "format": RECORD_FORMAT,
        "name": name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "base": base,
        "labels": {label: [str(c) for c in values] for label, values in classes.items()},
        "input": {
            "image_size_px": size_px,
            "preprocessing": PREPROCESSING_TEXT,
            "preprocessing_version": PREPROCESSING_VERSION,
            "mean": IMAGENET_MEAN.tolist(),
            "std": IMAGENET_STD.tolist(),
        },
        "output": {
            "dim": dim,
            "l2_normalised": True,
            "metric": "cosine",
            "test_views": [view.to_dict() for view in views_for(test_views)],
        },
        "training_images": fingerprint,
        "cross_validation": cross_validation,
        "training": training,
        "software": software,
        "model_file": MODEL_FILE,
    }


def write_model_dir(
    out_dir: Path,
    model: EmbeddingModel,
    record: dict[str, Any],
    training_hashes: list[str],
    overwrite: bool = False,
) -> Path:
    """Export and record into a staging folder, then rename it to `out_dir`."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir.name}: already exists (pass --overwrite to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.staging-"))
    staging.chmod(0o755)  # mkdtemp makes it owner-only; a model is read by every service
    try:
        export_onnx_model(model, int(record["input"]["image_size_px"]), staging / MODEL_FILE)
        record = {**record, "model_sha256": file_sha256(staging / MODEL_FILE)}
        (staging / TRAINING_IMAGES_FILE).write_text("\n".join(sorted(training_hashes)) + "\n")
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
        for sidecar in staging.glob("*.sha256.json"):
            sidecar.unlink()
        if out_dir.exists():
            retired = out_dir.with_name(f".{out_dir.name}.retired")
            shutil.rmtree(retired, ignore_errors=True)
            out_dir.rename(retired)
            staging.rename(out_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
