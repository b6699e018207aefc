"""Pending images -> vectors in the database -> appended to the space's indexes.

Two stages, each idempotent on its own, so any crash between them is repaired by running
them again:

1. `embed_images` stores a vector per (image, space) in image_embeddings; an image that
   already has one is skipped, and concurrent inserts of the same row are ignored.
2. `index_space` appends every stored-but-unindexed vector to each metric's index (which
   skips ids it already holds), commits the index manifests, and only then marks the rows
   indexed. A crash after the manifests but before the database commit leaves rows that
   the next run finds already indexed and just marks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from tqdm import tqdm

from mammosearch.config import Settings, get_settings
from mammosearch.db.models import EmbeddingSpace, Image, ImageEmbedding, ImageStatus, utcnow
from mammosearch.db.session import make_session_factory
from mammosearch.embed import Embedder, load_embedder_from_settings
from mammosearch.embed.spaces import get_or_create_space
from mammosearch.index import open_index

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
INDEX_BATCH = 5_000


@dataclass
class EmbedBatchResult:
    embedded: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


@dataclass
class PipelineSummary:
    embedding_space: dict[str, Any]
    embedded: int = 0
    failed: int = 0
    indexed: int = 0
    failures: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def vector_to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def vector_from_bytes(blob: bytes, dim: int) -> np.ndarray:
    vector = np.frombuffer(blob, dtype="<f4")
    if vector.shape != (dim,):
        raise ValueError(f"stored vector has {vector.shape[0]} values, space expects {dim}")
    return vector


def active_embedder(settings: Settings | None = None) -> Embedder:
    """The configured backbone (MAMMOSEARCH_BACKBONE), loaded once per process."""
    return load_embedder_from_settings(settings or get_settings())


def active_space(session: Session, settings: Settings | None = None) -> EmbeddingSpace:
    """The embedding space of the configured backbone, created on first use."""
    space = get_or_create_space(session, active_embedder(settings))
    session.commit()
    return space


def pending_image_ids(session: Session, limit: int | None = None) -> list[int]:
    """Images that still need a vector, oldest first."""
    query = (
        select(Image.id)
        .where(Image.status == ImageStatus.PENDING)
        .order_by(Image.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def _open_stored(image: Image) -> PILImage.Image:
    path = Path(image.stored_path)
    try:
        with PILImage.open(path) as opened:
            opened.load()
            return opened.copy()
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
    loaded: list[tuple[Image, PILImage.Image]] = []
    for image in images:
        try:
            loaded.append((image, _open_stored(image)))
        except ValueError as exc:
            result.failed[image.id] = str(exc)
    vectors = embedder.embed_pil([pil for _, pil in loaded]) if loaded else np.empty((0, 0))
    _insert_ignoring_existing(
        session,
        [
            {"image_id": image.id, "space_id": space.id, "vector": vector_to_bytes(vector)}
            for (image, _), vector in zip(loaded, vectors, strict=True)
        ],
    )
    result.embedded = [image.id for image, _ in loaded]
    if update_status:
        if result.embedded:
            session.execute(
                update(Image)
                .where(Image.id.in_(result.embedded), Image.status != ImageStatus.INDEXED)
                .values(status=ImageStatus.EMBEDDED, error=None, updated_at=utcnow())
            )
        for image_id, reason in result.failed.items():
            _mark_failed(session, image_id, reason)
    session.commit()
    return result


def _mark_failed(session: Session, image_id: int, reason: str) -> None:
    """The image cannot be embedded; its try was already counted by `claim_for_embedding`."""
    image = session.get(Image, image_id)
    if image is None:
        return
    image.status = ImageStatus.FAILED
    image.error = reason
    log.warning("image %s failed: %s", image_id, reason)


def claim_for_embedding(
    session: Session, image_ids: Sequence[int], max_attempts: int = MAX_ATTEMPTS
) -> list[int]:
    """Count one more attempt for each still-pending image; fail those past `max_attempts`.

    The one place attempts are counted. Run (and committed) before the embedding starts,
    so a batch that kills its process every time (a poison image, an out-of-memory) gives
    up after `max_attempts` tries instead of being retried forever. Returns the ids still
    worth embedding.
    """
    if not image_ids:
        return []
    pending = Image.status == ImageStatus.PENDING
    session.execute(
        update(Image)
        .where(Image.id.in_(list(image_ids)), pending)
        .values(attempts=Image.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Image)
        .where(Image.id.in_(list(image_ids)), pending, Image.attempts > max_attempts)
        .values(
            status=ImageStatus.FAILED,
            error=f"gave up after {max_attempts} attempts (the process embedding it died or "
            "its task was lost each time; see the worker log)",
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    claimed = list(
        session.scalars(
            select(Image.id).where(Image.id.in_(list(image_ids)), pending).order_by(Image.id)
        )
    )
    session.commit()
    return claimed


def index_space(
    session: Session, settings: Settings, space: EmbeddingSpace, update_status: bool = True
) -> int:
    """Append the space's embedded-but-unindexed vectors to every metric index; commits.

    The caller must be the only index writer for this space (a lock or a queue with one
    consumer). Returns how many rows became indexed.
    """
    indexes = [open_index(settings, space, metric) for metric in settings.index_metrics]
    total = 0
    while True:
        rows = session.execute(
            select(ImageEmbedding.image_id, ImageEmbedding.vector)
            .where(ImageEmbedding.space_id == space.id, ImageEmbedding.indexed.is_(False))
            .order_by(ImageEmbedding.image_id)
            .limit(INDEX_BATCH)
        ).all()
        if not rows:
            return total
        ids = np.array([row.image_id for row in rows], dtype=np.int64)
        vectors = np.stack([vector_from_bytes(row.vector, space.dim) for row in rows])
        for index in indexes:
            index.add(ids, vectors)  # skips ids already present: safe to repeat
        session.execute(
            update(ImageEmbedding)
            .where(ImageEmbedding.space_id == space.id, ImageEmbedding.image_id.in_(ids.tolist()))
            .values(indexed=True)
        )
        if update_status:
            now = utcnow()
            session.execute(
                update(Image)
                .where(Image.id.in_(ids.tolist()))
                .values(status=ImageStatus.INDEXED, error=None, indexed_at=now, updated_at=now)
            )
        session.commit()
        total += len(rows)


def process_pending(
    settings: Settings | None = None,
    progress: bool = False,
    limit: int | None = None,
    image_ids: Sequence[int] | None = None,
) -> PipelineSummary:
    """The in-process pipeline: embed every pending image (or those of `image_ids` still
    pending) in batches, then index them."""
    settings = settings or get_settings()
    embedder = active_embedder(settings)
    session = make_session_factory(settings.database_url)()
    try:
        space = get_or_create_space(session, embedder)
        session.commit()
        summary = PipelineSummary(embedding_space=space.describe())
        pending = pending_image_ids(session, limit) if image_ids is None else list(image_ids)
        bar = tqdm(
            total=len(pending),
            desc=f"embedding ({space.backbone})",
            unit="img",
            disable=not progress or not pending,
        )
        batch_size = max(1, settings.embed_batch_size)
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            claimed = claim_for_embedding(session, batch)
            result = embed_images(session, claimed, embedder, space)
            summary.embedded += len(result.embedded)
            summary.failed += len(result.failed)
            summary.failures.update(result.failed)
            bar.update(len(batch))
        bar.close()
        summary.indexed = index_space(session, settings, space)
        return summary
    finally:
        session.close()


def verify_index(
    session: Session, settings: Settings, space: EmbeddingSpace, repair: bool = False
) -> dict[str, Any]:
    """Compare each metric index with the database, the truth; optionally repair.

    Finds vectors with no row (in the index, not in image_embeddings as indexed) and rows
    with no vector (marked indexed, absent from the index). Repair removes the former and
    re-appends the latter from the stored vectors.
    """
    expected = set(
        session.scalars(
            select(ImageEmbedding.image_id).where(
                ImageEmbedding.space_id == space.id, ImageEmbedding.indexed.is_(True)
            )
        )
    )
    unindexed = session.scalar(
        select(ImageEmbedding.image_id)
        .where(ImageEmbedding.space_id == space.id, ImageEmbedding.indexed.is_(False))
        .limit(1)
    )
    report: dict[str, Any] = {"embedding_space": space.describe(), "metrics": {}}
    missing_anywhere: set[int] = set()
    for metric in settings.index_metrics:
        index = open_index(settings, space, metric)
        present = set(index.ids().tolist())
        orphans = sorted(present - expected)
        missing = sorted(expected - present)
        report["metrics"][metric] = {
            "vectors": len(present),
            "rows": len(expected),
            "vectors_without_row": orphans,
            "rows_without_vector": missing,
        }
        if repair and orphans:
            index.remove(np.array(orphans, dtype=np.int64))
        missing_anywhere.update(missing)
    report["unindexed_rows"] = unindexed is not None
    report["clean"] = all(
        not m["vectors_without_row"] and not m["rows_without_vector"]
        for m in report["metrics"].values()
    )
    if repair and (missing_anywhere or unindexed is not None):
        if missing_anywhere:
            session.execute(
                update(ImageEmbedding)
                .where(
                    ImageEmbedding.space_id == space.id,
                    ImageEmbedding.image_id.in_(sorted(missing_anywhere)),
                )
                .values(indexed=False)
            )
            session.commit()
        report["repaired_rows"] = index_space(session, settings, space)
    report["repaired"] = repair
    return report


def remove_images(
    session: Session, settings: Settings, image_ids: Sequence[int], reason: str = "removed"
) -> int:
    """Take images out of search: tombstone them in every index, drop their vectors.

    The image row and file stay (the archive is the record); status `removed` keeps the
    pipeline and the reconciliation sweep from bringing them back.
    """
    ids = np.array(sorted(set(image_ids)), dtype=np.int64)
    for space in session.scalars(select(EmbeddingSpace)).all():
        for metric in settings.index_metrics:
            open_index(settings, space, metric).remove(ids)
    session.execute(delete(ImageEmbedding).where(ImageEmbedding.image_id.in_(ids.tolist())))
    session.execute(
        update(Image)
        .where(Image.id.in_(ids.tolist()))
        .values(status=ImageStatus.REMOVED, error=reason, indexed_at=None, updated_at=utcnow())
    )
    session.commit()
    return len(ids)


def space_vectors(session: Session, space: EmbeddingSpace) -> tuple[np.ndarray, np.ndarray]:
    """All of a space's stored vectors as (ids, vectors): the input of rebuilds and reports."""
    rows = session.execute(
        select(ImageEmbedding.image_id, ImageEmbedding.vector)
        .where(ImageEmbedding.space_id == space.id)
        .order_by(ImageEmbedding.image_id)
    ).all()
    ids = np.array([row.image_id for row in rows], dtype=np.int64)
    if not rows:
        return ids, np.empty((0, space.dim), dtype=np.float32)
    return ids, np.stack([vector_from_bytes(row.vector, space.dim) for row in rows])


