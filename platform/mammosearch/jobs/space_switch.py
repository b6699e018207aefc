"""Moving the archive to a new embedding space without a moment where search answers nothing.

1. `reembed`: embed every searchable image into the new space (its own vectors and
   indexes; the images' status keeps following the serving space), in batches.
2. `activate`: catch up what arrived meanwhile, verify the new space's indexes against the
   database, then switch the serving record in one atomic replace. Until then search stays
   on the old space; from then on every process embeds and searches with the new one.
3. `drop`: remove a space that no longer serves (its vectors and index files).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace, Image, ImageEmbedding, ImageStatus
from mammosearch.embed.serving import embedder_for, serving_space
from mammosearch.embed.serving_record import read_serving, write_serving
from mammosearch.embed.spaces import find_space, get_or_create_space

SEARCHABLE = (ImageStatus.INDEXED, ImageStatus.EMBEDDED, ImageStatus.PENDING)


class SpaceSwitchError(ValueError):
    """A switch that would leave search incomplete; the message says what is missing."""


def missing_image_ids(session: Session, space: EmbeddingSpace) -> list[int]:
    """Searchable images without an indexed vector in `space`."""
    indexed = select(ImageEmbedding.image_id).where(
        ImageEmbedding.space_id == space.id, ImageEmbedding.indexed.is_(True)
    )
    return list(
        session.scalars(
            select(Image.id)
            .where(Image.status.in_([ImageStatus.INDEXED]), Image.id.not_in(indexed))
            .order_by(Image.id)
        )
    )


def space_progress(session: Session, space: EmbeddingSpace) -> dict[str, Any]:
    """How far a space is: searchable images, and how many have a vector / an indexed one."""
    searchable = session.scalar(
        select(func.count()).select_from(Image).where(Image.status == ImageStatus.INDEXED)
    )
    counts = dict(
        session.execute(
            select(ImageEmbedding.indexed, func.count())
            .where(ImageEmbedding.space_id == space.id)
            .group_by(ImageEmbedding.indexed)
        ).all()
    )
    indexed = int(counts.get(True, 0))
    return {
        "space": space.describe(),
        "searchable_images": int(searchable or 0),
        "embedded": indexed + int(counts.get(False, 0)),
        "indexed": indexed,
        "missing": len(missing_image_ids(session, space)),
    }


def embed_into_space(
    session: Session,
    settings: Settings,
    backbone: str,
    image_ids: list[int],
    progress: Callable[[int], object] | None = None,
) -> int:
    """Embed and index `image_ids` into `backbone`'s space; the images' status is untouched."""
    from mammosearch.pipeline.embed_stage import embed_in_batches
    from mammosearch.pipeline.index_stage import index_space

    embedder = embedder_for(settings, backbone)
    space = get_or_create_space(session, embedder)
    session.commit()
    embed_in_batches(
        session, image_ids, embedder, space, settings.embed_batch_size,
        update_status=False, progress=progress,
    )  # fmt: skip
    return index_space(session, settings, space, update_status=False)


def activate(
    session: Session,
    settings: Settings,
    backbone: str,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Catch up, verify, then make `backbone` the serving one in one atomic step."""
    from mammosearch.pipeline.index_stage import verify_index

    embedder = embedder_for(settings, backbone)
    space = find_space(session, embedder.identity)
    if space is None:
        raise SpaceSwitchError(
            f"{backbone}: no space yet; run `mammosearch spaces reembed {backbone}` first"
        )
    missing = missing_image_ids(session, space)
    if missing:
        embed_into_space(session, settings, backbone, missing, progress)
    still_missing = missing_image_ids(session, space)
    if still_missing:
        raise SpaceSwitchError(
            f"space {space.id}: {len(still_missing)} searchable images could not be embedded "
            f"(e.g. image {still_missing[0]}); search stays on the current space"
        )
    report = verify_index(session, settings, space)
    if not report["clean"]:
        raise SpaceSwitchError(
            f"space {space.id}: its indexes do not match the database "
            "(`mammosearch index verify --repair` with --backbone); search stays where it is"
        )
    record = write_serving(settings.data_dir, backbone, space.describe())
    space.active = True
    session.commit()
    # Images a worker embedded into the old space during the switch: bring them over too.
    late = missing_image_ids(session, space)
    if late:
        embed_into_space(session, settings, backbone, late, progress)
    return {**record, "progress": space_progress(session, space)}


def drop_space(session: Session, settings: Settings, space: EmbeddingSpace) -> dict[str, Any]:
    """Remove a space that does not serve: its vectors and its index folders."""
    serving = serving_space(session, settings)
    if serving is not None and serving.id == space.id:
        raise SpaceSwitchError(
            f"space {space.id} serves search now; activate another space before dropping it"
        )
    removed = cast(  # a DELETE's result is a CursorResult; Session.execute types it as Result
        "CursorResult[Any]",
        session.execute(delete(ImageEmbedding).where(ImageEmbedding.space_id == space.id)),
    ).rowcount
    space.active = False
    session.commit()
    folder = settings.layout.space_dir(space.id)
    shutil.rmtree(folder, ignore_errors=True)
    from mammosearch.index import clear_readers

    clear_readers()
    return {"space": space.describe(), "vectors_removed": int(removed or 0)}


def serving_summary(settings: Settings) -> dict[str, Any] | None:
    return read_serving(settings.data_dir)
