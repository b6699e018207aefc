"""A training run's (stage, details) -> fold, epochs done and estimated time left.

The trainer reports every epoch as ("fold 2/5[ member 1/2]" or "final model", {"epoch",
"epochs", ...}); automatic training and the page's training jobs both turn that into the
same record and the same line, so the Models page reads one kind of progress.
"""

from __future__ import annotations

import re
import time
from typing import Any

_FOLD = re.compile(r"fold (\d+)/(\d+)(?: member (\d+)/(\d+))?")
_MEMBER = re.compile(r"member (\d+)/(\d+)")


class ProgressClock:
    """Epochs done over the whole run (the folds, then the final model) and the time left,
    from this process's own epoch rate (a resumed run measures its rate afresh)."""

    def __init__(self, folds: int, epochs: int, ensemble: int) -> None:
        self.folds, self.epochs, self.ensemble = folds, epochs, ensemble
        self.total_epochs = (folds + 1) * epochs * ensemble  # the folds, then the final model
        self.first: tuple[float, int] | None = None  # (time, epochs done) of this process's first

    def epochs_done(self, stage: str, epoch: int) -> tuple[int, int | None]:
        """(epochs done over the whole run, the fold number or None for the final model)."""
        member = _MEMBER.search(stage)
        member_index = int(member.group(1)) - 1 if member else 0
        fold = _FOLD.match(stage)
        split = int(fold.group(1)) - 1 if fold else self.folds
        done = (split * self.ensemble + member_index) * self.epochs + epoch
        return done, (split + 1 if fold else None)

    def progress(self, stage: str, details: dict[str, Any]) -> dict[str, Any]:
        """The record's `progress`: the stage and details, with fold and time left at an epoch."""
        progress: dict[str, Any] = {"stage": stage, **details}
        if "epoch" not in details:
            return progress
        done, fold = self.epochs_done(stage, int(details["epoch"]))
        now = time.monotonic()
        if self.first is None:  # the rate is measured from this process's first epoch
            self.first = (now, done)
        eta_s = None
        if done > self.first[1]:
            rate_s = (now - self.first[0]) / (done - self.first[1])
            eta_s = round(rate_s * (self.total_epochs - done))
        progress.update(
            fold=fold, folds=self.folds, epochs_done=done, total_epochs=self.total_epochs,
            eta_s=eta_s,
        )  # fmt: skip
        return progress


def progress_line(progress: dict[str, Any]) -> str:
    """ "fold 2/5, epoch 3/15, about 6 min left" (or the final model's, or the stage)."""
    if progress.get("fold"):
        where = f"fold {progress['fold']}/{progress['folds']}"
    elif "epoch" in progress:
        where = "final model"
    else:  # before the epochs: the stage, with how far caching has gone when it says
        stage = str(progress.get("stage") or "starting")
        if "total" in progress:
            stage += f" ({progress['done']}/{progress['total']} images)"
        return stage
    text = f"{where}, epoch {progress['epoch']}/{progress['epochs']}"
    if progress.get("eta_s") is not None:
        text += f", about {max(1, round(progress['eta_s'] / 60))} min left"
    return text
