"""int8 / bf16 variants: spaces of their own, deterministic, served only after a passing check."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mammosearch.config import Settings
from mammosearch.embed import clear_embedder_cache, load_embedder
from mammosearch.embed.precision_names import split_precision
from mammosearch.embed.quantize import (
    PrecisionCheck,
    PrecisionUnavailable,
    check_path,
    check_variant,
    quantize_int8,
    write_check,
)


def _images(count: int, seed: int = 5) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (320, 256), dtype=np.uint8), "L") for _ in range(count)
    ]


def _check(precision: str, p5_change: float = 0.0, speedup: float = 2.0) -> PrecisionCheck:
    return PrecisionCheck(
        precision=precision,
        fp32_p5=0.40,
        variant_p5=0.40 + p5_change,
        evaluated_images=10,
        calibration_images=4,
        fp32_images_per_s=10.0,
        variant_images_per_s=10.0 * speedup,
        cpu="test",
        native_support=True,
    )


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def test_variant_names() -> None:
    assert split_precision("efficientnet-lite0:int8") == ("efficientnet-lite0", "int8")
    assert split_precision("auto:bf16") == ("auto", "bf16")
    assert split_precision("efficientnet-lite0") == ("efficientnet-lite0", None)
    assert split_precision("/models/a:b") == ("/models/a:b", None)


def test_a_failed_or_slower_check_is_not_kept() -> None:
    assert _check("int8").kept
    assert not _check("int8", p5_change=-0.03).kept
    assert not _check("int8", p5_change=0.01).kept
    assert not _check("bf16", speedup=0.8).kept


def test_int8_model_is_its_own_space_and_served_only_after_a_passing_check(
    onnx_dir: Path,
) -> None:
    fp32 = load_embedder("efficientnet-lite0", runtime="onnx", onnx_dir=onnx_dir)
    with pytest.raises(PrecisionUnavailable, match="mammosearch models quantize"):
        load_embedder("efficientnet-lite0:int8", onnx_dir=onnx_dir)

    path = quantize_int8(fp32.path, _images(4), fp32.input_size_px)
    first_bytes = path.read_bytes()
    assert quantize_int8(fp32.path, _images(4), fp32.input_size_px) == path
    assert path.read_bytes() == first_bytes, "same calibration, same int8 model"
    assert sorted(p.name for p in onnx_dir.iterdir()) == sorted([fp32.path.name, path.name])

    with pytest.raises(PrecisionUnavailable, match="quality check .* is missing"):
        load_embedder("efficientnet-lite0:int8", onnx_dir=onnx_dir)
    write_check(fp32.path, _check("int8", p5_change=-0.02))
    with pytest.raises(PrecisionUnavailable, match="not kept by this archive's check"):
        load_embedder("efficientnet-lite0:int8", onnx_dir=onnx_dir)
    write_check(fp32.path, _check("int8"))
    assert json.loads(check_path(fp32.path, "int8").read_text())["kept"] is True
    int8 = load_embedder("efficientnet-lite0:int8", onnx_dir=onnx_dir)

    assert int8.identity.backbone == "efficientnet-lite0:int8"
    assert int8.identity.weights_sha256 != fp32.identity.weights_sha256
    assert int8.dim == fp32.dim
    queries = _images(3, seed=9)
    assert _min_cosine(fp32.embed_pil(queries), int8.embed_pil(queries)) > 0.9


def test_bf16_variant_is_its_own_space_and_served_only_after_a_passing_check(
    onnx_dir: Path,
) -> None:
    fp32 = load_embedder("efficientnet-lite0", runtime="onnx", onnx_dir=onnx_dir)
    with pytest.raises(PrecisionUnavailable, match="--precision bf16"):
        load_embedder("efficientnet-lite0:bf16", onnx_dir=onnx_dir)
    write_check(fp32.path, _check("bf16"))
    bf16 = load_embedder("efficientnet-lite0:bf16", onnx_dir=onnx_dir)
    assert bf16.autocast_dtype == torch.bfloat16
    assert bf16.identity.backbone == "efficientnet-lite0:bf16"
    assert bf16.identity.weights_sha256 not in (fp32.identity.weights_sha256,)
    queries = _images(3, seed=9)
    assert _min_cosine(fp32.embed_pil(queries), bf16.embed_pil(queries)) > 0.98


def test_variants_are_refused_for_a_trained_model_name(onnx_dir: Path, tmp_path: Path) -> None:
    with pytest.raises((ValueError, PrecisionUnavailable)):
        load_embedder(str(tmp_path / "no-such-model") + ":int8", onnx_dir=onnx_dir)


class _Paced:
    """An embedder at a set pace: the gate's decision must follow speed alone."""

    def __init__(self, inner: Any, seconds_per_call: float) -> None:
        self.inner, self.seconds_per_call = inner, seconds_per_call
        self.batch_size, self.identity, self.calls = inner.batch_size, inner.identity, 0

    def embed_pil(self, images: list[Image.Image]) -> np.ndarray:
        self.calls += 1
        time.sleep(self.seconds_per_call)
        return self.inner.embed_pil(images)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


