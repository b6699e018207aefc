"""`mammosearch report`: every backbone x distance metric evaluated, plotted, written out.

The report directory holds report.html, report.json (every number), figures/*.png and
thumbs/*.png. A report reads the archive: each backbone's vectors come from its embedding
space (image_embeddings), and a backbone without one is listed as skipped, in one line.
Only when asked (`embed=True`, the CLI's --embed-missing) is a backbone embedded for the
report: into its own inactive comparison space, only the images without a vector there,
without touching their pipeline status, so a second report embeds nothing. One
EvaluationRun is stored per backbone x metric, with `report_path` pointing here and
`config["report_figures"]` naming its figures.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm import tqdm

from mammosearch.config import Settings
from mammosearch.db.models import EmbeddingSpace, EvaluationRun, Image, ImageStatus
from mammosearch.durable.atomic_files import SHARED, atomic_write_text
from mammosearch.evaluate.evaluator import DEFAULT_KS, class_order
from mammosearch.evaluate.labels import get_label
from mammosearch.evaluate.metrics import METRICS
from mammosearch.evaluate.neighbour_vote import (
    DEFAULT_VOTE_K,
    VoteConfusion,
    neighbour_vote_confusion,
)
from mammosearch.evaluate.projection import Projection, project
from mammosearch.evaluate.protocols import DEFAULT_PROTOCOL, get_protocol
from mammosearch.evaluate.provenance import software_versions
from mammosearch.evaluate.result import EvaluationError, EvaluationResult
from mammosearch.evaluate.runs import (
    SpaceVectors,
    evaluate_space,
    load_space_vectors,
    resolve_space,
)
from mammosearch.evaluate.thumbs import write_thumbnail
from mammosearch.evaluate.timing import search_ms_by_k
from mammosearch.pipeline.embed_stage import embed_missing
from mammosearch.vocabulary import DISTANCE_METRICS

REPORT_METRICS = DISTANCE_METRICS
QUERY_ROWS = 6
NEIGHBOURS_SHOWN = 5
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
NOT_IN_ARCHIVE = "no embedding space with vectors in the archive"
EMBED_HINT = "--embed-missing embeds it for this report"


@dataclass(frozen=True)
class ReportOptions:
    label: str = "birads"
    protocol: str = DEFAULT_PROTOCOL
    metrics: tuple[str, ...] = REPORT_METRICS
    ks: tuple[int, ...] = DEFAULT_KS
    vote_k: int = DEFAULT_VOTE_K
    query_rows: int = QUERY_ROWS
    tsne: bool = True
    trigger: str = "report"


@dataclass
class BackboneSection:
    """One backbone's part of the report: its space, or why it was skipped, and its numbers."""

    backbone: str
    space: EmbeddingSpace | None = None
    skipped: str | None = None
    embedded_now: int = 0
    embed_failures: dict[int, str] = field(default_factory=dict)
    results: dict[str, EvaluationResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    search_ms_by_k: dict[str, dict[int, float]] = field(default_factory=dict)
    confusion: dict[str, VoteConfusion] = field(default_factory=dict)
    projection: Projection | None = None
    figures: dict[str, str] = field(default_factory=dict)  # kind -> path relative to the report
    vectors: SpaceVectors | None = None

    @property
    def slug(self) -> str:
        space_id = self.space.id if self.space is not None else "none"
        return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{self.backbone}-space{space_id}")

    @property
    def untrained(self) -> bool:
        return self.space is not None and not self.space.pretrained


@dataclass
class ReportOutcome:
    out_dir: Path
    html_path: Path
    json_path: Path
    document: dict[str, Any]
    sections: list[BackboneSection]

    @property
    def run_ids(self) -> list[int]:
        return [r.run_id for s in self.sections for r in s.results.values() if r.run_id]


# --- embedding: one space per backbone, only the missing vectors -----------------------------


def report_image_ids(session: Session) -> list[int]:
    """The archive a report covers: every image the pipeline has embedded."""
    statuses = (ImageStatus.EMBEDDED, ImageStatus.INDEXED)
    return list(
        session.scalars(select(Image.id).where(Image.status.in_(statuses)).order_by(Image.id))
    )


def archived_section(session: Session, settings: Settings, name: str) -> BackboneSection:
    """The backbone's space as the archive holds it; skipped (one line) when it has none."""
    try:
        space = resolve_space(session, settings, backbone=name)
    except EvaluationError:
        return BackboneSection(backbone=name, skipped=f"{NOT_IN_ARCHIVE} ({EMBED_HINT})")
    return BackboneSection(backbone=name, space=space)


def archived_backbones(session: Session, settings: Settings, names: Sequence[str]) -> list[str]:
    """Those of `names` the archive holds vectors for (a report's default)."""
    return [name for name in names if archived_section(session, settings, name).space]


def prepare_backbone(
    session: Session,
    settings: Settings,
    name: str,
    image_ids: Sequence[int],
    allow_random: bool = False,
    progress: bool = False,
    embed: bool = False,
) -> BackboneSection:
    """The backbone's space in the archive; with `embed`, load the backbone and fill its
    space first. A backbone without a space, or (embedding) without weights, comes back
    skipped with a one-line reason."""
    if not embed:
        return archived_section(session, settings, name)
    from mammosearch.embed import WeightsUnavailable, load_embedder, resolve_backbone_name
    from mammosearch.embed.spaces import find_space, get_or_create_space

    configured, _ = resolve_backbone_name(settings.backbone, settings.weights_path)
    weights = settings.weights_path if name == configured else None
    try:
        embedder = load_embedder(
            name, weights, allow_random=allow_random, batch_size=settings.embed_batch_size
        )
    except WeightsUnavailable as exc:
        return BackboneSection(backbone=name, skipped=exc.summary)
    existed = find_space(session, embedder.identity) is not None
    space = get_or_create_space(session, embedder)
    if not existed and name != configured:
        space.active = False  # a comparison space: not re-evaluated on the schedule
    session.commit()
    section = BackboneSection(backbone=name, space=space)
    section.embedded_now, section.embed_failures = embed_missing(
        session, space, embedder, image_ids, settings.embed_batch_size, progress
    )
    return section


# --- evaluation and derived numbers ------------------------------------------------------------


def evaluate_section(
    session: Session,
    settings: Settings,
    section: BackboneSection,
    options: ReportOptions,
    done: dict[str, EvaluationResult] | None = None,
) -> None:
    """One evaluation run per distance metric (unless `done` holds it already: metric ->
    result with its per-query rows), plus the vote confusion, timings and maps."""
    assert section.space is not None
    spec = get_label(options.label)
    section.vectors = load_space_vectors(session, section.space)
    labels = [spec.of_image(row) for row in section.vectors.image_rows]
    classes = class_order(options.label, {label for label in labels if label is not None})
    for metric in options.metrics:
        try:
            section.results[metric] = (done or {}).get(metric) or evaluate_space(
                session, settings, section.space, label=options.label,
                protocol=options.protocol, metric=metric, ks=options.ks,
                per_query_limit=None, per_query_k=NEIGHBOURS_SHOWN, trigger=options.trigger,
            )  # fmt: skip
        except EvaluationError as exc:
            section.errors[metric] = str(exc)
            continue
        section.search_ms_by_k[metric] = search_ms_by_k(section.vectors.vectors, metric, options.ks)
        section.confusion[metric] = neighbour_vote_confusion(
            section.vectors.vectors, labels, section.vectors.patient_ids, classes,
            metric=metric, protocol=options.protocol, k=options.vote_k,
        )  # fmt: skip
    if section.results and len(section.vectors.image_ids) >= 2:
        section.projection = project(section.vectors.vectors, tsne=options.tsne)


# --- figures -----------------------------------------------------------------------------------


def _label_title(options: ReportOptions) -> str:
    return f"label {options.label}, protocol {options.protocol}"


def write_figures(out_dir: Path, sections: list[BackboneSection], options: ReportOptions) -> None:
    from mammosearch.evaluate.plots import CurveSeries, plot_confusion, plot_curves, plot_projection

    evaluated = [s for s in sections if s.results]
    if not evaluated:
        return
    series = [
        CurveSeries(
            s.backbone, metric, s.untrained, result.metrics, s.search_ms_by_k.get(metric, {})
        )
        for s in evaluated
        for metric, result in s.results.items()
    ]
    chance = next(iter(evaluated[0].results.values())).chance
    plot_curves(
        series, chance, options.ks, out_dir / "figures" / "curves.png",
        f"Retrieval against k ({_label_title(options)}; leave-one-out over the archive)",
    )  # fmt: skip
    spec = get_label(options.label)
    for section in evaluated:
        section.figures["curves"] = "figures/curves.png"
        marker = " (UNTRAINED weights)" if section.untrained else ""
        assert section.vectors is not None
        labels = [spec.of_image(row) for row in section.vectors.image_rows]
        classes = class_order(options.label, {label for label in labels if label is not None})
        if section.projection is not None:
            name = f"figures/projection-{section.slug}.png"
            plot_projection(
                section.projection, labels, classes, options.label, out_dir / name,
                f"{section.backbone}{marker}: embeddings coloured by {options.label}",
            )  # fmt: skip
            section.figures["projection"] = name
        for metric, confusion in section.confusion.items():
            name = f"figures/confusion-{section.slug}-{metric}.png"
            plot_confusion(
                confusion, options.label, out_dir / name,
                f"{section.backbone}{marker} / {metric}, {options.protocol}",
            )  # fmt: skip
            section.figures[f"confusion-{metric}"] = name


# --- the per-query table (Table 1) -------------------------------------------------------------


def choose_queries(sections: list[BackboneSection], limit: int) -> list[int]:
    """One query image per class (the lowest image id of each), from the first evaluated space."""
    for section in sections:
        for result in section.results.values():
            chosen: dict[Any, int] = {}
            for row in result.per_query:
                chosen.setdefault(row["label"], row["query_image_id"])
            return list(chosen.values())[:limit]
    return []


def per_query_table(
    session: Session, out_dir: Path, sections: list[BackboneSection], query_ids: list[int]
) -> list[dict[str, Any]]:
    """For each chosen query: its neighbours in every backbone x metric, with thumbnails."""
    thumbs: dict[int, str | None] = {}

    def thumb(image_id: int) -> str | None:
        if image_id not in thumbs:
            image = session.get(Image, image_id)
            name = f"thumbs/{image_id}.png"
            ok = image is not None and write_thumbnail(Path(image.stored_path), out_dir / name)
            thumbs[image_id] = name if ok else None
        return thumbs[image_id]

    table = []
    for query_id in query_ids:
        entry: dict[str, Any] = {
            "query_image_id": query_id,
            "thumb": thumb(query_id),
            "results": [],
        }
        for section in sections:
            for metric, result in section.results.items():
                row = next((r for r in result.per_query if r["query_image_id"] == query_id), None)
                if row is None:
                    continue
                entry.update(
                    {key: row[key] for key in ("query_name", "patient_id", "label", "candidates")}
                )
                image = session.get(Image, query_id)
                entry["source_patient_id"] = image.patient.source_patient_id if image else None
                neighbours = [{**n, "thumb": thumb(n["image_id"])} for n in row["neighbours"]]
                entry["results"].append(
                    {
                        "backbone": section.backbone,
                        "untrained": section.untrained,
                        "metric": metric,
                        "neighbours": neighbours,
                        f"precision@{NEIGHBOURS_SHOWN}": row[f"precision@{NEIGHBOURS_SHOWN}"],
                    }
                )
        if entry["results"]:
            table.append(entry)
    return table


# --- the document, the HTML, the runs ----------------------------------------------------------


def _dataset(sections: list[BackboneSection], options: ReportOptions) -> dict[str, Any]:
    spec = get_label(options.label)
    loaded = next((s.vectors for s in sections if s.vectors is not None and s.results), None)
    if loaded is None:
        return {"images": 0, "patients": 0, "label_counts": {}, "unlabelled": 0}
    labels = [spec.of_image(row) for row in loaded.image_rows]
    counts = Counter(label for label in labels if label is not None)
    classes = class_order(options.label, set(counts))
    return {
        "images": len(loaded.image_ids),
        "patients": len(set(loaded.patient_ids)),
        "label_counts": {str(label): counts[label] for label in classes},
        "unlabelled": sum(1 for label in labels if label is None),
        "label_description": spec.description,
    }


def _section_document(section: BackboneSection) -> dict[str, Any]:
    document: dict[str, Any] = {
        "backbone": section.backbone,
        "status": "skipped" if section.skipped else "evaluated",
        "skipped_reason": section.skipped,
        "embedding_space": section.space.describe() if section.space is not None else None,
        "untrained": section.untrained,
        "embedded_now": section.embedded_now,
        "embed_failures": {str(k): v for k, v in section.embed_failures.items()},
        "errors": section.errors,
        "projection": section.projection.to_dict() if section.projection else None,
        "figures": section.figures,
        "results": {},
        "training_overlap": next(
            (r.training_overlap for r in section.results.values() if r.training_overlap), None
        ),
    }
    for metric, result in section.results.items():
        document["results"][metric] = {
            **result.to_dict(include_per_query=False),
            "search_ms_by_k": {str(k): v for k, v in section.search_ms_by_k[metric].items()},
            "confusion": section.confusion[metric].to_dict(),
        }
    return document


def build_document(
    sections: list[BackboneSection],
    options: ReportOptions,
    per_query: list[dict[str, Any]],
    archive_images: int | None,
) -> dict[str, Any]:
    rule = get_protocol(options.protocol)
    map_key = METRICS["map"].key(None)
    return {
        "report_version": 1,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": options.label,
        "protocol": options.protocol,
        "protocol_description": rule.description,
        "metrics": list(options.metrics),
        "ks": list(options.ks),
        "map_key": map_key,
        "vote_k": options.vote_k,
        "neighbours_shown": NEIGHBOURS_SHOWN,
        "archive_images": archive_images,
        "dataset": _dataset(sections, options),
        "software": software_versions(),
        "backbones": [_section_document(section) for section in sections],
        "per_query": per_query,
        "figures": {"curves": "figures/curves.png"} if any(s.results for s in sections) else {},
    }


def render_html(document: dict[str, Any]) -> str:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape(["html"])
    )
    return environment.get_template("report.html").render(report=document, metrics=METRICS)


