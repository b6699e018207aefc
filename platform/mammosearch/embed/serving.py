"""Which embedding space serves, answered once: the serving backbone's embedder and its
space's row, for search, the pipeline, the space switch, the workers and the CLI.

Its own module so that the pipeline (whose image statuses follow the serving space) and the
space switch (which moves the archive to a new space with the pipeline's stages) both read
it without importing each other.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace
from mammosearch.embed.embedder import Embedder
from mammosearch.embed.loader import load_embedder, registry_dir
from mammosearch.embed.serving_record import serving_backbone
from mammosearch.embed.spaces import find_space, get_or_create_space


def embedder_for(settings: Settings, backbone: str) -> Embedder:
    """The embedder of `backbone` as this deployment runs it (runtime, ONNX dir, registry)."""
    return load_embedder(
        backbone,
        settings.weights_path,
        settings.allow_random_weights,
        runtime=settings.embed_runtime,
        onnx_dir=settings.layout.onnx_dir,
        batch_size=settings.embed_batch_size,
        registry=registry_dir(settings),
        engine=settings.onnx_engine,
    )


def serving_embedder(settings: Settings) -> Embedder:
    """The embedder of the backbone that serves now (`spaces activate` moves it)."""
    return embedder_for(settings, serving_backbone(settings.backbone, settings.data_dir))


def serving_space(session: Session, settings: Settings) -> EmbeddingSpace | None:
    """The space search answers from now (None before anything was embedded)."""
    return find_space(session, serving_embedder(settings).identity)


def open_serving_space(session: Session, settings: Settings) -> EmbeddingSpace:
    """The space search answers from now, created (and committed) on first use."""
    space = get_or_create_space(session, serving_embedder(settings))
    session.commit()
    return space
