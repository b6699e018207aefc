"""Export a torch embedder to ONNX and serve it (ONNX Runtime or OpenVINO), same space identity."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammosearch.config import get_settings
from mammosearch.durable.atomic_files import atomic_path
from mammosearch.embed.embedder import Embedder, TorchEmbedder, check_batch
from mammosearch.embed.onnx_engines import ONNXRUNTIME, choose_engine, open_engine
from mammosearch.embed.precision_names import split_precision
from mammosearch.embed.preprocess import INPUT_SIZE_PX
from mammosearch.embed.space_identity import SpaceIdentity

INPUT_NAME = "images"
OUTPUT_NAME = "vectors"
IDENTITY_KEY = "mammosearch.space_identity"
OPSET_VERSION = 17


def onnx_file_name(identity: SpaceIdentity) -> str:
    """One file per space: backbone, weights hash and preprocessing version in the name."""
    weights = "".join(c if c.isalnum() or c in "-_" else "_" for c in identity.weights_sha256)
    return f"{identity.backbone}-{weights[:24]}-p{identity.preprocessing_version}.onnx"


def export_onnx(embedder: TorchEmbedder, path: Path) -> Path:
    """Write the embedder's model to `path` (atomically), its identity in the metadata."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = embedder.model
    example = torch.zeros((1, 3, INPUT_SIZE_PX, INPUT_SIZE_PX), device=embedder.device)
    with atomic_path(path, suffix=".onnx.partial") as partial_path:
        partial_name = str(partial_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                model,
                (example,),
                partial_name,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "n"}, OUTPUT_NAME: {0: "n"}},
                opset_version=OPSET_VERSION,
                dynamo=False,  # the dynamo exporter needs onnxscript; this one does not
            )
        exported = onnx.load(partial_name)
        entry = exported.metadata_props.add()
        entry.key, entry.value = IDENTITY_KEY, json.dumps(embedder.identity.as_dict())
        onnx.save(exported, partial_name)
    return path


def read_onnx_identity(path: Path) -> SpaceIdentity | None:
    """The identity stored by `export_onnx`, or None when the file has none or is unreadable."""
    try:
        return _stored_identity(path)
    except Exception:  # noqa: BLE001 - any unreadable file just means "export again"
        return None


def _stored_identity(path: Path) -> SpaceIdentity:
    """The identity in the file's metadata; ValueError naming the file when it has none.

    Read through an unoptimised ONNX Runtime session: 0.14 s for DenseNet121, where
    `onnx.load` parses every weight in Python (0.8 s), whichever engine then serves it."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    if IDENTITY_KEY not in metadata:
        raise ValueError(f"{path.name}: no {IDENTITY_KEY} metadata; export it with export_onnx")
    stored = json.loads(metadata[IDENTITY_KEY])
    stored.pop("untrained", None)
    return SpaceIdentity(**stored)


class OnnxEmbedder(Embedder):
    """The same embedder served from its ONNX file; its identity comes from the file.

    `engine`: "auto" (fp32 on ONNX Runtime, int8 on the engine measured faster on this
    machine: `onnx_engines.choose_engine`), "onnxruntime" or "openvino"; None reads
    MAMMOSEARCH_ONNX_ENGINE.
    """

    runtime = "onnx"

    def __init__(
        self,
        path: Path,
        batch_size: int = 32,
        providers: list[str] | None = None,
        identity: SpaceIdentity | None = None,
        input_size_px: int = INPUT_SIZE_PX,
        engine: str | None = None,
        choices_dir: Path | None = None,
    ) -> None:
        """`identity` None: read from the file's metadata (what `export_onnx` wrote).
        `choices_dir`: where `auto` keeps its one-time engine measurement (default: the
        model's folder)."""
        self.path = Path(path)
        if identity is None:
            identity = _stored_identity(self.path)
        if engine is None:
            engine = get_settings().onnx_engine
        if choices_dir is None:
            choices_dir = self.path.parent  # beside the model, in the data dir
        quantized = split_precision(identity.backbone)[1] == "int8"
        if providers and any(name != "CPUExecutionProvider" for name in providers):
            engine = ONNXRUNTIME  # a GPU provider: ONNX Runtime's to run
        chosen = choose_engine(engine, quantized, self.path, choices_dir, input_size_px)
        self.engine = open_engine(chosen, self.path, providers)
        super().__init__(identity, batch_size, input_size_px)

    def embed_tensors(self, batch: torch.Tensor | np.ndarray) -> np.ndarray:
        check_batch(batch, self.input_size_px)
        inputs = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch
        vectors = self.engine.run(np.ascontiguousarray(inputs, dtype=np.float32))
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "engine": self.engine.name}
