"""The in-process pipeline: pending images -> vectors in the database -> the space's indexes.

Two stages, each idempotent on its own (mammosearch.pipeline.embed_stage, then
mammosearch.pipeline.index_stage), so any crash between them is repaired by running them
again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm import tqdm

from mammosearch.config import Settings, get_settings
from mammosearch.db.session import make_session_factory
from mammosearch.embed.serving import open_serving_space, serving_embedder
from mammosearch.pipeline import claims
from mammosearch.pipeline.embed_stage import Lease, embed_in_batches, pending_image_ids
from mammosearch.pipeline.index_stage import index_space


@dataclass
class PipelineSummary:
    embedding_space: dict[str, Any]
    embedded: int = 0
    failed: int = 0
    indexed: int = 0
    failures: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def process_pending(
    settings: Settings | None = None,
    progress: bool = False,
    limit: int | None = None,
    image_ids: Sequence[int] | None = None,
) -> PipelineSummary:
    """The in-process pipeline: embed every pending image (or those of `image_ids` still
    pending) in batches, then index them."""
    from mammosearch.pipeline.interrupted import release_interrupted_work

    settings = settings or get_settings()
    release_interrupted_work(settings)  # no sweep in the embedded default: a killed run's claims
    embedder = serving_embedder(settings)
    session = make_session_factory(settings.database_url)()
    try:
        space = open_serving_space(session, settings)
        summary = PipelineSummary(embedding_space=space.describe())
        pending = pending_image_ids(session, limit) if image_ids is None else list(image_ids)
        bar = tqdm(
            total=len(pending),
            desc=f"embedding ({space.backbone})",
            unit="img",
            disable=not progress or not pending,
        )
        lease = Lease(settings.database_url, claims.holder_name(), settings.claim_lease_s)
        result = embed_in_batches(
            session, pending, embedder, space, settings.embed_batch_size,
            lease=lease, progress=bar.update,
        )  # fmt: skip
        summary.embedded = len(result.embedded)
        summary.failed = len(result.failed)
        summary.failures = result.failed
        bar.close()
        summary.indexed = index_space(session, settings, space)
        return summary
    finally:
        session.close()
