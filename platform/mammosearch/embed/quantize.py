"""Reduced-precision embedding: int8 (ONNX Runtime static quantization) and bf16 (torch).

A reduced-precision model's vectors differ from fp32's (cosine 0.96-0.999), so each is its
own embedding space, `NAME:int8` or `NAME:bf16`. It is served only after the archive's own
check: patient-excluded same-BIRADS P@5 within `MAX_P5_CHANGE` of fp32's on the same images,
and faster than fp32 on this machine. Speed is measured first, on a sample: a variant no
faster here is refused without scoring every image (emulated bf16 would take minutes to
say no), unless the caller asks for the quality figure anyway. The verdict is written
beside the fp32 export, and the loader refuses a variant whose check failed or never ran.

- int8: QDQ, per-channel int8 weights, uint8 activations calibrated (min/max) on archive
  images; without VNNI/AMX the activations use a reduced range (the AVX2 u8 x s8 path can
  saturate). Served by OpenVINO where installed (`onnx_engines`: about twice ONNX Runtime's
  int8 speed on DenseNet121).
- bf16: torch autocast to bfloat16, channels-last; fast where the CPU has AVX512_BF16 or AMX
  (or on a GPU). Best for DenseNet, whose pre-activation BatchNorm/concat layers int8 leaves
  in float.
"""

from __future__ import annotations

import hashlib
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
import torch
from PIL import Image
from tqdm import tqdm

from mammosearch.durable.atomic_files import atomic_path, atomic_write_text
from mammosearch.embed.cpu_features import has_bf16, has_int8_dot_product, vector_extensions
from mammosearch.embed.embedder import Embedder, TorchEmbedder
from mammosearch.embed.onnx_runtime import IDENTITY_KEY, read_onnx_identity
from mammosearch.embed.precision_names import PRECISIONS, variant_name
from mammosearch.embed.preprocess import preprocess_batch
from mammosearch.embed.space_identity import SpaceIdentity
from mammosearch.embed.weights import WeightsUnavailable, file_sha256

MAX_P5_CHANGE = 0.01
"""The most patient-excluded P@5 may move for a variant to be kept (the issue's bar)."""
CALIBRATION_IMAGES = 64
SPEED_SAMPLE_IMAGES = 64
"""Images both models embed, timed, before any scoring: enough batches to time a CPU."""
CALIBRATION_BATCH = 8


class PrecisionUnavailable(WeightsUnavailable):
    """No reduced-precision model to serve: never checked, or its check failed."""


def int8_path(fp32_path: Path) -> Path:
    """Where the int8 model of an exported fp32 model lives (beside it)."""
    return fp32_path.with_name(fp32_path.name.removesuffix(".onnx") + ".int8.onnx")


def check_path(fp32_path: Path, precision: str) -> Path:
    """The verdict on one variant of an exported fp32 model: `<model>.<precision>.json`."""
    return fp32_path.with_name(fp32_path.name.removesuffix(".onnx") + f".{precision}.json")


@dataclass(frozen=True)
class PrecisionCheck:
    """fp32 against a variant on the same labelled images of the archive, in one process."""

    precision: str
    fp32_p5: float | None  # None: not scored (refused on speed alone)
    variant_p5: float | None
    evaluated_images: int
    calibration_images: int
    fp32_images_per_s: float
    variant_images_per_s: float
    cpu: str
    native_support: bool
    variant_sha256: str = ""  # the variant space's weights_sha256: pages find the check by it
    engine: str = ""  # what ran the variant (openvino, onnxruntime, torch): speed is its own
    max_p5_change: float = MAX_P5_CHANGE

    @property
    def scored(self) -> bool:
        return self.fp32_p5 is not None and self.variant_p5 is not None

    @property
    def change(self) -> float | None:
        if self.fp32_p5 is None or self.variant_p5 is None:
            return None
        return self.variant_p5 - self.fp32_p5

    @property
    def speedup(self) -> float:
        return self.variant_images_per_s / max(self.fp32_images_per_s, 1e-9)

    @property
    def kept(self) -> bool:
        change = self.change
        return change is not None and abs(change) < self.max_p5_change and self.speedup > 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "change": None if self.change is None else round(self.change, 4),
            "speedup": round(self.speedup, 3),
            "kept": self.kept,
        }

    def summary(self) -> str:
        change = self.change
        if self.kept:
            verdict = "kept"
        elif change is not None and abs(change) >= self.max_p5_change:
            verdict = f"NOT kept (|change| >= {self.max_p5_change})"
        else:
            verdict = "NOT kept (no faster than fp32 here)"
        if self.fp32_p5 is None or self.variant_p5 is None or change is None:
            quality = f"{self.precision} P@5 not scored (--score-anyway scores it)"
        else:
            quality = (
                f"patient-excluded P@5 fp32 {self.fp32_p5:.3f}, {self.precision} "
                f"{self.variant_p5:.3f} (change {change:+.3f}, {self.evaluated_images} images)"
            )
        return (
            f"{quality}: {verdict}; {self.fp32_images_per_s:.1f} -> "
            f"{self.variant_images_per_s:.1f} images/s (x{self.speedup:.2f}) on {self.cpu}"
            + (f", {self.precision} run by {self.engine}" if self.engine else "")
        )


