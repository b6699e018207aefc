"""Images -> vectors: preprocessing, the backbone registry, embedders and their spaces."""

from mammosearch.embed.backbones import BACKBONES, Backbone, get_backbone
from mammosearch.embed.embedder import Embedder, SpaceIdentity, TorchEmbedder
from mammosearch.embed.loader import (
    build_torch_embedder,
    clear_embedder_cache,
    load_embedder,
    load_embedder_from_settings,
    resolve_backbone_name,
)
from mammosearch.embed.onnx_runtime import OnnxEmbedder, export_onnx
from mammosearch.embed.preprocess import PREPROCESSING_VERSION, preprocess, preprocess_batch
from mammosearch.embed.weights import WeightsUnavailable, checkpoint_dir

__all__ = [
    "BACKBONES",
    "PREPROCESSING_VERSION",
    "Backbone",
    "Embedder",
    "OnnxEmbedder",
    "SpaceIdentity",
    "TorchEmbedder",
    "WeightsUnavailable",
    "build_torch_embedder",
    "checkpoint_dir",
    "clear_embedder_cache",
    "export_onnx",
    "get_backbone",
    "load_embedder",
    "load_embedder_from_settings",
    "preprocess",
    "preprocess_batch",
    "resolve_backbone_name",
]
