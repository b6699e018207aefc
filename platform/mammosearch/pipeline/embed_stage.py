"""Stage 1: pending images -> one vector per (image, space) in image_embeddings.

Idempotent: an image that already has a vector is skipped, and concurrent inserts of the
same row are ignored. `embed_in_batches` is the one embed loop (the in-process pipeline,
the workers, re-embedding into another space, the report's comparison backbones); with a
`Lease` it claims each batch first (mammosearch.pipeline.claims).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from tqdm import tqdm

from mammosearch.db.models import EmbeddingSpace, Image, ImageEmbedding, ImageStatus, utcnow
from mammosearch.embed import Embedder
from mammosearch.ingest.storage import open_upright
from mammosearch.pipeline import claims

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


@dataclass
class EmbedBatchResult:
    embedded: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    unclaimed: list[int] = field(default_factory=list)
    """Ids another holder had (or past their tries): not looked at, only with a `Lease`."""

    def add(self, other: EmbedBatchResult) -> None:
        self.embedded += other.embedded
        self.skipped += other.skipped
        self.failed.update(other.failed)
        self.unclaimed += other.unclaimed


@dataclass(frozen=True)
class Lease:
    """Claim each batch for `holder` before embedding it, its lease renewed while it runs."""

    database_url: str
    holder: str
    lease_s: float = claims.DEFAULT_LEASE_S


def vector_to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def pending_image_ids(session: Session, limit: int | None = None) -> list[int]:
    """Images that still need a vector, oldest first."""
    query = (
        select(Image.id).where(Image.status == ImageStatus.PENDING).order_by(Image.id).limit(limit)
    )
    return list(session.scalars(query))


def _open_stored(image: Image) -> PILImage.Image:
    path = Path(image.stored_path)
    try:
        return open_upright(path)
    except FileNotFoundError as exc:
        raise ValueError(f"{image.source_file_name}: stored file {path} is missing") from exc
    except OSError as exc:
        raise ValueError(f"{image.source_file_name}: cannot decode stored file ({exc})") from exc


def _insert_ignoring_existing(session: Session, rows: list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: a concurrent duplicate delivery loses quietly."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(ImageEmbedding).values(rows).on_conflict_do_nothing()
    session.execute(statement)


def embed_images(
    session: Session,
    image_ids: Sequence[int],
    embedder: Embedder,
    space: EmbeddingSpace,
    update_status: bool = True,
) -> EmbedBatchResult:
    """Store one vector per image in `space`; commits. Images already embedded are skipped.

    `update_status=False` embeds into a secondary space (backbone comparison) without
    touching the images' pipeline status, which follows the active space.
    """
    result = EmbedBatchResult()
    done = set(
        session.scalars(
            select(ImageEmbedding.image_id).where(
                ImageEmbedding.space_id == space.id, ImageEmbedding.image_id.in_(image_ids)
            )
        )
    )
    images = session.scalars(
        select(Image).where(Image.id.in_(image_ids), Image.id.not_in(done)).order_by(Image.id)
    ).all()
    result.skipped = sorted(done)
    vectors, failed = embedder.embed_sources([partial(_open_stored, image) for image in images])
    result.failed = {images[position].id: reason for position, reason in failed.items()}
    embedded = [image for position, image in enumerate(images) if position not in failed]
    _insert_ignoring_existing(
        session,
        [
            {"image_id": image.id, "space_id": space.id, "vector": vector_to_bytes(vector)}
            for image, vector in zip(embedded, vectors, strict=True)
        ],
    )
    result.embedded = [image.id for image in embedded]
    if update_status:
        if result.embedded:
            session.execute(
                update(Image)
                .where(Image.id.in_(result.embedded), Image.status != ImageStatus.INDEXED)
                .values(status=ImageStatus.EMBEDDED, error=None, updated_at=utcnow())
            )
        _settle_skipped_claims(session, space, result.skipped)
        for image_id, reason in result.failed.items():
            _mark_failed(session, image_id, reason)
    session.commit()
    return result


def embed_in_batches(
    session: Session,
    image_ids: Sequence[int],
    embedder: Embedder,
    space: EmbeddingSpace,
    batch_size: int,
    *,
    update_status: bool = True,
    lease: Lease | None = None,
    on_claimed: Callable[[list[int]], object] | None = None,
    progress: Callable[[int], object] | None = None,
) -> EmbedBatchResult:
    """The one embed loop: `image_ids` through `embed_images`, `batch_size` at a time.

    With a `lease` each batch is claimed first (`claim_for_embedding`; `on_claimed` gets
    the ids held) and only the claimed images are embedded, under `claims.holding`.
    Failures are recorded per image; `progress` gets each batch's size. Commits per batch.
    """
    total = EmbedBatchResult()
    ids = list(image_ids)
    size = max(1, batch_size)
    for start in range(0, len(ids), size):
        batch = ids[start : start + size]
        if lease is None:
            total.add(embed_images(session, batch, embedder, space, update_status))
        else:
            claimed = claim_for_embedding(
                session, batch, holder=lease.holder, lease_s=lease.lease_s
            )
            if on_claimed is not None:
                on_claimed(claimed)
            total.unclaimed += [image_id for image_id in batch if image_id not in set(claimed)]
            with claims.holding(lease.database_url, claimed, lease.holder, lease.lease_s):
                if claimed:
                    total.add(embed_images(session, claimed, embedder, space, update_status))
        if progress is not None:
            progress(len(batch))
    return total


def _settle_skipped_claims(session: Session, space: EmbeddingSpace, image_ids: list[int]) -> None:
    """A claimed image that already had a vector moves on to where that vector is."""
    if not image_ids:
        return
    indexed = select(ImageEmbedding.image_id).where(
        ImageEmbedding.space_id == space.id, ImageEmbedding.indexed.is_(True)
    )
    claimed = (Image.id.in_(image_ids), Image.status == ImageStatus.CLAIMED)
    now = utcnow()
    session.execute(
        update(Image)
        .where(*claimed, Image.id.in_(indexed))
        .values(status=ImageStatus.INDEXED, error=None, indexed_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Image)
        .where(*claimed)
        .values(status=ImageStatus.EMBEDDED, error=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def _mark_failed(session: Session, image_id: int, reason: str) -> None:
    """The image cannot be embedded; its try was already counted by `claim_for_embedding`."""
    image = session.get(Image, image_id)
    if image is None:
        return
    image.status = ImageStatus.FAILED
    image.error = reason
    log.warning("image %s failed: %s", image_id, reason)


def claim_for_embedding(
    session: Session,
    image_ids: Sequence[int],
    max_attempts: int = MAX_ATTEMPTS,
    holder: str | None = None,
    lease_s: float = claims.DEFAULT_LEASE_S,
) -> list[int]:
    """Claim the free images of `image_ids` for `holder` (default: this process), counting
    one attempt each and failing those past `max_attempts`; returns the ids now held.

    The one place attempts are counted. Committed before the embedding starts, so a batch
    that kills its process every time gives up after `max_attempts` tries instead of being
    retried forever. See mammosearch.pipeline.claims for the lease.
    """
    return claims.claim(session, image_ids, holder or claims.holder_name(), lease_s, max_attempts)


def embed_missing(
    session: Session,
    space: EmbeddingSpace,
    embedder: Any,
    image_ids: Sequence[int],
    batch_size: int,
    progress: bool = False,
) -> tuple[int, dict[int, str]]:
    """Embed the images without a vector in `space` (their status untouched): (count, failures).

    For a space that is not the pipeline's (a report's comparison backbone): the images keep
    the status the active space gave them.
    """
    have = set(
        session.scalars(select(ImageEmbedding.image_id).where(ImageEmbedding.space_id == space.id))
    )
    missing = [image_id for image_id in image_ids if image_id not in have]
    bar = tqdm(
        total=len(missing), desc=f"embedding {space.backbone}", unit="img", leave=False,
        disable=not progress or not missing,
    )  # fmt: skip
    try:
        result = embed_in_batches(
            session, missing, embedder, space, batch_size, update_status=False, progress=bar.update
        )
    finally:
        bar.close()
    return len(result.embedded), result.failed
