"""Stage 2: stored vectors -> each metric's index, and the upkeep that keeps them whole.

`index_space` appends every stored-but-unindexed vector to each metric's index (which skips
ids it already holds), commits the index manifests, and only then marks the rows indexed.
A crash after the manifests but before the database commit leaves rows that the next run
finds already indexed and just marks. `verify_index`, `rebuild_indexes` and `remove_images`
compare with, rebuild from and take out of the indexes the database's truth.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace, Image, ImageEmbedding, ImageStatus, utcnow
from mammosearch.durable.faults import fault_point
from mammosearch.embed.serving import serving_space
from mammosearch.index import (
    IndexCorruptError,
    IndexMismatchError,
    ShardedIndex,
    clear_readers,
    open_index,
    space_writer_lock,
)
from mammosearch.pipeline import claims

log = logging.getLogger(__name__)

INDEX_BATCH = 5_000


def vector_from_bytes(blob: bytes, dim: int) -> np.ndarray:
    vector = np.frombuffer(blob, dtype="<f4")
    if vector.shape != (dim,):
        raise ValueError(f"stored vector has {vector.shape[0]} values, space expects {dim}")
    return vector


def index_space(
    session: Session,
    settings: Settings,
    space: EmbeddingSpace,
    update_status: bool = True,
    lock_wait_s: float | None = None,
) -> int:
    """Append the space's embedded-but-unindexed vectors to every metric index; commits.

    Holds the space's writer lock (IndexBusy after `lock_wait_s`; None: wait). Returns how
    many rows became indexed.
    """
    with space_writer_lock(settings.index_dir, space.id, "append", lock_wait_s):
        healed = _heal(session, settings, space, update_status)
        return healed + _append_unindexed(session, settings, space, update_status)


def _heal(session: Session, settings: Settings, space: EmbeddingSpace, update_status: bool) -> int:
    """Rebuild from the database what an index lost (quarantined segments, a lost or
    unreadable manifest, a deleted directory) before appending; returns the rows re-appended.

    A sound index costs one count: the full comparison (verify with repair) runs only when
    an index cannot be opened, has damage, or serves fewer vectors than the rows marked
    indexed. Called under the space's writer lock.
    """
    from mammosearch.pipeline.index_health import indexed_count

    expected = indexed_count(session, space.id)
    for metric in settings.index_metrics:
        try:
            index = open_index(settings, space, metric)
        except (IndexCorruptError, IndexMismatchError) as error:
            log.error("index of space %s (%s) cannot be opened: %s", space.id, metric, error)
            break
        if index.damage or index.ntotal < expected:
            log.error(
                "index of space %s (%s) serves %d of %d indexed rows%s; rebuilding the rest"
                " from the database", space.id, metric, index.ntotal, expected,
                f" ({'; '.join(index.damage)})" if index.damage else "",
            )  # fmt: skip
            break
    else:
        return 0
    report = _verify_locked(session, settings, space, True, update_status)
    return int(report.get("repaired_rows", 0))


def _append_unindexed(
    session: Session, settings: Settings, space: EmbeddingSpace, update_status: bool
) -> int:
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


def verify_index(
    session: Session,
    settings: Settings,
    space: EmbeddingSpace,
    repair: bool = False,
    lock_wait_s: float | None = None,
    update_status: bool | None = None,
) -> dict[str, Any]:
    """Compare each metric index with the database, the truth; optionally repair.

    Finds vectors with no row (in the index, not in image_embeddings as indexed), rows
    with no vector (marked indexed, absent from the index) and stray files (left by an
    interrupted write). Repair removes the first and the last, and re-appends the rows
    from the stored vectors. Runs under the space's writer lock, so an append in flight
    (manifest committed, rows not yet) is never mistaken for a mismatch. `update_status`
    of re-appended images: None follows the serving space.
    """
    with space_writer_lock(settings.index_dir, space.id, "verify", lock_wait_s):
        return _verify_locked(session, settings, space, repair, update_status)


def _verify_locked(
    session: Session,
    settings: Settings,
    space: EmbeddingSpace,
    repair: bool,
    update_status: bool | None,
) -> dict[str, Any]:
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
        index, damaged = _index_to_verify(settings, space, metric, repair)
        if index is not None:
            damaged += index.verify()  # re-hashed; damage quarantined, never served
        present = set(index.ids().tolist()) if index is not None else set()
        orphans = sorted(present - expected)
        missing = sorted(expected - present)
        strays = [] if index is None else index.stray_files() + _legacy_rebuild_dirs(index.root)
        report["metrics"][metric] = {
            "vectors": len(present),
            "rows": len(expected),
            "vectors_without_row": orphans,
            "rows_without_vector": missing,
            "stray_files": strays,
            "damaged": damaged,
        }
        if repair and orphans and index is not None:
            index.remove(np.array(orphans, dtype=np.int64))
        if repair and strays and index is not None:
            index.discard_strays()
            _remove_legacy_rebuild_dirs(index.root)
        missing_anywhere.update(missing)
    abandoned = claims.abandoned(session, settings.claim_lease_s)
    report["abandoned_claims"] = len(abandoned)
    if repair and abandoned:
        report["released_claims"] = len(claims.release_abandoned(session, settings.claim_lease_s))
    report["unindexed_rows"] = unindexed is not None
    report["clean"] = not abandoned and all(
        not m["vectors_without_row"]
        and not m["rows_without_vector"]
        and not m["stray_files"]
        and not m["damaged"]
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
        if update_status is None:
            update_status = _is_serving(session, settings, space)
        report["repaired_rows"] = _append_unindexed(session, settings, space, update_status)
    report["repaired"] = repair
    if not report["clean"]:
        log.warning(
            "index of space %s disagrees with the database%s: %s",
            space.id,
            " (repaired)" if repair else "",
            {
                m: {k: len(v) for k, v in found.items() if isinstance(v, list) and v}
                for m, found in report["metrics"].items()
            },
        )
    return report


def _index_to_verify(
    settings: Settings, space: EmbeddingSpace, metric: str, repair: bool
) -> tuple[ShardedIndex | None, list[str]]:
    """The index to compare with the database, and why it could not be opened as it was.

    A manifest that cannot be read (or is another space's): with `repair` its directory is
    set aside and the comparison starts from an empty index (every row re-appended);
    without, None: nothing is served, so the report shows every row missing.
    """
    try:
        return open_index(settings, space, metric), []
    except (IndexMismatchError, IndexCorruptError) as error:
        if repair:
            return _index_for_rebuild(settings, space, metric), [str(error)]
        return None, [str(error)]


def _is_serving(session: Session, settings: Settings, space: EmbeddingSpace) -> bool:
    """Image status follows the serving space only (a re-embedding space does not)."""
    serving = serving_space(session, settings)
    return serving is None or serving.id == space.id


def _legacy_rebuild_dirs(root: Path) -> list[str]:
    """`<metric>.rebuild-*` / `<metric>.retired-*` beside the index: older rebuilds' leftovers."""
    if not root.parent.is_dir():
        return []
    return sorted(
        path.name
        for pattern in (f"{root.name}.rebuild-*", f"{root.name}.retired-*")
        for path in root.parent.glob(pattern)
    )


def _remove_legacy_rebuild_dirs(root: Path) -> None:
    for name in _legacy_rebuild_dirs(root):
        shutil.rmtree(root.parent / name, ignore_errors=True)


def remove_images(
    session: Session, settings: Settings, image_ids: Sequence[int], reason: str = "removed"
) -> int:
    """Take images out of search: tombstone them in every index, drop their vectors.

    The image row and file stay (the archive is the record); status `removed` keeps the
    pipeline and the reconciliation sweep from bringing them back.
    """
    ids = np.array(sorted(set(image_ids)), dtype=np.int64)
    spaces = session.scalars(select(EmbeddingSpace).order_by(EmbeddingSpace.id)).all()
    with ExitStack() as locks:  # every space's lock, in id order: no append can bring one back
        for space in spaces:
            locks.enter_context(space_writer_lock(settings.index_dir, space.id, "remove"))
        for space in spaces:
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


def indexed_vectors(session: Session, space: EmbeddingSpace) -> tuple[np.ndarray, np.ndarray]:
    """The vectors the database says are indexed, as (ids, vectors): what a rebuild holds."""
    rows = session.execute(
        select(ImageEmbedding.image_id, ImageEmbedding.vector)
        .where(ImageEmbedding.space_id == space.id, ImageEmbedding.indexed.is_(True))
        .order_by(ImageEmbedding.image_id)
    ).all()
    ids = np.array([row.image_id for row in rows], dtype=np.int64)
    if not rows:
        return ids, np.empty((0, space.dim), dtype=np.float32)
    return ids, np.stack([vector_from_bytes(row.vector, space.dim) for row in rows])


def rebuild_indexes(
    session: Session,
    settings: Settings,
    space: EmbeddingSpace,
    lock_wait_s: float | None = None,
    update_status: bool | None = None,
) -> int:
    """Build every metric index of `space` afresh from the database's vectors; commits.

    Under the space's writer lock (appends wait, none is lost): each index is rewritten to
    hold exactly the rows marked indexed, swapped in by one atomic manifest replace
    (ShardedIndex.replace_all), then the rows not yet indexed are appended as any index run
    would, so no row is marked indexed without its vector. Killed at any step, each index
    is whole (old or new) and agrees with the database; an interrupted rebuild's files are
    removed by the next rebuild or by the sweep's verify. `update_status` of the appended
    images: None follows the serving space. Returns vectors per metric.
    """
    with space_writer_lock(settings.index_dir, space.id, "rebuild", lock_wait_s):
        fault_point("rebuild:locked")
        ids, vectors = indexed_vectors(session, space)
        fault_point("rebuild:read")
        for metric in settings.index_metrics:
            index = _index_for_rebuild(settings, space, metric)
            _remove_legacy_rebuild_dirs(index.root)
            index.replace_all(ids, vectors)
            fault_point(f"rebuild:swapped-{metric}")
        if update_status is None:
            update_status = _is_serving(session, settings, space)
        appended = _append_unindexed(session, settings, space, update_status)
        fault_point("rebuild:appended")
    return len(ids) + appended


def _index_for_rebuild(settings: Settings, space: EmbeddingSpace, metric: str) -> ShardedIndex:
    """The index to rebuild in place; one that cannot be opened is set aside first.

    A manifest for another space or a corrupt one cannot be replaced atomically (it cannot
    be read); its directory is renamed to `<metric>.broken-<time>` for the operator, and the
    rebuild starts from an empty index. Killed after that rename, the index is empty and
    the sweep's verify re-appends every row.
    """
    try:
        return open_index(settings, space, metric)
    except (IndexMismatchError, IndexCorruptError) as error:
        root = settings.layout.index_root(space.id, metric)
        aside = root.with_name(f"{metric}.broken-{time.time_ns()}")
        log.warning("%s cannot be opened (%s); set aside as %s, rebuilding", root, error, aside)
        root.rename(aside)
        clear_readers()
        return open_index(settings, space, metric)