def rebuild_indexes(session: Session, settings: Settings, space: EmbeddingSpace) -> int:
    """Build every metric index of `space` afresh from the database's vectors, then swap.

    The new index is written beside the old one and moved into place with renames, so
    readers see either the old index or the complete new one.
    """
    import shutil
    import time

    from mammosearch.index import ShardedIndex

    ids, vectors = space_vectors(session, space)
    for metric in settings.index_metrics:
        current = open_index(settings, space, metric)
        root = current.root
        staging = root.with_name(f"{root.name}.rebuild-{int(time.time())}")
        fresh = ShardedIndex(
            root=staging,
            dim=space.dim,
            metric=metric,
            segment_size=settings.index_segment_size,
            factory=settings.index_factory,
            identity=space.describe(),
        )
        for start in range(0, len(ids), INDEX_BATCH):
            fresh.add(ids[start : start + INDEX_BATCH], vectors[start : start + INDEX_BATCH])
        retired = root.with_name(f"{root.name}.retired-{int(time.time())}")
        if root.exists():
            root.rename(retired)
        staging.rename(root)
        shutil.rmtree(retired, ignore_errors=True)
    session.execute(
        update(ImageEmbedding).where(ImageEmbedding.space_id == space.id).values(indexed=True)
    )
    session.commit()
    return len(ids)
