"""Trained by default: the archive's own model, trained in the background and switched to
only when it wins.

When the archive holds enough labelled images (MAMMOSEARCH_AUTO_TRAIN_MIN_IMAGES, with at
least MAMMOSEARCH_AUTO_TRAIN_MIN_CLASSES classes) and no trained model serves, `run_auto_train`
trains one: with `train`'s defaults on a CPU, with the strongest setting measured (GeM,
320 px, two seeds) when a CUDA GPU is present (`choose_setting`). Its cross-validation
already scores the base space on the same folds; the model wins when its pooled out-of-fold
P@5 beats the base's by more than the fold noise: the larger of MAMMOSEARCH_AUTO_TRAIN_MIN_GAIN
(0.015, the noise measured between seeds and splits in docs/learned-embeddings.md) and the
spread (sample standard deviation) of the per-fold gains. A winner is re-embedded into its
own space and activated (space_switch.activate: search stays on the old space until the new
one is complete and verified); a loser is kept registered, the base keeps serving, and the
record says why. Once the labelled archive has grown by MAMMOSEARCH_AUTO_TRAIN_GROWTH (a
quarter) it is judged again the same way. The space that served before is recorded for a
one-click rollback.

One run at a time, everywhere, under a file lock in the data dir (mammosearch.durable.file_lock);
its state and progress (fold, epoch, estimated time left) are in DATA_DIR/models/auto-train.json,
replaced atomically, which the pages' banner and the admin Models page read. A run that was
killed resumes: training from its work folder (`<out>.work/`, the trainer's checkpoints), a
switch that had not finished from its re-embedding. Framework-free: the embedded `serve`
starts `mammosearch auto-train --watch` beside it, a Celery beat task calls it in a stack.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from mammosearch.config import Settings
from mammosearch.durable.atomic_files import read_json_record, write_json_record
from mammosearch.durable.file_lock import LockHeld, exclusive_file_lock, is_held
from mammosearch.train.progress import ProgressClock, progress_line

log = logging.getLogger(__name__)

STATE_FILE = "auto-train.json"
LOCK_FILE = ".auto-train.lock"
MODEL_PREFIX = "auto-"
COMPARED_METRIC = "precision@5"
NICE_INCREMENT = 10
"""Training's CPU priority below search's (os.nice): search stays responsive while it runs."""
ACTIVE_STATES = ("training", "re-embedding", "switching")
"""States in which a run is under way (or was, when its process died: it resumes)."""


class Trainer(Protocol):
    """`train_run.run_training`'s signature: writes a model directory and returns its path."""

    def __call__(
        self, session: Any, config: Any, out_dir: Path, command_line: str, *,
        name: str | None, overwrite: bool, quiet: bool,
        status: Callable[[str, dict[str, Any]], None] | None,
        setting: dict[str, Any] | None,
    ) -> Path: ...  # fmt: skip


def state_path(settings: Settings) -> Path:
    return settings.layout.models_dir / STATE_FILE


def work_out_dir(settings: Settings) -> Path:
    """Where the running job writes its model: fixed, so a restarted run finds its work folder."""
    return settings.layout.trained_dir / "auto-next"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_state(settings: Settings) -> dict[str, Any]:
    """The record the pages show; `{}` before the first check."""
    return read_json_record(state_path(settings))


def write_state(settings: Settings, record: dict[str, Any]) -> dict[str, Any]:
    return write_json_record(state_path(settings), {**record, "updated_at": _now()})


def lock_path(settings: Settings) -> Path:
    return settings.layout.models_dir / LOCK_FILE


def is_running(record: dict[str, Any]) -> bool:
    """The record says a run is under way (or was, when its process died)."""
    return record.get("state") in ACTIVE_STATES


def under_way(settings: Settings) -> dict[str, Any] | None:
    """The record of a run that is going on now (its lock held), else None: the banner's.

    A record left at "training" by a process that died is not shown as running: it
    resumes at the next check.
    """
    record = read_state(settings)
    if is_running(record) and is_held(lock_path(settings)):
        return record
    return None


def summary_line(record: dict[str, Any]) -> str:
    """One line for the banner, the page and the CLI: what the run does now, or why not."""
    progress = record.get("progress") or {}
    if record.get("state") == "training":
        return f"training {(record.get('run') or {}).get('model', '')}: {progress_line(progress)}"
    if record.get("state") in ("re-embedding", "switching"):
        done = f" ({progress['done']}/{progress['total']} images)" if "total" in progress else ""
        target = record.get("switching_to") or (record.get("run") or {}).get("model", "")
        return f"re-embedding the archive into {target}'s space, then switching search to it{done}"
    if record.get("busy"):
        return str(record["busy"])
    reasons = [record.get("error"), record.get("reason"), (record.get("check") or {}).get("reason")]
    return "; ".join(str(reason) for reason in reasons if reason) or "not checked yet"


