"""Embedding spaces: one row per identity, created safely by concurrent workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from mammosearch.db.models import Base, EmbeddingSpace
from mammosearch.embed import Embedder, SpaceIdentity, spaces
from mammosearch.embed.spaces import get_or_create_space


class _IdentityOnly(Embedder):
    """An embedder that only has an identity: spaces never run the model."""

    runtime = "none"

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        return np.zeros((len(batch), self.dim), dtype=np.float32)


LITE0 = _IdentityOnly(
    SpaceIdentity("efficientnet-lite0", "a" * 64, "/weights/lite0.pth", pretrained=True, dim=1280)
)
UNTRAINED = _IdentityOnly(
    SpaceIdentity(
        "densenet121", "untrained-random-seed-0", "random (untrained)", pretrained=False, dim=1024
    )
)


def _count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(EmbeddingSpace))


def test_same_identity_gives_the_same_row_and_another_a_new_one() -> None:
    """Idempotent on (backbone, weights_sha256, preprocessing_version, dim)."""
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        first = get_or_create_space(session, LITE0)
        again = get_or_create_space(session, LITE0)
        other = get_or_create_space(session, UNTRAINED)
        session.commit()
        assert first.id == again.id != other.id
        assert _count(session) == 2
        assert first.describe()["untrained"] is False
        assert other.describe() | {"id": None} == {
            "id": None,
            "backbone": "densenet121",
            "weights_sha256": "untrained-random-seed-0",
            "weights_source": "random (untrained)",
            "pretrained": False,
            "untrained": True,
            "preprocessing_version": 1,
            "dim": 1024,
        }


def test_losing_the_creation_race_returns_the_winners_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker inserts between our look-up and our insert: no crash, its row, and
    our session's earlier work survives (only the savepoint is rolled back)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'spaces.sqlite3'}")
    Base.metadata.create_all(engine)
    with Session(engine) as winner:
        winner_id = get_or_create_space(winner, LITE0).id
        winner.commit()

    real_find = spaces.find_space
    look_ups: list[int] = []

    def find_after_the_winner(session: Session, identity: SpaceIdentity) -> EmbeddingSpace | None:
        look_ups.append(1)
        return None if len(look_ups) == 1 else real_find(session, identity)

    monkeypatch.setattr(spaces, "find_space", find_after_the_winner)
    with Session(engine) as loser:
        earlier_work = get_or_create_space(loser, UNTRAINED)  # before the race, same transaction
        look_ups.clear()
        space = get_or_create_space(loser, LITE0)
        loser.commit()
        assert space.id == winner_id
        assert len(look_ups) == 2  # the insert failed and the winner's row was looked up
        assert loser.get(EmbeddingSpace, earlier_work.id) is not None
        assert _count(loser) == 2
