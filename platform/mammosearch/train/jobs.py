"""Training jobs started from the web page or a worker: a record per job, then a model.

A job's record (DATA_DIR/models/jobs/<id>.json, replaced atomically at every update) is
what the admin page shows: state, stage, epoch, loss, the fold's validation P@5. A job
that finishes registers its model under the job's name; it never activates it: switching
the archive is `spaces reembed` + `spaces activate`, a decision for a person.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammosearch.config import Settings
from mammosearch.durable.atomic_files import read_json_record, write_json_record

if TYPE_CHECKING:  # imported late at run time: the config imports torch, slow to import
    from mammosearch.train.config import TrainConfig

log = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed")
MORE_OPTIONS = (
    "folds", "loss", "pooling", "dim", "test_views", "ensemble", "positives", "trained_blocks",
    "n_views",
)  # fmt: skip
"""TrainConfig fields the page may set besides labels, size, base, epochs and seed."""
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def jobs_dir(settings: Settings) -> Path:
    return settings.layout.models_dir / "jobs"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_job(settings: Settings, job_id: str) -> dict[str, Any] | None:
    if not _JOB_ID.match(job_id):
        return None
    return read_json_record(jobs_dir(settings) / f"{job_id}.json") or None


def list_jobs(settings: Settings, limit: int = 20) -> list[dict[str, Any]]:
    """Newest first."""
    records = []
    for path in jobs_dir(settings).glob("*.json"):
        record = read_json_record(path)
        if record:
            records.append(record)
    return sorted(records, key=lambda r: r.get("created_at", ""), reverse=True)[:limit]


def create_job(
    settings: Settings, name: str, options: dict[str, Any], requested_by: str | None
) -> dict[str, Any]:
    """A queued job record; `options` are TrainConfig fields (labels, epochs, size, base)."""
    from mammosearch.embed.registry import NAME_PATTERN

    if not NAME_PATTERN.match(name):
        raise ValueError(f"model name {name!r}: use letters, digits, '.', '_' or '-'")
    record = {
        "id": uuid.uuid4().hex,
        "name": name,
        "options": options,
        "state": "queued",
        "stage": "waiting for a worker",
        "progress": {},
        "requested_by": requested_by,
        "created_at": _now(),
    }
    write_json_record(jobs_dir(settings) / f"{record['id']}.json", record)
    return record


def job_config(options: dict[str, Any]) -> TrainConfig:
    """The defaults, changed only where the form set a field (an empty field keeps them)."""
    from mammosearch.train.config import TrainConfig

    config = TrainConfig()
    if options.get("labels"):
        config = replace(config, labels=tuple(options["labels"]))
    if options.get("image_size_px"):
        config = replace(config, image_size_px=int(options["image_size_px"]))
    if options.get("base"):
        config = replace(config, base=str(options["base"]))
    if options.get("epochs"):
        config = config.with_fit(epochs=int(options["epochs"]))
    if options.get("seed") is not None:
        config = config.with_fit(seed=int(options["seed"]))
    changes = {key: options.get(key) for key in MORE_OPTIONS}
    return replace(config, **{key: value for key, value in changes.items() if value is not None})


def run_job(settings: Settings, job_id: str) -> dict[str, Any]:
    """Train, register the model, and keep the job's record up to date throughout."""
    from mammosearch.db.session import session_scope
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.registry import register_model
    from mammosearch.train.progress import ProgressClock
    from mammosearch.train.train_run import run_training

    path = jobs_dir(settings) / f"{job_id}.json"
    record = read_job(settings, job_id)
    if record is None:
        raise ValueError(f"training job {job_id}: no such job")
    record.update(state="running", stage="loading images", started_at=_now())
    write_json_record(path, record)
    out_dir = settings.layout.trained_dir / record["name"]
    try:
        config = job_config(record["options"])
        clock = ProgressClock(config.folds, config.fit.epochs, config.ensemble)

        def status(stage: str, details: dict[str, Any]) -> None:
            record.update(stage=stage, progress=clock.progress(stage, details), updated_at=_now())
            write_json_record(path, record)

        with session_scope(settings.database_url) as session:
            written = run_training(
                session,
                config,
                out_dir,
                f"training job {job_id} ({record['options']})",
                name=record["name"],
                overwrite=True,
                quiet=True,
                status=status,
            )
        model = register_model(written, registry_dir(settings), record["name"])
    except Exception as error:  # noqa: BLE001 - the record must say why, whatever it was
        log.exception("training job %s failed", job_id)
        record.update(state="failed", stage="failed", error=str(error), finished_at=_now())
        write_json_record(path, record)
        raise
    finished_at = _now()
    record.update(
        state="done",
        stage="registered",
        finished_at=finished_at,
        model={"name": model.directory.name, "sha256": model.sha256},
        **finished_summary(
            model.cross_validation(),
            (model.record.get("training_images") or {}).get("count"),
            record["started_at"],
            finished_at,
        ),
    )
    write_json_record(path, record)
    return record


def finished_summary(
    cross_validation: dict[str, Any], images: int | None, started_at: str, finished_at: str
) -> dict[str, Any]:
    """What the jobs table shows of a finished run: both CV figures, its size and its time.

    The out-of-fold figure (a new archive) is the honest one; the archive figure (new
    patients against the images the model trained on) is what the site sees on its own
    archive. Both are carried so the page never shows one without the other.
    """

    def metrics(key: str) -> dict[str, Any] | None:
        return (cross_validation.get(key) or {}).get("metrics")

    took = datetime.fromisoformat(finished_at) - datetime.fromisoformat(started_at)
    return {
        "out_of_fold": {"trained": metrics("trained"), "base": metrics("base")},
        "archive": {"trained": metrics("trained_archive"), "base": metrics("base_archive")},
        "images": images,
        "duration_s": round(took.total_seconds()),
    }


def last_finished_run(jobs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest finished job with a measured time: the page's estimate of the next one."""
    for job in jobs:
        if job.get("state") == "done" and job.get("duration_s") is not None:
            return job
    return None
