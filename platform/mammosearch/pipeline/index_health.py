"""Can a space's index answer as the database says it should? One check for search, /readyz,
/metrics and the command line.

The database is the truth: the rows of image_embeddings marked indexed are what each metric's
index must hold. An index that holds fewer (a segment quarantined, the manifest unreadable
or gone, the index directory deleted) would answer with holes that read as "no similar
cases"; it is reported as being repaired, and search refuses (HTTP 503, a non-zero exit)
until the repair (pipeline.verify_index: the next index run, the sweep, the embedded
server, `mammosearch index verify --repair`) has rebuilt it from the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace, ImageEmbedding

if TYPE_CHECKING:
    from mammosearch.index import ShardedIndex


@dataclass(frozen=True)
class IndexHealth:
    """One (space, metric) index against the database."""

    space_id: int
    backbone: str
    metric: str
    expected: int  # rows the database lists as indexed
    served: int  # live vectors the index serves
    problems: tuple[str, ...] = ()  # damaged segments, an unreadable manifest (with paths)

    @property
    def whole(self) -> bool:
        return not self.problems and self.served >= self.expected

    @property
    def missing(self) -> int:
        return max(0, self.expected - self.served)

    def summary(self) -> str:
        """One line without paths (for public answers: /readyz, HTTP errors)."""
        return (
            f"the index of space {self.space_id} ({self.backbone}, {self.metric}) is being"
            f" repaired: it serves {self.served} of the {self.expected} images the database"
            " lists as indexed"
        )

    def message(self) -> str:
        """The summary, the first problem found, and what brings search back."""
        problem = f" ({self.problems[0]})" if self.problems else ""
        return (
            f"{self.summary()}{problem}. Search answers again once it is rebuilt from the"
            " database: by the next index run, the sweep, a running `mammosearch serve`, or"
            " `mammosearch index verify --repair`"
        )


class IndexRepairing(RuntimeError):
    """The index cannot serve all the database lists: search must not answer (HTTP 503)."""

    def __init__(self, health: IndexHealth) -> None:
        super().__init__(health.message())
        self.health = health


def indexed_count(session: Session, space_id: int) -> int:
    """Rows of the space marked indexed: what each of its indexes must serve."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(ImageEmbedding)
            .where(ImageEmbedding.space_id == space_id, ImageEmbedding.indexed.is_(True))
        )
        or 0
    )


def check_index(
    session: Session,
    settings: Settings,
    space: EmbeddingSpace,
    metric: str,
    index: ShardedIndex | None = None,
) -> IndexHealth:
    """The health of `space`'s `metric` index as this process's reader serves it.

    A shortfall is confirmed with a reload first: readers reload at most once a second,
    and an index run commits its manifest a moment before the rows it marks indexed.
    """
    from mammosearch.index import IndexCorruptError, IndexMismatchError, get_reader  # FAISS

    expected = indexed_count(session, space.id)
    known: dict[str, Any] = {"space_id": space.id, "backbone": space.backbone, "metric": metric}
    try:
        index = index if index is not None else get_reader(settings, space, metric)
        if index.damage or index.ntotal < expected:
            index.reload_if_changed()
    except (IndexCorruptError, IndexMismatchError, OSError) as error:
        return IndexHealth(**known, expected=expected, served=0, problems=(str(error),))
    return IndexHealth(**known, expected=expected, served=index.ntotal, problems=index.damage)


def serving_health(session: Session, settings: Settings) -> list[IndexHealth]:
    """The health of every index of every active space."""
    spaces = session.scalars(
        select(EmbeddingSpace).where(EmbeddingSpace.active.is_(True)).order_by(EmbeddingSpace.id)
    ).all()
    return [
        check_index(session, settings, space, metric)
        for space in spaces
        for metric in settings.index_metrics
    ]
