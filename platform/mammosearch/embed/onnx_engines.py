"""What runs an exported ONNX model: ONNX Runtime or OpenVINO, chosen per model file.

Both read the same file and give the same space: fp32 vectors agree to a cosine of 1.0000
and int8 vectors to 0.998 or more (bench/bench_embed.py prints the agreement). They differ
in speed. OpenVINO runs the int8 (QDQ) models `models quantize` writes about twice as fast
as ONNX Runtime does: DenseNet121 int8 48-65 against 20-25 images/s on 2 cores with
AVX-512 VNNI, where ONNX Runtime's int8 was no faster than its own fp32 (its quantize /
dequantize pairs around DenseNet's BatchNorm + ReLU stay in float). For fp32 models
ONNX Runtime is as fast or faster. So `auto` gives int8 models to OpenVINO and the rest to
ONNX Runtime; MAMMOSEARCH_ONNX_ENGINE names one engine for every model instead.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

import numpy as np

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


def choose_engine(requested: str, quantized: bool) -> str:
    """The engine for a model: `requested` unless it is `auto` (int8: OpenVINO where it is
    installed; else ONNX Runtime)."""
    if requested not in ENGINES:
        raise ValueError(
            f"MAMMOSEARCH_ONNX_ENGINE={requested!r}: choose one of {', '.join(ENGINES)}"
        )
    if requested != AUTO:
        return requested
    return OPENVINO if quantized and openvino_installed() else ONNXRUNTIME


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