def test_a_variant_no_faster_is_refused_before_scoring_unless_asked(onnx_dir: Path) -> None:
    fp32 = load_embedder("efficientnet-lite0", runtime="onnx", onnx_dir=onnx_dir)
    images = _images(12)
    labels, patients = [1, 2, 3] * 4, list(range(12))
    slow = _Paced(fp32, 0.4)
    slow.batch_size = 2  # the 12-image speed sample is six of its batches
    check = check_variant("bf16", fp32, slow, images, labels, patients)
    assert not check.scored and check.change is None and not check.kept
    assert check.speedup < 1.0 and check.evaluated_images == 0
    assert "not scored" in check.summary() and "no faster" in check.summary()
    # Slower than fp32's whole sample after its first batch: the rest is not embedded.
    assert slow.calls == 2, "warm-up + one batch, not the whole speed sample (7 calls)"
    assert json.loads(json.dumps(check.as_dict()))["change"] is None

    scored = check_variant("bf16", fp32, _Paced(fp32, 0.4), images, labels, patients,
                           score_anyway=True)  # fmt: skip
    assert scored.scored and scored.change == 0.0 and scored.evaluated_images == 12
    assert not scored.kept, "scored, but still slower: not kept"


@pytest.mark.parametrize(("precision", "score_anyway"), [("int8", True), ("bf16", False)])
def test_both_variants_keep_dev_archive_p5_within_a_hundredth(
    dev_archive: Settings, tmp_path: Path, precision: str, score_anyway: bool
) -> None:
    """Calibrated on archive images (int8), checked patient-excluded on every labelled one.

    int8 is scored on every CPU (ONNX Runtime is quick either way); bf16 as a user runs it,
    so where it is emulated (no AVX512_BF16/AMX) it is refused on speed in seconds."""
    from mammosearch.pipeline.quantize_archive import quantize_and_check

    clear_embedder_cache()
    settings = replace(dev_archive, data_dir=tmp_path)
    try:
        _written, check = quantize_and_check(
            settings, 32, 2000, precision, score_anyway=score_anyway
        )
        # Kept exactly when it is faster on this CPU (without VNNI int8 can be slower)
        # and P@5 holds: then served under its own name; otherwise refused, saying why.
        if check.scored:
            assert check.evaluated_images > 400
            assert check.change is not None and abs(check.change) < 0.01, check.summary()
        else:
            assert check.speedup <= 1.0 and not score_anyway, check.summary()
        assert check.kept == (check.speedup > 1.0), check.summary()
        if precision == "int8":
            onnx_dir = tmp_path / "models" / "onnx"
            if check.kept:
                served = load_embedder("efficientnet-lite0:int8", onnx_dir=onnx_dir)
                assert served.identity.backbone == "efficientnet-lite0:int8"
            else:
                with pytest.raises(PrecisionUnavailable, match="not kept by this archive"):
                    load_embedder("efficientnet-lite0:int8", onnx_dir=onnx_dir)
    finally:
        clear_embedder_cache()
