"""Backbone name + weights -> a ready embedder (torch or ONNX Runtime), once per process."""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from mammosearch.config import Settings, get_settings
from mammosearch.embed.backbones import (
    BACKBONES,
    DEFAULT_BACKBONE,
    FALLBACK_BACKBONE,
    Backbone,
    get_backbone,
)
from mammosearch.embed.embedder import Embedder, TorchEmbedder
from mammosearch.embed.onnx_runtime import (
    OnnxEmbedder,
    export_onnx,
    onnx_file_name,
    read_onnx_identity,
)
from mammosearch.embed.precision_names import split_precision, variant_name
from mammosearch.embed.quantize import (
    bf16_embedder,
    require_kept,
    servable_int8,
)
from mammosearch.embed.serving_record import serving_backbone
from mammosearch.embed.space_identity import SpaceIdentity
from mammosearch.embed.trained import (
    TRAINED_PREFIX,
    TrainedModel,
    find_trained_model,
    load_trained_embedder,
)
from mammosearch.embed.weights import (
    ResolvedWeights,
    WeightsUnavailable,
    file_sha256,
    resolve_weights,
)

AUTO = "auto"
RANDOM_SEED = 0
RUNTIMES = ("torch", "onnx")
VARIANT_RUNTIMES = {"int8": "onnx-int8", "bf16": "torch-bf16"}
"""Chosen by the backbone name (`NAME:int8`, `NAME:bf16`), not by a setting."""
_loading = threading.RLock()  # lru_cache alone lets two threads load the same model twice


def registry_dir(settings: Settings | None = None) -> Path:
    """Where registered trained models live: DATA_DIR/models/registry/<name>/."""
    return (settings or get_settings()).layout.registry_dir


def trained_model_for(name: str, registry: Path | None = None) -> TrainedModel | None:
    """The trained model a backbone name stands for (a model dir path or a registered name)."""
    if name == AUTO or name in BACKBONES:
        return None
    return find_trained_model(name, registry or registry_dir())


def resolve_backbone_name(name: str = AUTO, weights: Path | None = None) -> tuple[str, str]:
    """The backbone `name` stands for, and why (worth printing: `auto` decides at run time)."""
    base, precision = split_precision(name)
    if precision is not None:
        resolved, reason = resolve_backbone_name(base, weights)
        return variant_name(resolved, precision), f"{reason}; its {precision} variant"
    trained = trained_model_for(name)
    if trained is not None:
        return (
            f"{TRAINED_PREFIX}{trained.record['base']['backbone']}",
            f"trained model {trained.name} (sha256 {trained.sha256[:12]})",
        )
    if name != AUTO:
        get_backbone(name)
        return name, f"{name}: requested"
    if weights is not None:
        return DEFAULT_BACKBONE, f"auto: {DEFAULT_BACKBONE}, the weights file {weights} was given"
    try:
        found = resolve_weights(BACKBONES[DEFAULT_BACKBONE])
    except WeightsUnavailable as missing:
        return FALLBACK_BACKBONE, f"auto: {FALLBACK_BACKBONE}, because {missing.summary}"
    return DEFAULT_BACKBONE, f"auto: {DEFAULT_BACKBONE}, weights found at {found.path}"


def random_identity(backbone: Backbone, seed: int = RANDOM_SEED) -> SpaceIdentity:
    """The identity of untrained weights: marked so in every index, result and report."""
    return SpaceIdentity(
        backbone=backbone.name,
        weights_sha256=f"untrained-random-seed-{seed}",
        weights_source="random (untrained)",
        pretrained=False,
        dim=backbone.dim,
    )


def _weights_or_none(
    backbone: Backbone, weights: Path | None, allow_random: bool
) -> ResolvedWeights | None:
    """Resolved weights; None only when random weights are allowed and none were given."""
    try:
        return resolve_weights(backbone, weights)
    except WeightsUnavailable:
        if allow_random and weights is None:
            return None
        raise


def _identity(backbone: Backbone, resolved: ResolvedWeights | None) -> SpaceIdentity:
    if resolved is None:
        return random_identity(backbone)
    return SpaceIdentity(
        backbone=backbone.name,
        weights_sha256=file_sha256(resolved.path),
        weights_source=str(resolved.path),
        pretrained=True,
        dim=backbone.dim,
    )


def _load_state_dict(backbone: Backbone, model: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle/zip errors vary; all mean "bad file"
        message = f"{path}: not a readable PyTorch weights file ({error})"
        raise WeightsUnavailable(message) from error
    for wrapper_key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper_key), dict):
            state = state[wrapper_key]
    try:
        model.load_state_dict(backbone.prepare_state_dict(dict(state)))
    except (RuntimeError, TypeError, ValueError) as error:
        detail = " ".join(str(error).split())[:300] or repr(error)
        raise WeightsUnavailable(f"{path}: not {backbone.name} weights ({detail} ...)") from error


