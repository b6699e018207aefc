"""Figures for one evaluation run that has none (a `mammosearch evaluate` run, say): the
curves from the run's own numbers, the neighbours' vote and the 2-D map from its space.

Reports and scheduled runs draw theirs with the report (report.py); this fills the gap for
every other run, into settings.reports_dir/run-<id>/, and links them the same way
(`report_path`, `config["report_figures"]`), so the web shows every run alike.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace, EvaluationRun
from mammosearch.evaluate.evaluator import DEFAULT_KS, class_order
from mammosearch.evaluate.labels import get_label
from mammosearch.evaluate.neighbour_vote import DEFAULT_VOTE_K, neighbour_vote_confusion
from mammosearch.evaluate.projection import TSNE_MAX_IMAGES, project
from mammosearch.evaluate.regression import run_figures
from mammosearch.evaluate.result import EvaluationError
from mammosearch.evaluate.runs import load_space_vectors
from mammosearch.evaluate.timing import search_ms_by_k

TSNE_ON_DEMAND_MAX_IMAGES = 1000
"""t-SNE for larger spaces takes minutes: drawn on demand only up to this many images."""


def run_directory(settings: Settings, run: EvaluationRun) -> Path:
    return settings.reports_dir / f"run-{run.id}"


def write_run_figures(session: Session, settings: Settings, run: EvaluationRun) -> list[Path]:
    """Draw the run's figures unless it has some; returns them (none for unfinished runs).

    The vote and the map use the space's vectors as they are now: for an old run of a space
    that has grown since, their titles say how many images they show.
    """
    from mammosearch.evaluate.plots import (
        CurveSeries,
        plot_confusion,
        plot_curves,
        plot_projection,
    )

    existing = run_figures(run)
    if existing or run.status != "done" or not run.metrics:
        return existing
    space = session.get(EmbeddingSpace, run.space_id) if run.space_id is not None else None
    if space is None:
        raise EvaluationError(f"evaluation run {run.id}: its embedding space is gone")
    config = dict(run.config or {})
    ks = tuple(config.get("ks") or DEFAULT_KS)
    out_dir = run_directory(settings, run).resolve()
    marker = "" if space.pretrained else " (UNTRAINED weights)"
    loaded = load_space_vectors(session, space)
    names = ["figures/curves.png"]
    timing = search_ms_by_k(loaded.vectors, run.metric, ks) if loaded.image_ids else {}
    plot_curves(
        [CurveSeries(space.backbone, run.metric, not space.pretrained, run.metrics, timing)],
        config.get("chance") or {}, ks, out_dir / names[0],
        f"Evaluation #{run.id}: retrieval against k (label {run.label}, {run.protocol})",
    )  # fmt: skip
    spec = get_label(run.label)
    labels = [spec.of_image(row) for row in loaded.image_rows]
    classes = class_order(run.label, {label for label in labels if label is not None})
    drawn_over = f"{len(loaded.image_ids)} images of space {space.id} as of now"
    if classes and len(loaded.image_ids) >= 2:
        confusion = neighbour_vote_confusion(
            loaded.vectors, labels, loaded.patient_ids, classes, metric=run.metric,
            protocol=run.protocol, k=DEFAULT_VOTE_K,
        )  # fmt: skip
        names.append(f"figures/confusion-{run.metric}.png")
        plot_confusion(
            confusion, run.label, out_dir / names[-1],
            f"{space.backbone}{marker} / {run.metric}, {run.protocol} ({drawn_over})",
        )  # fmt: skip
        tsne = len(loaded.image_ids) <= min(TSNE_ON_DEMAND_MAX_IMAGES, TSNE_MAX_IMAGES)
        names.append("figures/projection.png")
        plot_projection(
            project(loaded.vectors, tsne=tsne), labels, classes, run.label, out_dir / names[-1],
            f"{space.backbone}{marker}: embeddings coloured by {run.label} ({drawn_over})",
        )  # fmt: skip
    run.report_path = str(out_dir)
    run.config = {**config, "report_figures": names}
    session.commit()
    return run_figures(run)
