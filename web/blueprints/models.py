"""Admin page for learned embeddings: spaces and their progress, models, training jobs."""

from __future__ import annotations

import threading
from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from mammosearch import audit
from mammosearch.train.bases import BASE_BACKBONES, DEFAULT_BASE
from web.access import ADMIN, restrict_blueprint
from web.configuration import settings as app_settings
from web.db import get_session

bp = restrict_blueprint(Blueprint("models", __name__, url_prefix="/admin/models"), ADMIN)

TRAINING_LABELS = {"birads": ("birads",), "birads+pathology": ("birads", "pathology")}
IMAGE_SIZES = (224, 320, 384, 448)


def _spaces() -> list[dict[str, Any]]:
    from sqlalchemy import select

    from mammosearch.db.models import EmbeddingSpace
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.quantize import recorded_checks
    from mammosearch.embed.registry import registered_models
    from mammosearch.space_switch import serving_space, space_progress

    session = get_session()
    settings = app_settings()
    serving = serving_space(session, settings)
    models_by_sha = {m.sha256: m for m in registered_models(registry_dir(settings))}
    checks = recorded_checks(settings.data_dir / "models" / "onnx")
    rows = []
    for space in session.scalars(select(EmbeddingSpace).order_by(EmbeddingSpace.id)):
        row = space_progress(session, space)
        row["serving"] = serving is not None and serving.id == space.id
        model = models_by_sha.get(space.weights_sha256)
        row["model"] = model.directory.name if model else None
        cv = model.cross_validation() if model else {}
        row["oof"] = (cv.get("trained") or {}).get("metrics")
        row["oof_base"] = (cv.get("base") or {}).get("metrics")
        row["precision_check"] = checks.get(space.weights_sha256)
        rows.append(row)
    return rows


@bp.get("")
def overview() -> str:
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.registry import registered_models
    from mammosearch.train.config import TrainConfig
    from mammosearch.train.jobs import last_finished_run, list_jobs

    models = registered_models(registry_dir(app_settings()))
    jobs = list_jobs(app_settings())
    return render_template(
        "admin/models.html",
        spaces=_spaces(),
        models=models,
        jobs=jobs,
        last_run=last_finished_run(jobs),
        labels=list(TRAINING_LABELS),
        image_sizes=IMAGE_SIZES,
        bases=BASE_BACKBONES,
        default_base=DEFAULT_BASE,
        default_epochs=TrainConfig().fit.epochs,
    )


@bp.post("/train")
def start_training() -> Response:
    """Queue a training job (a worker on the `train` queue, or a thread without a broker)."""
    from mammosearch.train.jobs import create_job, run_job

    settings = app_settings()
    labels = TRAINING_LABELS.get(request.form.get("labels", "birads"))
    epochs = request.form.get("epochs", type=int)
    image_size = request.form.get("image_size_px", type=int)
    base = request.form.get("base") or None
    name = (request.form.get("name") or "").strip()
    problems = []
    if labels is None:
        problems.append(f"labels: choose one of {', '.join(TRAINING_LABELS)}")
    if epochs is not None and not 1 <= epochs <= 200:
        problems.append("epochs: between 1 and 200")
    if image_size is not None and image_size not in IMAGE_SIZES:
        problems.append(f"image size: one of {', '.join(map(str, IMAGE_SIZES))}")
    if base is not None and base not in BASE_BACKBONES:
        problems.append(f"base: one of {', '.join(BASE_BACKBONES)}")
    options = {
        "labels": list(labels or ()), "epochs": epochs, "image_size_px": image_size, "base": base,
    }  # fmt: skip
    try:
        job = None if problems else create_job(settings, name, options, current_user.username)
    except ValueError as error:
        problems.append(str(error))
    if problems or job is None:
        flash("Training not started: " + "; ".join(problems), "error")
        return redirect(url_for("models.overview"))
    if settings.celery_broker_url:
        from workers.enqueue import enqueue_training

        enqueue_training(settings, job["id"])
    else:  # embedded mode: no worker to hand it to; a background thread, one job at a time
        worker = threading.Thread(target=_run_alone, args=(run_job, settings, job["id"]))
        worker.daemon = True
        worker.start()
    session = get_session()
    audit.record_access(
        session, current_user.row, "start_training", detail={"job": job["id"], **options},
        remote_addr=request.remote_addr,
    )  # fmt: skip
    session.commit()
    flash(f"Training job for model {name} queued; progress below.", "info")
    return redirect(url_for("models.overview"))


_one_job = threading.Lock()


def _run_alone(run_job: Any, settings: Any, job_id: str) -> None:
    with _one_job:
        try:
            run_job(settings, job_id)
        except Exception:  # noqa: BLE001 - the job record says what failed
            pass


@bp.get("/jobs/<job_id>")
def job_status(job_id: str) -> Response:
    from mammosearch.train.jobs import read_job

    record = read_job(app_settings(), job_id)
    if record is None:
        abort(404)
    return jsonify(record)