# --- The decision ----------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Whether to train now, and why (shown on the Models page either way)."""

    train: bool
    reason: str
    labelled_images: int = 0
    classes: int = 0


def labelled_counts(session: Any, label: str = "birads") -> tuple[int, int]:
    """(images with `label`, distinct classes among them), by the training set's own rule."""
    from sqlalchemy import select

    from mammosearch.db.models import Image
    from mammosearch.evaluate.labels import get_label

    spec = get_label(label)
    values = [spec.of_image(row) for row in session.scalars(select(Image))]
    present = [value for value in values if value is not None]
    return len(present), len(set(present))


def serving_trained_model(settings: Settings) -> Any:
    """The registered trained model that serves search now, or None (a base space serves)."""
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.serving_record import serving_backbone
    from mammosearch.embed.trained import ModelDirError, find_trained_model

    try:
        return find_trained_model(
            serving_backbone(settings.backbone, settings.data_dir), registry_dir(settings)
        )
    except ModelDirError:
        return None


def decide(settings: Settings, session: Any, record: dict[str, Any]) -> Decision:
    """Train now? Enough labels, nothing trained serving, or the archive grew by a quarter."""
    if not settings.auto_train:
        return Decision(False, "automatic training is off (MAMMOSEARCH_AUTO_TRAIN=0)")
    if settings.backbone != "auto":
        return Decision(
            False, f"MAMMOSEARCH_BACKBONE={settings.backbone} pins the space: no automatic switch"
        )
    images, classes = labelled_counts(session)
    if images < settings.auto_train_min_images or classes < settings.auto_train_min_classes:
        return Decision(
            False,
            f"{images} BIRADS-labelled images in {classes} classes; training starts at "
            f"{settings.auto_train_min_images} images in {settings.auto_train_min_classes} "
            "classes",
            images,
            classes,
        )
    if is_running(record) and (record.get("run") or {}).get("images") == images:
        return Decision(True, "resuming the interrupted run", images, classes)
    serving = serving_trained_model(settings)
    if serving is not None:
        trained_on = int((serving.record.get("training_images") or {}).get("count") or 0)
        what = f"the serving model {serving.name} was trained on {trained_on} labelled images"
    else:
        trained_on = int(record.get("trained_on_images") or 0)
        what = f"the last run was on {trained_on} labelled images"
        if not trained_on:
            return Decision(True, f"{images} labelled images and no trained model", images, classes)
    grown_at = int(trained_on * (1 + settings.auto_train_growth)) + 1
    if images >= grown_at:
        return Decision(True, f"{what}; the archive has grown to {images}", images, classes)
    return Decision(
        False, f"{what}; retrains at {grown_at} labelled images (now {images})", images, classes
    )


@dataclass(frozen=True)
class Verdict:
    """The model against the base space on the same folds (pooled out-of-fold P@5)."""

    wins: bool
    metric: str
    trained: float
    base: float
    gain: float
    noise: float
    per_fold_gains: list[float]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(cross_validation: dict[str, Any], min_gain: float) -> Verdict:
    """Wins when the pooled gain exceeds the fold noise (max of `min_gain`, per-fold spread)."""
    trained = float(cross_validation["trained"]["metrics"][COMPARED_METRIC])
    base = float(cross_validation["base"]["metrics"][COMPARED_METRIC])
    gains = [
        float(fold["trained"][COMPARED_METRIC]) - float(fold["base"][COMPARED_METRIC])
        for fold in cross_validation.get("per_fold", [])
    ]
    spread = statistics.stdev(gains) if len(gains) >= 2 else 0.0
    noise = max(min_gain, spread)
    gain = trained - base
    wins = gain > noise
    source = "the per-fold spread" if spread > min_gain else "the declared minimum gain"
    reason = (
        f"out-of-fold {COMPARED_METRIC} {trained:.3f} against the base space's {base:.3f} on the "
        f"same folds: {gain:+.3f}, {'more' if wins else 'not more'} than the noise {noise:.3f} "
        f"({source})"
    )
    return Verdict(wins, COMPARED_METRIC, trained, base, gain, noise, gains, reason)