def native_support(precision: str) -> bool:
    """Whether this CPU runs the variant in hardware (detected now; the machine changes)."""
    return has_int8_dot_product() if precision == "int8" else has_bf16()


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer logs every rescaled bias at INFO on the root logger: hundreds of lines."""
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _calibration_reader(batches: Sequence[np.ndarray]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime is untyped
        def __init__(self) -> None:
            self._next: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._next, None)
            return None if batch is None else {"images": batch}

    return Batches()


def variant_identity(fp32: SpaceIdentity, precision: str, digest: str, how: str) -> SpaceIdentity:
    """The variant's space: `NAME:<precision>`, same preprocessing, its own hash."""
    return replace(
        fp32,
        backbone=variant_name(fp32.backbone, precision),
        weights_sha256=digest,
        weights_source=f"{precision} of {fp32.backbone} {fp32.weights_sha256[:16]} ({how})",
    )


def quantize_int8(fp32_path: Path, calibration: Sequence[Image.Image], size_px: int) -> Path:
    """Write the int8 model of `fp32_path` beside it (atomically); returns its path."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = read_onnx_identity(fp32_path)
    if fp32 is None:
        raise PrecisionUnavailable(f"{fp32_path}: no readable fp32 model with its space identity")
    if not calibration:
        raise PrecisionUnavailable("no calibration images: ingest images before quantizing")
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
        how = f"ONNX Runtime static quantization, calibrated on {len(tensors)} archive images"
        identity = variant_identity(fp32, "int8", file_sha256(quantized), how)
        model = onnx.load(str(quantized))
        kept = [p for p in model.metadata_props if p.key != IDENTITY_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        entry = model.metadata_props.add()
        entry.key, entry.value = IDENTITY_KEY, json.dumps(identity.as_dict())
        with atomic_path(out_path, suffix=".onnx.partial") as partial:
            onnx.save(model, str(partial))
    return out_path


def bf16_embedder(fp32: TorchEmbedder) -> TorchEmbedder:
    """The same network run under bfloat16 autocast, as its own space."""
    digest = hashlib.sha256(f"{fp32.identity.weights_sha256}:bf16-autocast".encode()).hexdigest()
    identity = variant_identity(fp32.identity, "bf16", digest, "torch bfloat16 autocast")
    return TorchEmbedder(
        fp32.model,
        identity,
        device=str(fp32.device),
        batch_size=fp32.batch_size,
        channels_last=True,
        autocast_dtype=torch.bfloat16,
    )


def _timed_vectors(
    embedder: Embedder,
    images: Sequence[Image.Image],
    label: str,
    progress: bool,
    give_up_after_s: float | None = None,
) -> tuple[np.ndarray, float]:
    """Vectors and images/s; with `give_up_after_s`, stops after the batch that passes it
    (the rate is then of the images done: a variant already slower than fp32's whole
    sample need not finish it)."""
    embedder.embed_pil(images[: embedder.batch_size])  # warm-up: first-run allocations
    step = embedder.batch_size * (4 if give_up_after_s is None else 1)
    chunks = []
    done = 0
    started = time.perf_counter()
    bar = tqdm(total=len(images), desc=f"embedding ({label})", unit="img", disable=not progress)
    with bar:
        for start in range(0, len(images), step):
            chunks.append(embedder.embed_pil(images[start : start + step]))
            done += len(chunks[-1])
            bar.update(len(chunks[-1]))
            if give_up_after_s is not None and time.perf_counter() - started > give_up_after_s:
                break
    elapsed = time.perf_counter() - started
    return np.concatenate(chunks), done / max(elapsed, 1e-9)


def check_variant(
    precision: str,
    fp32: Embedder,
    variant: Embedder,
    images: Sequence[Image.Image],
    labels: Sequence[Any],
    patient_ids: Sequence[Any],
    calibration_images: int = 0,
    progress: bool = False,
    score_anyway: bool = False,
) -> PrecisionCheck:
    """Speed on a sample first; then, if faster here (or `score_anyway`), same-label P@5 of
    both on all the images, each query's patient excluded, and the speed of those runs."""
    from mammosearch.evaluate.evaluator import evaluate_vectors

    record = PrecisionCheck(
        precision=precision,
        fp32_p5=None,
        variant_p5=None,
        evaluated_images=0,
        calibration_images=calibration_images,
        fp32_images_per_s=0.0,
        variant_images_per_s=0.0,
        cpu=vector_extensions(),
        native_support=native_support(precision),
        variant_sha256=variant.identity.weights_sha256,
        engine=_engine_of(variant),
    )
    sample = images[:SPEED_SAMPLE_IMAGES]
    _, fp32_rate = _timed_vectors(fp32, sample, "fp32 speed", progress)
    fp32_sample_s = len(sample) / max(fp32_rate, 1e-9)
    _, variant_rate = _timed_vectors(
        variant, sample, f"{precision} speed", progress, give_up_after_s=fp32_sample_s
    )
    record = replace(
        record, fp32_images_per_s=round(fp32_rate, 2), variant_images_per_s=round(variant_rate, 2)
    )
    if record.speedup <= 1.0 and not score_anyway:
        return record
    fp32_vectors, fp32_rate = _timed_vectors(fp32, images, "fp32", progress)
    variant_vectors, variant_rate = _timed_vectors(variant, images, precision, progress)
    ids = list(range(len(images)))

    def p5(vectors: np.ndarray) -> float:
        result = evaluate_vectors(vectors, ids, labels, patient_ids, ks=(5,), label_name="birads")
        return float(result.metrics["precision@5"])

    return replace(
        record,
        fp32_p5=p5(fp32_vectors),
        variant_p5=p5(variant_vectors),
        evaluated_images=len(images),
        fp32_images_per_s=round(fp32_rate, 2),
        variant_images_per_s=round(variant_rate, 2),
    )


