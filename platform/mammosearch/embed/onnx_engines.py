"""What runs an exported ONNX model: ONNX Runtime or OpenVINO, chosen per model file.

Both read the same file and give the same space: fp32 vectors agree to a cosine of 1.0000
and int8 vectors to 0.998 or more (bench/bench_embed.py prints the agreement). They differ
in speed, and which is faster depends on the CPU. With AVX-512 VNNI, OpenVINO runs the
int8 (QDQ) models `models quantize` writes about twice as fast as ONNX Runtime does:
DenseNet121 int8 48-65 against 20-25 images/s on 2 cores, where ONNX Runtime's int8 was no
faster than its own fp32 (its quantize / dequantize pairs around DenseNet's BatchNorm + ReLU
stay in float). On an AVX2 CPU without VNNI the lead shrank or turned (issue 33). For fp32
models ONNX Runtime is as fast or faster everywhere measured.

So `auto` gives fp32 models to ONNX Runtime, and an int8 model to whichever engine a
one-time measurement on this machine found faster (cached in the data dir, keyed by the
model file and the CPU: the machine changes). Without a place to keep the measurement, the
CPU decides: OpenVINO only where it has int8 dot products (VNNI/AMX).
MAMMOSEARCH_ONNX_ENGINE names one engine for every model instead.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mammosearch.durable.atomic_files import SHARED, atomic_write_text
from mammosearch.embed.cpu_features import cpu_model, has_int8_dot_product, vector_extensions

AUTO = "auto"
ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"
ENGINES = (AUTO, ONNXRUNTIME, OPENVINO)
NO_SPINNING = ("session.intra_op.allow_spinning", "0")


class Engine(Protocol):
    name: str

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """(n, 3, h, w) float32 -> (n, dim) float32."""
        ...


CHOICES_FILE = "engine-choices.json"
MEASURED_RUNS = 5
MEASURED_BATCH = 4


def choose_engine(
    requested: str,
    quantized: bool,
    model_path: Path | None = None,
    choices_dir: Path | None = None,
    input_size_px: int = 224,
) -> str:
    """The engine for a model: `requested` unless it is `auto`. `auto`: fp32 on ONNX Runtime;
    int8 on the engine measured faster here (once, kept in `choices_dir`), or, with nothing
    to measure, on OpenVINO only where the CPU has int8 dot products."""
    if requested not in ENGINES:
        raise ValueError(
            f"MAMMOSEARCH_ONNX_ENGINE={requested!r}: choose one of {', '.join(ENGINES)}"
        )
    if requested != AUTO:
        return requested
    if not quantized or not openvino_installed():
        return ONNXRUNTIME
    if model_path is None or choices_dir is None:
        return OPENVINO if has_int8_dot_product() else ONNXRUNTIME
    engine: str = measured_choice(model_path, choices_dir, input_size_px)["engine"]
    return engine


def machine_key(model_path: Path) -> str:
    """What a measurement holds for: this model file (size, mtime) on this CPU and core count."""
    stat = model_path.stat()
    return (
        f"{model_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{cpu_model()}|"
        f"{vector_extensions()}|{os.cpu_count()}"
    )


def measured_choice(model_path: Path, choices_dir: Path, input_size_px: int) -> dict[str, Any]:
    """The cached measurement for this model and CPU, measured now when there is none."""
    path = choices_dir / CHOICES_FILE
    choices: dict[str, Any]
    try:
        choices = json.loads(path.read_text())
    except (OSError, ValueError):
        choices = {}
    key = machine_key(model_path)
    known = choices.get(key)
    if isinstance(known, dict) and known.get("engine") in (ONNXRUNTIME, OPENVINO):
        return known
    inputs = np.zeros((MEASURED_BATCH, 3, input_size_px, input_size_px), dtype=np.float32)
    seconds = {name: _median_run_s(open_engine(name, model_path), inputs)
               for name in (ONNXRUNTIME, OPENVINO)}  # fmt: skip
    choice = {
        "engine": min(seconds, key=seconds.__getitem__),
        "images_per_s": {name: round(MEASURED_BATCH / s, 2) for name, s in seconds.items()},
        "cpu": vector_extensions(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    choices[key] = choice
    try:
        atomic_write_text(path, json.dumps(choices, indent=2, sort_keys=True), SHARED)
    except OSError:
        pass  # a read-only model folder: measured again by the next process, still right
    return choice


def _median_run_s(engine: Engine, inputs: np.ndarray) -> float:
    engine.run(inputs)  # warm-up: first-run allocations and kernel selection
    times = []
    for _ in range(MEASURED_RUNS):
        started = time.perf_counter()
        engine.run(inputs)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def openvino_installed() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def open_engine(name: str, path: Path, providers: list[str] | None = None) -> Engine:
    if name == OPENVINO:
        return OpenVinoEngine(path)
    return OnnxRuntimeEngine(path, providers)


class OnnxRuntimeEngine:
    """An ONNX Runtime session (thread-safe: one per model per process).

    Its intra-op threads do not spin-wait for the next run. By default they spin after
    every run, which in a web process that does other work between queries burnt as much
    CPU as the inference: embedding one uploaded image took 46 ms of CPU, and 27 ms without
    spinning, at the same wall time; batch throughput was unchanged (82 and 86 images/s,
    efficientnet-lite0, 2 cores).
    """

    name = ONNXRUNTIME

    def __init__(self, path: Path, providers: list[str] | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.add_session_config_entry(*NO_SPINNING)
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=providers or ["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def run(self, inputs: np.ndarray) -> np.ndarray:
        vectors: np.ndarray
        (vectors,) = self.session.run(None, {self.input_name: inputs})
        return vectors


class OpenVinoEngine:
    """An OpenVINO model compiled for the CPU, one infer request per calling thread (a
    request is not thread-safe; the compiled model is shared). Compiling DenseNet121 int8
    takes about 4 s per process, against 0.4 s for an ONNX Runtime session: once, at load."""

    name = OPENVINO

    def __init__(self, path: Path) -> None:
        import openvino

        self.compiled = openvino.Core().compile_model(
            str(path),
            "CPU",
            {
                # One batch at a time on every physical core the process may use (as ONNX
                # Runtime's default): OpenVINO reads the affinity mask a cpuset gives.
                "PERFORMANCE_HINT": "LATENCY",
                # Gunicorn runs several workers on one host: pinned threads would fight.
                "ENABLE_CPU_PINNING": False,
                # Float parts in float32 on every CPU: by default OpenVINO computes them in
                # bfloat16 where the CPU has AVX512_BF16 (minimum cosine 0.996 to float32 for
                # efficientnet-lite0), so one image would embed differently on two workers
                # of one archive. An int8 model stays int8 where it is quantized.
                "INFERENCE_PRECISION_HINT": "f32",
            },
        )
        self._local = threading.local()

    def run(self, inputs: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return np.array(request.infer({0: inputs})[0], dtype=np.float32)  # a copy: reused