# --- Progress --------------------------------------------------------------------------


class Progress(ProgressClock):
    """The trainer's (stage, details) -> fold, epoch and estimated time left, in the record."""

    def __init__(self, settings: Settings, record: dict[str, Any], folds: int, epochs: int,
                 ensemble: int) -> None:  # fmt: skip
        super().__init__(folds, epochs, ensemble)
        self.settings, self.record = settings, record

    def __call__(self, stage: str, details: dict[str, Any]) -> None:
        self.record["progress"] = self.progress(stage, details)
        self.record.update(write_state(self.settings, self.record))


# --- The run ---------------------------------------------------------------------------


def default_trainer() -> Trainer:
    from mammosearch.train.train_run import run_training

    return run_training


# --- The setting: train's defaults on a CPU, the strongest setting measured on a GPU ---

STRONGEST_SETTING: dict[str, Any] = {"pooling": "gem", "image_size_px": 320, "ensemble": 2}
"""GeM pooling, 320 px, two seeds averaged: out-of-fold P@5 +0.02 over the defaults (0.444
against 0.422, docs/learned-embeddings.md), at about three times their cost."""


@dataclass(frozen=True)
class TrainingSetting:
    """Which TrainConfig an automatic run uses, on which device, and why (recorded in the
    run's state and the model's record, and shown on the Models page)."""

    name: str  # "strongest measured" or "defaults"
    device: str  # torch's device type: "cuda" or "cpu"
    changes: dict[str, Any]  # TrainConfig fields changed from train's defaults
    reason: str

    def config(self) -> Any:
        from dataclasses import replace

        from mammosearch.train.config import TrainConfig

        return replace(TrainConfig(), **self.changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_setting(device: str) -> TrainingSetting:
    """The one rule: a CUDA GPU trains the strongest setting measured, a CPU train's defaults.

    On 2 CPU cores the strongest setting's cross-validation alone took 25-32 min, over the
    30-minute budget with the final model; the defaults took 11-16 min. A GPU makes either
    a matter of minutes, so it gets the +0.02.
    """
    if device == "cuda":
        return TrainingSetting(
            "strongest measured", device, dict(STRONGEST_SETTING),
            "a CUDA GPU is present, so GeM pooling, 320 px and two seeds: out-of-fold P@5 "
            "+0.02 over the defaults at about three times their cost",
        )  # fmt: skip
    return TrainingSetting(
        "defaults", device, {},
        f"no CUDA GPU (on {device}), so train's defaults: within 30 minutes on 2 cores, where "
        "the strongest setting measured would take about three times as long",
    )  # fmt: skip


def detect_device() -> str:
    """The device the trainer will use (runner.pick_device, the one place that picks it)."""
    from mammosearch.train.runner import pick_device

    return pick_device().type


def lower_priority(whole_process: bool = True) -> None:
    """Training yields the CPU to search: every thread of this process, NICE_INCREMENT lower.

    Called by the entry points that train (`auto-train`, the Celery task), not by
    `run_auto_train`. On Linux a nice value is per thread, so threads that torch or a
    worker started before this are lowered one by one; new threads inherit it.
    `whole_process=False` (a thread of the web service): only the calling thread.
    """
    try:
        threads = (
            [int(tid) for tid in os.listdir("/proc/self/task")]
            if whole_process
            else [threading.get_native_id()]
        )
    except OSError:  # not Linux: the process's own value
        threads = []
    try:
        for tid in threads:
            current = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, current + NICE_INCREMENT))
        if not threads:
            os.nice(NICE_INCREMENT)
    except OSError:  # a thread that ended meanwhile, or not allowed: train anyway
        pass


def _model_name(images: int, registry: Path) -> str:
    name = f"{MODEL_PREFIX}{images}"
    suffix = 2
    while (registry / name).exists():
        name = f"{MODEL_PREFIX}{images}-{suffix}"
        suffix += 1
    return name


def run_auto_train(
    settings: Settings,
    trainer: Trainer | None = None,
    config: Any = None,
    wait_s: float = 0.0,
    device: Callable[[], str] = detect_device,
) -> dict[str, Any]:
    """One check: train, judge and switch when due; returns the record as left.

    Without `config`, the setting follows the device (`choose_setting(device())`).
    Another process's run holding the lock: returns at once with `busy` (nothing changed).
    """
    try:
        with exclusive_file_lock(lock_path(settings), "automatic training", wait_s):
            return _run_locked(settings, trainer, config, device)
    except LockHeld as held:
        return {**read_state(settings), "busy": f"a run is under way ({held.holder})"}


