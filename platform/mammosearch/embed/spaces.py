"""An embedder's identity -> its EmbeddingSpace row, created once even under concurrency."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mammosearch.db.models import EmbeddingSpace
from mammosearch.embed.embedder import Embedder
from mammosearch.embed.space_identity import SpaceIdentity


def find_space(session: Session, identity: SpaceIdentity) -> EmbeddingSpace | None:
    """The row with this identity's unique key (backbone, weights, preprocessing, dim)."""
    return session.scalars(
        select(EmbeddingSpace).filter_by(
            backbone=identity.backbone,
            weights_sha256=identity.weights_sha256,
            preprocessing_version=identity.preprocessing_version,
            dim=identity.dim,
        )
    ).one_or_none()


def get_or_create_space(session: Session, embedder: Embedder) -> EmbeddingSpace:
    """The embedder's space row, inserted if missing; flushed, not committed (caller's job)."""
    identity = embedder.identity
    space = find_space(session, identity)
    if space is not None:
        return space
    space = EmbeddingSpace(
        backbone=identity.backbone,
        weights_sha256=identity.weights_sha256,
        weights_source=identity.weights_source[:512],
        pretrained=identity.pretrained,
        preprocessing_version=identity.preprocessing_version,
        dim=identity.dim,
    )
    try:
        # A savepoint, so losing the race to another creator undoes only this insert.
        with session.begin_nested():
            session.add(space)
    except IntegrityError:
        winner = find_space(session, identity)
        if winner is None:
            raise
        return winner
    return space