def _link_runs(session: Session, out_dir: Path, sections: list[BackboneSection]) -> None:
    """Point each run at this report and its figures (what the web service shows)."""
    for section in sections:
        for metric, result in section.results.items():
            run = session.get(EvaluationRun, result.run_id)
            if run is None:
                continue
            figures = [
                section.figures[kind]
                for kind in ("curves", "projection", f"confusion-{metric}")
                if kind in section.figures
            ]
            run.report_path = str(out_dir)
            run.config = {**(run.config or {}), "report_figures": figures}
    session.commit()


def finish_report(
    session: Session,
    out_dir: Path,
    sections: list[BackboneSection],
    options: ReportOptions,
    archive_images: int | None = None,
) -> ReportOutcome:
    """Figures, per-query table, report.json and report.html for evaluated sections."""
    out_dir = Path(out_dir).resolve()
    write_figures(out_dir, sections, options)
    per_query = per_query_table(
        session, out_dir, sections, choose_queries(sections, options.query_rows)
    )
    document = build_document(sections, options, per_query, archive_images)
    json_path, html_path = out_dir / "report.json", out_dir / "report.html"
    atomic_write_text(json_path, json.dumps(document, indent=2, default=str), SHARED)
    atomic_write_text(html_path, render_html(document), SHARED)
    _link_runs(session, out_dir, sections)
    return ReportOutcome(out_dir, html_path, json_path, document, sections)