def _run_locked(settings: Settings, trainer: Trainer | None, config: Any,
                device: Callable[[], str]) -> dict[str, Any]:  # fmt: skip
    from mammosearch.db.session import session_scope

    record = read_state(settings)
    pending = record.get("switch_pending") or (
        record.get("state") == "re-embedding" and (record.get("run") or {}).get("model")
    )
    if pending:  # a winner whose switch was interrupted or failed: finish it, no new training
        return _switch(settings, record, str(pending), resumed=True)
    with session_scope(settings.database_url) as session:
        decision = decide(settings, session, record)
    if not decision.train:
        if is_running(record):
            record["state"] = "failed"  # a run whose archive changed under it: judged again
        elif not settings.auto_train:
            record["state"] = "disabled"
        elif record.get("state") not in ("activated", "kept-base", "failed", "rolled-back"):
            record["state"] = "waiting"
        record["check"] = {"at": _now(), "reason": decision.reason}
        return write_state(settings, record)
    if config is None:
        setting = choose_setting(device())
        config = setting.config()
    else:  # a caller's own config (tests, benches): recorded as given
        setting = TrainingSetting("given", "as the trainer picks", {}, "the caller's config")
    return _train(settings, record, decision, trainer or default_trainer(), config, setting)


def _finished_model(registry: Path, out_dir: Path, name: str) -> Any:
    """The model a killed run had finished (registered, or written but not yet registered)."""
    from mammosearch.embed.registry import register_model
    from mammosearch.embed.trained import ModelDirError, read_trained_model

    for written, registered in ((registry / name, True), (out_dir, False)):
        try:
            model = read_trained_model(written)
        except ModelDirError:
            continue
        if model.name == name:
            return model if registered else register_model(written, registry, name)
    return None


def _train(settings: Settings, record: dict[str, Any], decision: Decision, trainer: Trainer,
           config: Any, setting: TrainingSetting) -> dict[str, Any]:  # fmt: skip
    from mammosearch.db.session import session_scope
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.registry import register_model

    registry = registry_dir(settings)
    previous_run = record.get("run") or {}
    resumed = is_running(record) and previous_run.get("images") == decision.labelled_images
    name = previous_run["model"] if resumed else _model_name(decision.labelled_images, registry)
    run: dict[str, Any] = {
        "model": name,
        "images": decision.labelled_images,
        "classes": decision.classes,
        "why": decision.reason,
        "started_at": previous_run.get("started_at") if resumed else _now(),
        "resumed": int(previous_run.get("resumed", 0)) + 1 if resumed else 0,
        "setting": setting.to_dict(),
    }
    record.update(state="training", run=run, progress={"stage": "loading images"},
                  check={"at": _now(), "reason": decision.reason})  # fmt: skip
    for outcome in ("error", "reason"):  # the last run's: this one will say how it ended
        record.pop(outcome, None)
    record = write_state(settings, record)
    progress = Progress(settings, record, config.folds, config.fit.epochs, config.ensemble)
    out_dir = work_out_dir(settings)
    try:
        model = _finished_model(registry, out_dir, run["model"]) if resumed else None
        if model is None:
            with session_scope(settings.database_url) as session:
                written = trainer(
                    session, config, out_dir,
                    f"automatic training ({decision.reason})",
                    name=run["model"], overwrite=True, quiet=True, status=progress,
                    setting=setting.to_dict(),
                )  # fmt: skip
            model = register_model(written, registry, run["model"])
    except Exception as error:
        log.exception("automatic training failed")
        record.update(state="failed", error=str(error), finished_at=_now())
        record["trained_on_images"] = decision.labelled_images  # retried when the archive grows
        return write_state(settings, record)
    shutil.rmtree(out_dir, ignore_errors=True)  # registered: the copy in the registry serves
    verdict = judge(model.cross_validation(), settings.auto_train_min_gain)
    record.pop("check", None)  # why it started; the verdict says how it ended
    record.update(
        verdict=verdict.to_dict(), trained_on_images=decision.labelled_images,
        progress={}, finished_at=_now(),
        duration_s=round((datetime.fromisoformat(_now())
                          - datetime.fromisoformat(run["started_at"])).total_seconds()),
    )  # fmt: skip
    if not verdict.wins:
        record.update(state="kept-base", reason=f"{run['model']} not activated: {verdict.reason}")
        return write_state(settings, record)
    record.update(state="re-embedding", reason=f"{run['model']} wins: {verdict.reason}")
    record = write_state(settings, record)
    return _switch(settings, record, run["model"], resumed=False)


