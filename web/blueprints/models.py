"""Admin page for learned embeddings: spaces and their progress, models, training jobs."""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from mammosearch.access import audit
from mammosearch.train.bases import BASE_BACKBONES, DEFAULT_BASE
from web.access import ADMIN, restrict_blueprint
from web.configuration import settings as app_settings
from web.db import get_session

log = logging.getLogger(__name__)
bp = restrict_blueprint(Blueprint("models", __name__, url_prefix="/admin/models"), ADMIN)

IMAGE_SIZE_RANGE = (64, 1024)
"""`mammosearch train --image-size`'s range."""


def _spaces() -> list[dict[str, Any]]:
    from sqlalchemy import select

    from mammosearch.db.models import EmbeddingSpace
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.quantize import recorded_checks
    from mammosearch.embed.registry import registered_models
    from mammosearch.embed.serving import serving_space
    from mammosearch.evaluate.runs import measured_vote
    from mammosearch.jobs.space_switch import space_progress
    from mammosearch.search.cases import SEARCH_UNITS
    from web.model_figures import cv_columns, reliability_views, run_columns

    session = get_session()
    settings = app_settings()
    serving = serving_space(session, settings)
    models_by_sha = {m.sha256: m for m in registered_models(registry_dir(settings))}
    checks = recorded_checks(settings.layout.onnx_dir)
    metric = figures_metric()
    rows = []
    for space in session.scalars(select(EmbeddingSpace).order_by(EmbeddingSpace.id)):
        row = space_progress(session, space)
        row["serving"] = serving is not None and serving.id == space.id
        model = models_by_sha.get(space.weights_sha256)
        row["model"] = model.directory.name if model else None
        # The name `activate` takes: the registered model's, or the base backbone's own.
        row["activate_as"] = row["model"] or (
            None if space.backbone.startswith("trained:") else space.backbone
        )
        cv = model.cross_validation() if model else {}
        row["oof"] = (cv.get("trained") or {}).get("metrics")
        row["oof_base"] = (cv.get("base") or {}).get("metrics")
        row["precision_check"] = checks.get(space.weights_sha256)
        title = f"space {space.id} ({row['model'] or space.backbone})"
        row["figures"] = cv_columns(title, cv) if cv else run_columns(session, space, title, metric)
        # The tables a search in this space speaks from (the suggestion panel's own source).
        row["reliability"] = reliability_views(
            {unit: measured_vote(session, settings, space, metric, unit) for unit in SEARCH_UNITS}
        )
        rows.append(row)
    return rows


def figures_metric() -> str:
    """The metric whose figures the page shows: search's default (cosine when indexed)."""
    metrics = app_settings().index_metrics
    return "cosine" if "cosine" in metrics else metrics[0]


@bp.get("")
def overview() -> str:
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.registry import registered_models
    from mammosearch.evaluate.labels import LABELS
    from mammosearch.pipeline.quantize_jobs import PRECISIONS
    from mammosearch.pipeline.quantize_jobs import read_state as read_quantize_state
    from mammosearch.train import auto
    from mammosearch.train.config import TrainConfig
    from mammosearch.train.jobs import last_finished_run, list_jobs
    from mammosearch.train.losses import LOSSES
    from mammosearch.train.network import POOLINGS
    from mammosearch.train.positives import POSITIVES
    from mammosearch.train.progress import progress_line
    from web.model_figures import comparisons, cv_columns

    models = registered_models(registry_dir(app_settings()))
    jobs = list_jobs(app_settings())
    for job in jobs:
        job["progress_line"] = progress_line(job.get("progress") or {})
    auto_record = auto.read_state(app_settings())
    spaces = _spaces()
    embedded = {row["model"] for row in spaces if row["model"]}
    columns = [column for row in spaces for column in row["figures"]]
    for model in models:  # a model not embedded yet: its own record's figures
        if model.directory.name not in embedded:
            title = f"{model.directory.name} (no space yet)"
            columns += cv_columns(title, model.cross_validation())
    return render_template(
        "admin/models.html",
        auto_train=auto_record,
        auto_summary=auto.summary_line(auto_record),
        auto_under_way=auto.under_way(app_settings()) is not None,
        auto_enabled=app_settings().auto_train,
        spaces=spaces,
        serving_models={row["model"] for row in spaces if row["serving"] and row["model"]},
        models=models,
        jobs=jobs,
        last_run=last_finished_run(jobs),
        labels=list(LABELS),
        image_size_range=IMAGE_SIZE_RANGE,
        positives=POSITIVES,
        comparisons=comparisons(columns),
        figures_metric=figures_metric(),
        auto_setting=(auto_record.get("run") or {}).get("setting"),
        next_setting=_next_setting(),
        quantize=read_quantize_state(app_settings()),
        quantizable=[row["space"]["backbone"] for row in spaces if _quantizable(row)],
        precisions=PRECISIONS,
        bases=BASE_BACKBONES,
        default_base=DEFAULT_BASE,
        default_epochs=TrainConfig().fit.epochs,
        defaults=TrainConfig(),
        losses=LOSSES,
        poolings=POOLINGS,
    )


