"""int8 embedding models: ONNX Runtime static quantization, calibrated on the archive's images.

An int8 model's vectors differ from fp32's (cosine about 0.99), so it is its own embedding
space, named by the quantized file's sha256. It is served only after the archive's own
check: patient-excluded same-BIRADS P@5 of the int8 vectors within `MAX_P5_CHANGE` of the
fp32 vectors' on the same images. The verdict is written beside the model, and the loader
refuses an int8 model whose check failed or never ran.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mammosearch.atomic_files import atomic_path, atomic_write_text
from mammosearch.cpu_features import has_int8_dot_product, vector_extensions
from mammosearch.embed.embedder import Embedder, SpaceIdentity
from mammosearch.embed.onnx_runtime import IDENTITY_KEY, read_onnx_identity
from mammosearch.embed.preprocess import preprocess_batch
from mammosearch.embed.weights import WeightsUnavailable, file_sha256

MAX_P5_CHANGE = 0.01
"""The most patient-excluded P@5 may move for the int8 model to be kept (the issue's bar)."""
CALIBRATION_IMAGES = 64
CALIBRATION_BATCH = 8
INT8_SUFFIX = ".int8.onnx"
INT8_NAME_SUFFIX = ":int8"
"""`efficientnet-lite0:int8` (or `auto:int8`) names a backbone's int8 space."""


def split_int8(name: str) -> tuple[str, bool]:
    """`name:int8` -> (name, True); any other name -> (name, False)."""
    if name.endswith(INT8_NAME_SUFFIX):
        return name.removesuffix(INT8_NAME_SUFFIX), True
    return name, False


class Int8Unavailable(WeightsUnavailable):
    """No int8 model to serve: never quantized, or its quality check failed."""


def int8_path(fp32_path: Path) -> Path:
    """Where the int8 model of an exported fp32 model lives (beside it)."""
    return fp32_path.with_name(fp32_path.name.removesuffix(".onnx") + INT8_SUFFIX)


def check_path(model_path: Path) -> Path:
    """The quality verdict of an int8 model: `<model>.int8.json`."""
    return model_path.with_suffix(".json")


@dataclass(frozen=True)
class Int8Check:
    """fp32 against int8 on the same labelled images of the archive, in one process."""

    fp32_p5: float
    int8_p5: float
    evaluated_images: int
    calibration_images: int
    fp32_images_per_s: float
    int8_images_per_s: float
    cpu: str
    int8_dot_product: bool
    max_p5_change: float = MAX_P5_CHANGE

    @property
    def change(self) -> float:
        return self.int8_p5 - self.fp32_p5

    @property
    def kept(self) -> bool:
        return abs(self.change) < self.max_p5_change

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "change": round(self.change, 4), "kept": self.kept}

    def summary(self) -> str:
        verdict = "kept" if self.kept else f"NOT kept (|change| >= {self.max_p5_change})"
        return (
            f"patient-excluded P@5 fp32 {self.fp32_p5:.3f}, int8 {self.int8_p5:.3f} "
            f"(change {self.change:+.3f}, {self.evaluated_images} images): {verdict}; "
            f"{self.fp32_images_per_s:.1f} -> {self.int8_images_per_s:.1f} images/s "
            f"(x{self.int8_images_per_s / self.fp32_images_per_s:.2f}) on {self.cpu}"
        )


def _calibration_reader(batches: Sequence[np.ndarray]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._next: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._next, None)
            return None if batch is None else {"images": batch}

    return Batches()


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer logs every rescaled bias at INFO on the root logger: hundreds of lines."""
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def int8_identity(fp32: SpaceIdentity, digest: str, calibration_images: int) -> SpaceIdentity:
    """The int8 space: `NAME:int8`, same preprocessing, the quantized file's own hash."""
    source = (
        f"int8 of {fp32.backbone} {fp32.weights_sha256[:16]} "
        f"(ONNX Runtime static quantization, calibrated on {calibration_images} archive images)"
    )
    return replace(
        fp32,
        backbone=f"{fp32.backbone}{INT8_NAME_SUFFIX}",
        weights_sha256=digest,
        weights_source=source,
    )


