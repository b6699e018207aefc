"""int8 models: a space of their own, deterministic, served only after the archive's P@5 check."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mammosearch.config import Settings
from mammosearch.embed import clear_embedder_cache, load_embedder
from mammosearch.embed.quantize import (
    Int8Check,
    Int8Unavailable,
    check_path,
    quantize_int8,
    write_check,
)


def _images(count: int, seed: int = 5) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (320, 256), dtype=np.uint8), "L") for _ in range(count)
    ]


def _check(kept: bool) -> Int8Check:
    return Int8Check(
        fp32_p5=0.40,
        int8_p5=0.40 if kept else 0.37,
        evaluated_images=10,
        calibration_images=4,
        fp32_images_per_s=10.0,
        int8_images_per_s=20.0,
        cpu="test",
        int8_dot_product=True,
    )


def test_int8_model_is_its_own_space_and_served_only_after_a_passing_check(
    onnx_dir: Path,
) -> None:
    fp32 = load_embedder("efficientnet-lite0", runtime="onnx", onnx_dir=onnx_dir)
    with pytest.raises(Int8Unavailable, match="mammosearch models quantize"):
        load_embedder("efficientnet-lite0:int8", onnx_dir=onnx_dir)

    path = quantize_int8(fp32.path, _images(4), fp32.input_size_px)
    first_bytes = path.read_bytes()
    assert quantize_int8(fp32.path, _images(4), fp32.input_size_px) == path
    assert path.read_bytes() == first_bytes, "same calibration, same int8 model"
    assert sorted(p.name for p in onnx_dir.iterdir()) == sorted([fp32.path.name, path.name])

    with pytest.raises(Int8Unavailable, match="quality check is missing"):
        load_embedder("efficientnet-lite0:int8", onnx_dir=onnx_dir)
    write_check(path, _check(kept=False))
    with pytest.raises(Int8Unavailable, match="moved patient-excluded P@5"):
        load_embedder("efficientnet-lite0:int8", onnx_dir=onnx_dir)
    write_check(path, _check(kept=True))
    assert json.loads(check_path(path).read_text())["kept"] is True
    int8 = load_embedder("efficientnet-lite0:int8", onnx_dir=onnx_dir)

    assert int8.identity.backbone == "efficientnet-lite0:int8"
    assert int8.identity.weights_sha256 != fp32.identity.weights_sha256
    assert int8.dim == fp32.dim
    queries = _images(3, seed=9)
    a, b = fp32.embed_pil(queries), int8.embed_pil(queries)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.9, cosine


def test_int8_is_refused_for_a_trained_model_name(onnx_dir: Path, tmp_path: Path) -> None:
    with pytest.raises((ValueError, Int8Unavailable)):
        load_embedder(str(tmp_path / "no-such-model") + ":int8", onnx_dir=onnx_dir)


def test_quantize_on_the_dev_archive_keeps_p5_within_a_hundredth(
    dev_archive: Settings, tmp_path: Path
) -> None:
    """Calibrated on archive images, checked patient-excluded on every labelled image."""
    from mammosearch.quantize_archive import quantize_and_check

    clear_embedder_cache()
    settings = replace(dev_archive, data_dir=tmp_path)
    try:
        path, check = quantize_and_check(settings, calibration_images=32, check_images=2000)
        assert check.evaluated_images > 400
        assert abs(check.change) < 0.01, check.summary()
        assert check.kept
        served = load_embedder(
            "efficientnet-lite0:int8", onnx_dir=tmp_path / "models" / "onnx"
        )
        assert served.path == path
    finally:
        clear_embedder_cache()
