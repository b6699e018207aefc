"""The port through which the core hands work on: a work queue, and its in-process version.

The core never imports Celery. Code that moves images forward (imports, sweeps, the watch
folder) is given a `WorkQueue` by its entry point (the CLI, the web app factory, a worker
task): `workers/` implements it over Celery when a broker is configured, and
`InProcessQueue` here runs the same pipeline at once in the calling process otherwise.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mammosearch.config import Settings

ProgressCallback = Callable[[dict[str, Any]], None]

QUEUES = ("ingest", "embed", "index", "evaluate", "train")
"""The work queues, in the order the data flows; workers/app.py routes every task to one."""


@dataclass(frozen=True)
class DispatchSummary:
    """What one hand-over did: tasks enqueued (broker) or the pipeline run (in-process)."""

    mode: str  # "broker" or "in-process"
    images: int  # images enqueued, or images the in-process pipeline handled
    tasks: int = 0  # tasks sent to the broker
    detail: dict[str, Any] = field(default_factory=dict)


class WorkQueue(Protocol):
    """Where the core sends embedding and indexing work; the entry point picks the kind."""

    mode: str  # "broker" or "in-process": reported by status and summaries

    def enqueue_embedding(
        self, image_ids: Sequence[int] | None = None, force: bool = False
    ) -> DispatchSummary:
        """Embed `image_ids` (default: every pending image) into the active space, then index
        (`force`: even those believed to be on their way already, e.g. released claims)."""
        ...

    def request_index(self, space_id: int, force: bool = False, verify: bool = False) -> bool:
        """Append the space's unindexed vectors to its indexes; True when a run was started
        or sent (`force`: even when one is believed to be waiting already; `verify`: then
        compare the indexes with the database and repair what differs)."""
        ...

    def enqueue_evaluation(
        self,
        label: str = "birads",
        trigger: str = "schedule",
        task_id: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> str:
        """Evaluate every active space (mammosearch.evaluate.scheduled); returns the task id
        the runs will carry (`task_id` and `progress`: in-process only, the caller's own)."""
        ...

    def depths(self) -> dict[str, Any]:
        """`{"mode": ..., "queues": {queue: waiting tasks}}`, plus `"error"` when unknown.

        Never raises: an unreachable broker is reported, since status is how one finds out.
        """
        ...


class InProcessQueue:
    """No broker: the work runs right here, before the call returns."""

    mode = "in-process"

    def __init__(self, settings: Settings, progress: bool = False) -> None:
        self.settings = settings
        self.progress = progress  # a progress bar on the terminal while embedding

    def enqueue_embedding(
        self, image_ids: Sequence[int] | None = None, force: bool = False
    ) -> DispatchSummary:
        # loads torch: only where the work runs here
        from mammosearch.pipeline import process

        if image_ids is not None and not image_ids:
            return DispatchSummary(mode=self.mode, images=0)
        summary = process.process_pending(
            self.settings, progress=self.progress, image_ids=image_ids
        )
        return DispatchSummary(
            mode=self.mode, images=summary.embedded + summary.failed, detail=summary.to_dict()
        )

    def request_index(self, space_id: int, force: bool = False, verify: bool = False) -> bool:
        from mammosearch.db.models import EmbeddingSpace
        from mammosearch.db.session import session_scope
        from mammosearch.pipeline import index_stage

        with session_scope(self.settings.database_url) as session:
            space = session.get(EmbeddingSpace, space_id)
            if space is None:
                raise ValueError(f"embedding space {space_id}: no such space to index")
            index_stage.index_space(session, self.settings, space)
            if verify:
                index_stage.verify_index(session, self.settings, space, repair=True)
        return True

    def enqueue_evaluation(
        self,
        label: str = "birads",
        trigger: str = "schedule",
        task_id: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> str:
        from mammosearch.evaluate.scheduled import run_scheduled_evaluations

        task_id = task_id or f"in-process-{uuid.uuid4().hex}"
        run_scheduled_evaluations(
            self.settings, progress, label=label, task_id=task_id, trigger=trigger
        )
        return task_id

    def depths(self) -> dict[str, Any]:
        return {"mode": self.mode, "queues": {}}