def build_torch_embedder(
    name: str,
    weights: Path | None = None,
    allow_random: bool = False,
    device: str = "cpu",
    batch_size: int = 32,
    channels_last: bool = True,
) -> TorchEmbedder:
    """A fresh (uncached) torch embedder for a registry name; prefer `load_embedder`."""
    backbone = get_backbone(name)
    resolved = _weights_or_none(backbone, weights, allow_random)
    if resolved is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)  # the same "untrained" space in every process
            model = backbone.build_classifier()
    else:
        model = backbone.build_classifier()
        _load_state_dict(backbone, model, resolved.path)
    return TorchEmbedder(
        backbone.to_feature_extractor(model),
        _identity(backbone, resolved),
        device=device,
        batch_size=batch_size,
        channels_last=channels_last,
    )


def default_onnx_dir() -> Path:
    return get_settings().layout.onnx_dir


@lru_cache(maxsize=8)
def _cached_embedder(
    name: str,
    weights: Path | None,
    allow_random: bool,
    device: str,
    runtime: str,
    batch_size: int,
    onnx_dir: Path | None,
    engine: str | None = None,
) -> Embedder:
    if runtime == "torch" or onnx_dir is None:
        return build_torch_embedder(name, weights, allow_random, device, batch_size)
    backbone = get_backbone(name)
    identity = _identity(backbone, _weights_or_none(backbone, weights, allow_random))
    onnx_path = onnx_dir / onnx_file_name(identity)
    if runtime == VARIANT_RUNTIMES["bf16"]:
        require_kept(onnx_path, "bf16")
        return bf16_embedder(build_torch_embedder(name, weights, allow_random, device, batch_size))
    if read_onnx_identity(onnx_path) != identity:
        torch_embedder = _cached_embedder(
            name, weights, allow_random, "cpu", "torch", batch_size, None
        )
        assert isinstance(torch_embedder, TorchEmbedder)  # runtime "torch" builds one
        export_onnx(torch_embedder, onnx_path)
    if runtime == VARIANT_RUNTIMES["int8"]:
        return OnnxEmbedder(servable_int8(onnx_path), batch_size=batch_size, engine=engine)
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device != "cpu" else None
    # The file's identity was just checked (or written): no second read of the model.
    return OnnxEmbedder(
        onnx_path, batch_size=batch_size, providers=providers, identity=identity, engine=engine
    )


def load_embedder(
    name: str = AUTO,  # a registry name, `auto`, a trained model directory or its registered name
    weights: Path | None = None,
    allow_random: bool = False,
    device: str = "cpu",
    runtime: str = "torch",
    batch_size: int = 32,
    onnx_dir: Path | None = None,
    registry: Path | None = None,
    engine: str | None = None,
) -> Embedder:
    """The embedder for a backbone name (or `auto`), loaded once per process.

    `weights` is an explicit file (the `MAMMOSEARCH_WEIGHTS` setting); otherwise the packaged
    or cached file, else a download. Without any, `WeightsUnavailable` says where to put the
    file, unless `allow_random`: then the weights are random and the identity says untrained.
    `runtime="onnx"` exports the model once into `onnx_dir` and serves it with ONNX Runtime;
    `NAME:int8` / `NAME:bf16` serve NAME's reduced-precision variant once
    `mammosearch models quantize` kept it (embed/quantize.py). `engine`: how an ONNX model
    runs (None: MAMMOSEARCH_ONNX_ENGINE).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    engine = engine or get_settings().onnx_engine  # one cache entry per engine actually used
    name, precision = split_precision(name)
    trained = trained_model_for(name, registry)
    if trained is not None and precision is not None:
        raise ValueError(f"{name}:{precision}: variants are built for registry backbones only")
    if trained is not None:
        # A trained model is its ONNX file: served by ONNX Runtime whatever the runtime says.
        return load_trained_embedder(trained, batch_size=batch_size, device=device, engine=engine)
    resolved_name, _reason = resolve_backbone_name(name, weights)
    with _loading:
        return _cached_embedder(
            resolved_name,
            Path(weights).expanduser().resolve() if weights is not None else None,
            allow_random,
            device,
            VARIANT_RUNTIMES[precision] if precision else runtime,
            batch_size,
            None if runtime == "torch" and not precision else Path(onnx_dir or default_onnx_dir()),
            engine,
        )


def load_embedder_from_settings(
    settings: Settings | None = None, device: str = "cpu", runtime: str | None = None
) -> Embedder:
    """`load_embedder` as configured: MAMMOSEARCH_BACKBONE, _WEIGHTS, _ALLOW_RANDOM_WEIGHTS..."""
    settings = settings or get_settings()
    return load_embedder(
        serving_backbone(settings.backbone, settings.data_dir),
        settings.weights_path,
        settings.allow_random_weights,
        device=device,
        runtime=runtime or settings.embed_runtime,
        onnx_dir=settings.layout.onnx_dir,
        batch_size=settings.embed_batch_size,
        registry=registry_dir(settings),
        engine=settings.onnx_engine,
    )


def clear_embedder_cache() -> None:
    """Forget loaded embedders (tests that change TORCH_HOME or weights files)."""
    _cached_embedder.cache_clear()
