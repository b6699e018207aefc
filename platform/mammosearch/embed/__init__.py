"""Images -> vectors: preprocessing, the backbone registry, embedders and their spaces."""

from __future__ import annotations

import importlib
from typing import Any

# `preprocess` is also a submodule's name: once the submodule is imported, the package's
# attribute would be the module, so the function is bound here (numpy and PIL, no torch).
from mammosearch.embed.preprocess import PREPROCESSING_VERSION as PREPROCESSING_VERSION
from mammosearch.embed.preprocess import preprocess as preprocess
from mammosearch.embed.preprocess import preprocess_batch as preprocess_batch

# Each public name and the module that defines it. Imported on first use, so a light
# caller (the CLI's --help, `status`) reaching one submodule never loads torch or faiss.
_HOMES = {
    "BACKBONES": "mammosearch.embed.backbones",
    "Backbone": "mammosearch.embed.backbones",
    "Embedder": "mammosearch.embed.embedder",
    "OnnxEmbedder": "mammosearch.embed.onnx_runtime",
    "SpaceIdentity": "mammosearch.embed.space_identity",
    "TorchEmbedder": "mammosearch.embed.embedder",
    "WeightsUnavailable": "mammosearch.embed.weights",
    "build_torch_embedder": "mammosearch.embed.loader",
    "checkpoint_dir": "mammosearch.embed.weights",
    "clear_embedder_cache": "mammosearch.embed.loader",
    "export_onnx": "mammosearch.embed.onnx_runtime",
    "get_backbone": "mammosearch.embed.backbones",
    "load_embedder": "mammosearch.embed.loader",
    "load_embedder_from_settings": "mammosearch.embed.loader",
    "resolve_backbone_name": "mammosearch.embed.loader",
}

__all__ = sorted([*_HOMES, "PREPROCESSING_VERSION", "preprocess", "preprocess_batch"])


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
