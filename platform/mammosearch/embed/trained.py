"""A trained model directory (model.onnx + model.json) served as a backbone.

A backbone name that is a path to such a directory, or the name of a registered model
(`mammosearch models register`), makes every command embed with it, in a space of its
own: backbone `trained:<base>`, weights sha256 = the model file's sha256.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammosearch.embed.preprocess import PREPROCESSING_VERSION
from mammosearch.embed.space_identity import SpaceIdentity
from mammosearch.embed.weights import file_sha256

if TYPE_CHECKING:  # onnxruntime loads when a trained model is served
    from mammosearch.embed.onnx_runtime import OnnxEmbedder

MODEL_FILE = "model.onnx"
RECORD_FILE = "model.json"
TRAINING_IMAGES_FILE = "training-images.txt"
RECORD_FORMAT = 1
TRAINED_PREFIX = "trained:"
_loading = threading.Lock()


class ModelDirError(ValueError):
    """A model directory that cannot be served; the message names the file and the problem."""


@dataclass(frozen=True)
class TrainedModel:
    """A verified model directory: its record and where its files are."""

    directory: Path
    record: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.record["name"])

    @property
    def sha256(self) -> str:
        return str(self.record["model_sha256"])

    @property
    def input_size_px(self) -> int:
        return int(self.record["input"]["image_size_px"])

    @property
    def dim(self) -> int:
        return int(self.record["output"]["dim"])

    @property
    def onnx_path(self) -> Path:
        return self.directory / MODEL_FILE

    def identity(self) -> SpaceIdentity:
        return SpaceIdentity(
            backbone=f"{TRAINED_PREFIX}{self.record['base']['backbone']}"[:64],
            weights_sha256=self.sha256,
            weights_source=f"trained model {self.name}",
            pretrained=True,
            dim=self.dim,
            preprocessing_version=int(
                self.record["input"].get("preprocessing_version", PREPROCESSING_VERSION)
            ),
        )

    def training_image_hashes(self) -> set[str]:
        """Content sha256 of every image that trained the final model (leakage checks)."""
        path = self.directory / TRAINING_IMAGES_FILE
        try:
            return set(path.read_text().split())
        except OSError:
            return set()

    def cross_validation(self) -> dict[str, Any]:
        return dict(self.record.get("cross_validation") or {})


def looks_like_model_dir(path: Path) -> bool:
    return (path / RECORD_FILE).is_file()


def read_trained_model(directory: Path) -> TrainedModel:
    """Read and verify a model directory: record readable, model file present, sha256 equal."""
    directory = Path(directory).expanduser()
    record_path = directory / RECORD_FILE
    try:
        record = json.loads(record_path.read_text())
    except FileNotFoundError:
        raise ModelDirError(f"{directory.name}: no {RECORD_FILE}; not a trained model") from None
    except (OSError, ValueError) as error:
        raise ModelDirError(f"{directory.name}/{RECORD_FILE}: unreadable ({error})") from error
    missing = [
        key for key in ("name", "model_sha256", "input", "output", "base") if key not in record
    ]
    if missing or record.get("format") != RECORD_FORMAT:
        raise ModelDirError(
            f"{directory.name}/{RECORD_FILE}: not a format-{RECORD_FORMAT} model record "
            f"(missing {', '.join(missing) or 'format'})"
        )
    model = TrainedModel(directory.resolve(), record)
    if not model.onnx_path.is_file():
        raise ModelDirError(f"{directory.name}: {MODEL_FILE} is missing")
    actual = file_sha256(model.onnx_path)
    if actual != model.sha256:
        raise ModelDirError(
            f"{directory.name}/{MODEL_FILE}: sha256 {actual[:16]}... does not match the "
            f"record's {model.sha256[:16]}... (a changed or half-copied file)"
        )
    return model


def find_trained_model(name: str, registry_dir: Path) -> TrainedModel | None:
    """The model `name` stands for: a model directory's path, or a registered name."""
    candidates = [Path(name).expanduser()]
    if "/" not in name and name not in ("", ".", ".."):
        candidates.append(registry_dir / name)
    for candidate in candidates:
        if looks_like_model_dir(candidate):
            return read_trained_model(candidate)
    return None


@lru_cache(maxsize=8)
def _cached_onnx_embedder(
    directory: Path, sha256: str, batch_size: int, device: str, engine: str | None = None
) -> OnnxEmbedder:
    from mammosearch.embed.onnx_runtime import OnnxEmbedder

    model = read_trained_model(directory)
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device != "cpu" else None
    return OnnxEmbedder(
        model.onnx_path,
        batch_size=batch_size,
        providers=providers,
        identity=model.identity(),
        input_size_px=model.input_size_px,
        engine=engine,
    )


def load_trained_embedder(
    model: TrainedModel, batch_size: int = 32, device: str = "cpu", engine: str | None = None
) -> OnnxEmbedder:
    """The model served by ONNX Runtime, loaded once per process; `engine` None: the
    setting's."""
    with _loading:
        return _cached_onnx_embedder(model.directory, model.sha256, batch_size, device, engine)