def quantize_int8(fp32_path: Path, calibration: Sequence[Image.Image], size_px: int) -> Path:
    """Write the int8 model of `fp32_path` beside it (atomically); returns its path.

    QDQ format, per-channel int8 weights, uint8 activations calibrated by min/max. Without
    VNNI/AMX the activations use a reduced range: the AVX2 u8 x s8 path can saturate.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = read_onnx_identity(fp32_path)
    if fp32 is None:
        raise Int8Unavailable(f"{fp32_path}: no readable fp32 model with its space identity")
    if not calibration:
        raise Int8Unavailable("no calibration images: ingest images before quantizing")
    tensors = preprocess_batch(list(calibration), size_px).numpy()
    step = CALIBRATION_BATCH
    batches = [tensors[i : i + step] for i in range(0, len(tensors), step)]
    out_path = int8_path(fp32_path)
    with tempfile.TemporaryDirectory(dir=fp32_path.parent) as work, _quiet_quantizer():
        prepared, quantized = Path(work) / "prepared.onnx", Path(work) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(quantized),
            _calibration_reader(batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=not has_int8_dot_product(),
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        identity = int8_identity(fp32, file_sha256(quantized), len(tensors))
        model = onnx.load(str(quantized))
        kept = [p for p in model.metadata_props if p.key != IDENTITY_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        entry = model.metadata_props.add()
        entry.key, entry.value = IDENTITY_KEY, json.dumps(identity.as_dict())
        with atomic_path(out_path, suffix=".onnx.partial") as partial:
            onnx.save(model, str(partial))
    return out_path


def _timed_vectors(embedder: Embedder, images: Sequence[Image.Image]) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    vectors = embedder.embed_pil(images)
    return vectors, len(images) / max(time.perf_counter() - started, 1e-9)


def check_int8(
    fp32: Embedder,
    int8: Embedder,
    images: Sequence[Image.Image],
    labels: Sequence[Any],
    patient_ids: Sequence[Any],
    calibration_images: int,
) -> Int8Check:
    """Same-label P@5 of both models on the same images, each query's patient excluded."""
    from mammosearch.evaluate.evaluator import evaluate_vectors

    fp32_vectors, fp32_rate = _timed_vectors(fp32, images)
    int8_vectors, int8_rate = _timed_vectors(int8, images)
    ids = list(range(len(images)))

    def p5(vectors: np.ndarray) -> float:
        result = evaluate_vectors(vectors, ids, labels, patient_ids, ks=(5,), label_name="birads")
        return float(result.metrics["precision@5"])

    return Int8Check(
        fp32_p5=p5(fp32_vectors),
        int8_p5=p5(int8_vectors),
        evaluated_images=len(images),
        calibration_images=calibration_images,
        fp32_images_per_s=round(fp32_rate, 2),
        int8_images_per_s=round(int8_rate, 2),
        cpu=vector_extensions(),
        int8_dot_product=has_int8_dot_product(),
    )


def write_check(model_path: Path, check: Int8Check) -> Path:
    path = check_path(model_path)
    atomic_write_text(path, json.dumps(check.as_dict(), indent=2) + "\n")
    return path


def servable_int8(fp32_path: Path) -> Path:
    """The int8 model of `fp32_path` if its check passed; otherwise why not, as the error."""
    path = int8_path(fp32_path)
    how = "run `mammosearch models quantize` (it calibrates and checks on this archive)"
    if not path.exists():
        raise Int8Unavailable(f"no int8 model at {path}: {how}")
    try:
        check = json.loads(check_path(path).read_text())
    except (OSError, ValueError) as error:
        raise Int8Unavailable(f"{path}: its quality check is missing ({error}); {how}") from None
    if not check.get("kept"):
        raise Int8Unavailable(
            f"{path}: int8 moved patient-excluded P@5 by {check.get('change')} "
            f"(allowed < {check.get('max_p5_change')}); serve the fp32 backbone (no ':int8')"
        )
    return path