def write_report(
    session: Session,
    settings: Settings,
    out_dir: Path,
    backbones: Sequence[str],
    options: ReportOptions | None = None,
    allow_random: bool = False,
    progress: bool = False,
    embed: bool = False,
) -> ReportOutcome:
    """Evaluate and report every backbone in `backbones` from the archive's spaces; with
    `embed`, embed the vectors they miss first (into comparison spaces)."""
    options = options or ReportOptions()
    get_label(options.label)
    get_protocol(options.protocol)
    image_ids = report_image_ids(session)
    if not image_ids:
        raise EvaluationError(
            "no embedded images to report on: import and embed an archive first "
            "(mammosearch ingest ...)"
        )
    sections: list[BackboneSection] = []
    for name in tqdm(list(backbones), desc="backbones", unit="backbone", disable=not progress):
        section = prepare_backbone(
            session, settings, name, image_ids, allow_random, progress, embed=embed
        )
        if section.space is not None:
            evaluate_section(session, settings, section, options)
        sections.append(section)
    return finish_report(session, out_dir, sections, options, archive_images=len(image_ids))


def write_space_report(
    session: Session,
    settings: Settings,
    out_dir: Path,
    spaces: Sequence[EmbeddingSpace],
    options: ReportOptions | None = None,
    done: dict[int, dict[str, EvaluationResult]] | None = None,
) -> ReportOutcome:
    """The same report for spaces that already hold their vectors (scheduled runs);
    `done` (space id -> metric -> result) reuses evaluations that were just run."""
    options = options or ReportOptions()
    sections = []
    for space in spaces:
        section = BackboneSection(backbone=space.backbone, space=space)
        evaluate_section(session, settings, section, options, (done or {}).get(space.id))
        sections.append(section)
    return finish_report(session, out_dir, sections, options)