def _engine_of(embedder: Embedder) -> str:
    """What runs the model: an ONNX engine's name (openvino, onnxruntime), else the runtime."""
    details = embedder.describe()
    return str(details.get("engine", details["runtime"]))


def write_check(fp32_path: Path, check: PrecisionCheck) -> Path:
    path = check_path(fp32_path, check.precision)
    atomic_write_text(path, json.dumps(check.as_dict(), indent=2) + "\n")
    return path


def require_kept(fp32_path: Path, precision: str) -> None:
    """Raise, saying why, unless this archive's check kept the variant."""
    how = f"run `mammosearch models quantize --precision {precision}` (it checks on this archive)"
    path = check_path(fp32_path, precision)
    try:
        check = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise PrecisionUnavailable(
            f"{precision}: its quality check {path.name} is missing ({error}); {how}"
        ) from None
    if not check.get("kept"):
        change = check.get("change")
        quality = "P@5 not scored" if change is None else f"P@5 change {change}"
        raise PrecisionUnavailable(
            f"{precision}: not kept by this archive's check ({quality}, "
            f"allowed < {check.get('max_p5_change')}; x{check.get('speedup')} of fp32's speed);"
            " serve the fp32 backbone (the name without the suffix)"
        )


def servable_int8(fp32_path: Path) -> Path:
    """The int8 model of `fp32_path` if its check kept it; otherwise why not, as the error."""
    path = int8_path(fp32_path)
    if not path.exists():
        raise PrecisionUnavailable(
            f"no int8 model at {path}: run `mammosearch models quantize` "
            "(it calibrates and checks on this archive)"
        )
    require_kept(fp32_path, "int8")
    return path


def recorded_checks(onnx_dir: Path) -> dict[str, dict[str, Any]]:
    """Every variant verdict in `onnx_dir`, by the variant space's weights_sha256."""
    checks: dict[str, dict[str, Any]] = {}
    for precision in PRECISIONS:
        for path in sorted(onnx_dir.glob(f"*.{precision}.json")):
            try:
                check = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if check.get("variant_sha256"):
                checks[check["variant_sha256"]] = check
    return checks