def _next_setting() -> dict[str, Any]:
    """The setting an automatic run would train with on this machine (auto.choose_setting)."""
    from mammosearch.train import auto

    return auto.choose_setting(auto.detect_device()).to_dict()


@bp.post("/train")
def start_training() -> Response:
    """Queue a training job (a worker on the `train` queue, or a thread without a broker)."""
    from mammosearch.train.jobs import create_job, run_job

    settings = app_settings()
    labels, problems = _labels()
    epochs = request.form.get("epochs", type=int)
    image_size = request.form.get("image_size_px", type=int)
    base = request.form.get("base") or None
    name = (request.form.get("name") or "").strip()
    if epochs is not None and not 1 <= epochs <= 200:
        problems.append("epochs: between 1 and 200")
    low, high = IMAGE_SIZE_RANGE
    if image_size is not None and not low <= image_size <= high:
        problems.append(f"image size: {low} to {high} pixels")
    if base is not None and base not in BASE_BACKBONES:
        problems.append(f"base: one of {', '.join(BASE_BACKBONES)}")
    more, more_problems = _more_options()
    problems += more_problems
    options = {
        "labels": labels, "epochs": epochs, "image_size_px": image_size, "base": base, **more,
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


def _labels() -> tuple[list[str], list[str]]:
    """`--label` as the form gives it: the learned label, then extra tasks (a head each)."""
    from mammosearch.evaluate.labels import LABELS

    first = (request.form.get("labels") or "birads").split("+")  # "birads+pathology": both
    chosen = list(dict.fromkeys([*first, *request.form.getlist("extra_labels")]))
    unknown = [label for label in chosen if label not in LABELS]
    if unknown:
        return [], [f"labels: {', '.join(unknown)} unknown; choose from {', '.join(LABELS)}"]
    return chosen, []


def _more_options() -> tuple[dict[str, Any], list[str]]:
    """The form's further TrainConfig fields (`mammosearch train`'s options); empty: default."""
    from mammosearch.train.losses import LOSSES
    from mammosearch.train.network import POOLINGS
    from mammosearch.train.positives import POSITIVES
    from mammosearch.train.test_views import FIXED_VIEWS

    ranges = {"folds": (2, 10), "dim": (0, 2048), "test_views": (1, len(FIXED_VIEWS)),
              "ensemble": (1, 5), "seed": (0, 2**31 - 1), "trained_blocks": (1, 16),
              "n_views": (2, 32)}  # fmt: skip
    choices = {"loss": LOSSES, "pooling": POOLINGS, "positives": POSITIVES}
    options: dict[str, Any] = {}
    problems = []
    for key, (low, high) in ranges.items():
        raw = (request.form.get(key) or "").strip()
        if not raw:
            continue
        if not raw.isdigit() or not low <= int(raw) <= high:
            problems.append(f"{key.replace('_', ' ')}: a whole number from {low} to {high}")
        else:
            options[key] = int(raw)
    for key, allowed in choices.items():
        value = (request.form.get(key) or "").strip()
        if value and value not in allowed:
            problems.append(f"{key}: one of {', '.join(allowed)}")
        elif value:
            options[key] = value
    return options, problems


_one_job = threading.Lock()


def _run_alone(function: Any, settings: Any, *args: Any) -> None:
    """Embedded mode: one training, check or switch at a time in this process."""
    with _one_job:
        try:
            function(settings, *args)
        except Exception:  # noqa: BLE001 - its record (job, auto-train state) says what failed
            log.exception("background %s failed", getattr(function, "__name__", function))


@bp.get("/jobs/<job_id>")
def job_status(job_id: str) -> Response:
    from mammosearch.train.jobs import read_job
    from mammosearch.train.progress import progress_line

    record = read_job(app_settings(), job_id)
    if record is None:
        abort(404)
    return jsonify({**record, "progress_line": progress_line(record.get("progress") or {})})


@bp.app_context_processor
def training_banner() -> dict[str, Any]:
    """`training_banner` on every signed-in page while the archive's model trains or switches."""
    from mammosearch.train import auto

    if not (current_user and current_user.is_authenticated):
        return {"training_banner": None}
    record = auto.under_way(app_settings())
    return {"training_banner": auto.summary_line(record) if record else None}


def _in_background(task: str, function: Any, *args: Any) -> None:
    """A switch or a check: the `train` queue's worker with a broker, else a thread here."""
    settings = app_settings()
    if settings.celery_broker_url:
        from workers.app import celery_app

        celery_app.send_task(task, args=list(args))
        return
    worker = threading.Thread(target=_run_alone, args=(function, settings, *args), daemon=True)
    worker.start()


def _audit(action: str, detail: dict[str, Any]) -> None:
    session = get_session()
    audit.record_access(
        session, current_user.row, action, detail=detail, remote_addr=request.remote_addr
    )
    session.commit()


def _refuse_while_busy() -> Response | None:
    from mammosearch.train import auto

    if auto.under_way(app_settings()) is not None:
        flash("A training or a switch is under way; try again when it has finished.", "error")
        return redirect(url_for("models.overview"))
    return None


@bp.post("/activate")
def activate_space() -> Response:
    """Re-embed the archive into a space and make it serve (search stays where it is until then)."""
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.registry import registered_models
    from mammosearch.pipeline.quantize_jobs import read_state as quantized
    from mammosearch.train import auto

    backbone = (request.form.get("backbone") or "").strip()
    known = {row["activate_as"] for row in _spaces() if row["activate_as"]} | {
        model.directory.name for model in registered_models(registry_dir(app_settings()))
    }
    last_variant = quantized(app_settings())
    if last_variant.get("kept"):  # a kept variant: its space is made by the switch
        known.add(last_variant["variant"])
    if backbone not in known:
        flash(
            f"Not activated: {backbone or '(none)'} is not a space or model on this page.", "error"
        )
        return redirect(url_for("models.overview"))
    busy = _refuse_while_busy()
    if busy is not None:
        return busy
    _in_background("mammosearch.switch_space", auto.activate_model, backbone)
    _audit("activate_space", {"backbone": backbone})
    flash(f"Switching to {backbone}: search stays on the serving space until it is ready.", "info")
    return redirect(url_for("models.overview"))


@bp.post("/rollback")
def roll_back() -> Response:
    """Serve the space that served before the last switch again."""
    from mammosearch.train import auto

    previous = auto.read_state(app_settings()).get("previous_backbone")
    if not previous:
        flash("Nothing to roll back to: no space was switched from.", "error")
        return redirect(url_for("models.overview"))
    busy = _refuse_while_busy()
    if busy is not None:
        return busy
    _in_background("mammosearch.switch_space", _rollback)
    _audit("rollback_space", {"to": previous})
    flash(f"Rolling back to {previous}.", "info")
    return redirect(url_for("models.overview"))


def _rollback(settings: Any) -> None:
    from mammosearch.train import auto

    auto.rollback(settings)


@bp.post("/quantize")
def quantize_space() -> Response:
    """`mammosearch models quantize`: build a base space's reduced-precision variant and keep
    it only if this archive's P@5 holds (in the background; the record says how it ended)."""
    from mammosearch.pipeline.quantize_jobs import PRECISIONS, run_quantize

    backbone = (request.form.get("backbone") or "").strip()
    precision = (request.form.get("precision") or "").strip()
    bases = {row["space"]["backbone"] for row in _spaces() if _quantizable(row)}
    if backbone not in bases or precision not in PRECISIONS:
        flash(
            f"Not started: choose a base space ({', '.join(sorted(bases)) or 'none here'}) and "
            f"a precision ({', '.join(PRECISIONS)}).",
            "error",
        )
        return redirect(url_for("models.overview"))
    busy = _refuse_while_busy()
    if busy is not None:
        return busy
    _in_background("mammosearch.quantize_space", run_quantize, backbone, precision)
    _audit("quantize_space", {"backbone": backbone, "precision": precision})
    flash(f"Building the {precision} variant of {backbone}, then checking it here.", "info")
    return redirect(url_for("models.overview"))


def _quantizable(row: dict[str, Any]) -> bool:
    """A base (registry) backbone's space at full precision: what `models quantize` builds from."""
    backbone = str(row["space"]["backbone"])
    return not row["model"] and not backbone.startswith("trained:") and ":" not in backbone


@bp.get("/auto-train")
def auto_training_status() -> Response:
    """The automatic run's record and its one-line summary (the page follows a run with it)."""
    from mammosearch.train import auto

    record = auto.read_state(app_settings())
    return jsonify(
        state=record.get("state"),
        summary=auto.summary_line(record),
        under_way=auto.under_way(app_settings()) is not None,
        progress=record.get("progress") or {},
    )


@bp.post("/auto-train")
def check_auto_training() -> Response:
    """Check now whether a training is due (as the periodic check does), and start it if so."""

    busy = _refuse_while_busy()
    if busy is not None:
        return busy
    _in_background("mammosearch.auto_train", _auto_train_once)
    _audit("check_auto_training", {})
    flash("Checking whether a training is due; the state below follows.", "info")
    return redirect(url_for("models.overview"))


def _auto_train_once(settings: Any) -> None:
    from mammosearch.train import auto

    auto.lower_priority(whole_process=False)  # this thread: search's threads keep theirs
    auto.run_auto_train(settings)


@bp.post("/spaces/<int:space_id>/delete")
def delete_space(space_id: int) -> Response:
    """Drop a space that does not serve (vectors, indexes) and unregister its model."""
    import shutil

    from mammosearch.db.models import EmbeddingSpace
    from mammosearch.embed.loader import registry_dir
    from mammosearch.jobs.space_switch import SpaceSwitchError, drop_space

    session = get_session()
    space = session.get(EmbeddingSpace, space_id)
    if space is None:
        abort(404)
    row = next(row for row in _spaces() if row["space"]["id"] == space_id)
    busy = _refuse_while_busy()
    if busy is not None:
        return busy
    try:
        result = drop_space(session, app_settings(), space)
    except SpaceSwitchError as error:
        flash(f"Not deleted: {error}", "error")
        return redirect(url_for("models.overview"))
    if row["model"]:
        shutil.rmtree(registry_dir(app_settings()) / row["model"], ignore_errors=True)
    _audit("delete_space", {"space": space_id, "model": row["model"]})
    flash(
        f"Space {space_id} deleted ({result['vectors_removed']} vectors)"
        + (f" and model {row['model']} unregistered." if row["model"] else "."),
        "info",
    )
    return redirect(url_for("models.overview"))


@bp.post("/registry/<name>/delete")
def delete_model(name: str) -> Response:
    """Unregister a model that does not serve (its space, if any, is deleted with its row)."""
    import shutil

    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.registry import NAME_PATTERN
    from mammosearch.train import auto

    folder = registry_dir(app_settings()) / name
    if not NAME_PATTERN.match(name) or not folder.is_dir():
        abort(404)
    serving = auto.serving_trained_model(app_settings())
    if serving is not None and serving.directory.name == name:
        flash(f"Not deleted: {name} serves search now; activate another space first.", "error")
        return redirect(url_for("models.overview"))
    spaces = [row for row in _spaces() if row["model"] == name]
    if spaces:
        return delete_space(spaces[0]["space"]["id"])
    busy = _refuse_while_busy()
    if busy is not None:
        return busy
    shutil.rmtree(folder)
    _audit("delete_model", {"model": name})
    flash(f"Model {name} unregistered.", "info")
    return redirect(url_for("models.overview"))