def _switch(settings: Settings, record: dict[str, Any], backbone: str,
            resumed: bool) -> dict[str, Any]:  # fmt: skip
    """Re-embed the archive into `backbone`'s space and activate it; the old one kept."""
    record["switching_to"] = backbone
    try:
        activated = switch_space(settings, backbone, record)
    except Exception as error:
        log.exception("switching to %s failed", backbone)
        record.update(state="failed", error=f"switching to {backbone}: {error}",
                      switch_pending=backbone)  # fmt: skip
        return write_state(settings, record)
    record.pop("switch_pending", None)
    record.pop("error", None)
    record.update(state="activated", progress={}, activated_at=activated["activated_at"])
    if resumed:
        record["reason"] = f"{record.get('reason', '')} (switch resumed after an interruption)"
    return write_state(settings, record)


def switch_space(settings: Settings, backbone: str, record: dict[str, Any] | None = None
                 ) -> dict[str, Any]:  # fmt: skip
    """Re-embed every searchable image into `backbone`'s space, then activate it.

    The backbone that served before is kept in the record as `previous_backbone` (rollback).
    Search answers from the old space until `activate` has verified the new one.
    """
    from mammosearch.db.session import session_scope
    from mammosearch.embed.serving import embedder_for
    from mammosearch.embed.serving_record import serving_backbone
    from mammosearch.embed.spaces import get_or_create_space
    from mammosearch.jobs.space_switch import activate, embed_into_space, missing_image_ids

    record = read_state(settings) if record is None else record
    current = serving_backbone(settings.backbone, settings.data_dir)
    with session_scope(settings.database_url) as session:
        space = get_or_create_space(session, embedder_for(settings, backbone))
        session.commit()
        missing = missing_image_ids(session, space)
        done = 0

        def embedded(count: int) -> None:
            nonlocal done
            done += count
            record["progress"] = {"stage": "re-embedding", "done": done, "total": len(missing)}
            record.update(write_state(settings, record))

        embed_into_space(session, settings, backbone, missing, embedded)
        activated = activate(session, settings, backbone)
    if current != backbone:
        record["previous_backbone"] = current
    record.update(write_state(settings, record))
    return activated


def rollback(settings: Settings) -> dict[str, Any]:
    """Serve the space that served before the last switch again (its vectors were kept)."""
    with exclusive_file_lock(lock_path(settings), "rollback", 0.0):
        record = read_state(settings)
        previous = record.get("previous_backbone")
        if not previous:
            raise ValueError("nothing to roll back to: no space was switched from")
        return _admin_switch(
            settings, record, previous, "rolled-back", f"rolled back to {previous} by an admin"
        )


def activate_model(settings: Settings, backbone: str) -> dict[str, Any]:
    """An admin's switch to `backbone` (a model or base name), one at a time with training."""
    with exclusive_file_lock(lock_path(settings), "activation", 0.0):
        return _admin_switch(
            settings, read_state(settings), backbone, "activated",
            f"{backbone} activated by an admin",
        )  # fmt: skip


def _admin_switch(settings: Settings, record: dict[str, Any], backbone: str, state: str,
                  reason: str) -> dict[str, Any]:  # fmt: skip
    """A person's switch: it replaces any automatic one still pending, and is not resumed."""
    record.pop("switch_pending", None)
    record.update(state="switching", switching_to=backbone, progress={"stage": "re-embedding"})
    record = write_state(settings, record)
    try:
        switch_space(settings, backbone, record)
    except Exception as error:
        record.update(state="failed", error=f"switching to {backbone}: {error}", progress={})
        write_state(settings, record)
        raise
    record.pop("error", None)
    record.update(state=state, reason=reason, progress={})
    return write_state(settings, record)


def watch(settings: Settings, stop: Callable[[], bool], trainer: Trainer | None = None) -> None:
    """Check every MAMMOSEARCH_AUTO_TRAIN_CHECK_S until `stop()`; a failed check is logged."""
    while not stop():
        try:
            run_auto_train(settings, trainer)
        except Exception:  # the next check tries again; the record says what failed
            log.exception("automatic training check failed")
        deadline = time.monotonic() + settings.auto_train_check_s
        while time.monotonic() < deadline and not stop():
            time.sleep(min(5.0, settings.auto_train_check_s))
