"""What the Models page shows of each space's figures: per-class comparisons and the vote's
reliability tables (with a small reliability diagram), read from where search and the CLI
read them: a trained model's cross-validation record, a base space's evaluation runs, and
`evaluate.runs.measured_vote` for the tables a suggestion speaks from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape
from sqlalchemy.orm import Session

from mammosearch.db.models import EmbeddingSpace
from mammosearch.evaluate.labels import get_label
from mammosearch.search.cases import DEFAULT_FUSION, SEARCH_UNITS

VOTE_LABELS = ("birads", "pathology")
OVERALL_KEYS = ("precision@5", "ndcg@5", "vote_accuracy", "vote_balanced_accuracy")
RUNS_READ = 50
"""A base space's newest evaluation runs searched for each label and unit's latest figures."""


@dataclass
class FigureColumn:
    """One space's (or one model's) figures for one label in one search unit."""

    title: str
    source: str
    label: str
    unit: str
    overall: dict[str, float | None] = field(default_factory=dict)
    per_class_p5: dict[str, float | None] = field(default_factory=dict)
    recall: dict[str, float | None] = field(default_factory=dict)


def cv_columns(name: str, cv: Mapping[str, Any]) -> list[FigureColumn]:
    """A trained model's out-of-fold figures and the base space's on the same folds, image
    and case level (cases by the served fusion): the record `mammosearch train` wrote."""
    label = str(cv.get("label") or "birads")
    folds = f"{cv.get('folds')}-fold out-of-fold"
    columns = []
    for key, title in (("trained", name), ("base", f"{name}'s base, same folds")):
        figures = cv.get(key) or {}
        if figures.get("metrics"):
            columns.append(
                FigureColumn(
                    title,
                    folds,
                    label,
                    "image",
                    overall={k: figures["metrics"].get(k) for k in OVERALL_KEYS},
                    per_class_p5=(figures.get("per_class_precision@5") or {}).get("similarity", {}),
                    recall=figures.get("vote_per_class_recall") or {},
                )  # fmt: skip
            )
        case = ((cv.get(f"{key}_case") or {}).get(DEFAULT_FUSION)) or {}
        if case.get("metrics"):
            vote = case.get("vote_reliability") or {}
            overall = {k: case["metrics"].get(k) for k in OVERALL_KEYS}
            overall.update(
                vote_accuracy=vote.get("accuracy"),
                vote_balanced_accuracy=vote.get("balanced_accuracy"),
            )
            columns.append(
                FigureColumn(
                    title,
                    f"{folds}, cases by {DEFAULT_FUSION}",
                    label,
                    "case",
                    overall=overall,
                    recall=vote.get("per_class_recall") or {},
                )  # fmt: skip
            )
    return columns


def run_columns(
    session: Session, space: EmbeddingSpace, title: str, metric: str
) -> list[FigureColumn]:
    """A base space's latest patient-excluded evaluation per label and unit (similarity
    order, cases by the served fusion); a run's vote tables give the other label's recall."""
    from mammosearch.evaluate.runs import VOTE_KEYS, latest_patient_excluded_runs

    runs = latest_patient_excluded_runs(session, space.id, metric, RUNS_READ)
    columns: dict[tuple[str, str], FigureColumn] = {}
    for run in runs:
        config = run.config or {}
        unit = str(config.get("unit") or "image")
        if (config.get("order") or "similarity") != "similarity" or unit not in SEARCH_UNITS:
            continue
        if unit == "case" and config.get("fusion") != DEFAULT_FUSION:
            continue
        source = f"patient-excluded evaluation, run #{run.id}"
        own = columns.get((run.label, unit))
        if own is None or not own.per_class_p5:
            column = own or FigureColumn(title, source, run.label, unit)
            column.source = source
            column.overall.update({k: (run.metrics or {}).get(k) for k in OVERALL_KEYS[:2]})
            column.per_class_p5 = {
                label: row.get("precision@5") for label, row in (run.per_class or {}).items()
            }
            columns[(run.label, unit)] = column
        for label, table in (config.get(VOTE_KEYS[unit]) or {}).items():
            column = columns.setdefault(
                (label, unit), FigureColumn(title, f"vote of run #{run.id}", label, unit)
            )
            if column.overall.get("vote_accuracy") is None:
                column.overall.update(
                    vote_accuracy=table.get("accuracy"),
                    vote_balanced_accuracy=table.get("balanced_accuracy"),
                )
                column.recall = table.get("per_class_recall") or {}
    return list(columns.values())


@dataclass
class Comparison:
    """One label in one unit: the spaces side by side, overall then per class."""

    label: str
    unit: str
    columns: list[FigureColumn]
    classes: list[str]


def comparisons(columns: Iterable[FigureColumn]) -> list[Comparison]:
    """Columns grouped by label and unit (BIRADS before pathology, images before cases)."""
    grouped: dict[tuple[str, str], list[FigureColumn]] = {}
    for column in columns:
        grouped.setdefault((column.label, column.unit), []).append(column)
    order = {label: n for n, label in enumerate(VOTE_LABELS)}
    tables = []
    for (label, unit), members in sorted(
        grouped.items(),
        key=lambda item: (order.get(item[0][0], 9), item[0][0], SEARCH_UNITS.index(item[0][1])),
    ):
        try:
            known = [str(c) for c in get_label(label).classes]
        except ValueError:
            known = []
        seen = {c for column in members for c in (*column.per_class_p5, *column.recall)}
        classes = [c for c in known if c in seen] + sorted(seen - set(known))
        tables.append(Comparison(label, unit, members, classes))
    return tables


# --- The vote's reliability ----------------------------------------------------------------


@dataclass
class ReliabilityView:
    """One measured table as the page shows it, or why there is none."""

    label: str
    unit: str
    table: dict[str, Any] | None
    diagram: Markup | None = None


def reliability_views(measured: Mapping[str, Mapping[str, Any]]) -> list[ReliabilityView]:
    """Per unit (image, case) and label (BIRADS, pathology): the table search reads, with
    its diagram; `measured` is {unit: measured_vote(...)}."""
    views = []
    for unit in SEARCH_UNITS:
        tables = measured.get(unit) or {}
        for label in VOTE_LABELS:
            table = tables.get(label)
            views.append(
                ReliabilityView(label, unit, table, reliability_svg(table) if table else None)
            )
    return views


def reliability_svg(table: Mapping[str, Any], width: int = 260, height: int = 150) -> Markup:
    """A reliability diagram: per vote-share bin, how often its suggestions were right (a bar
    over the bin's share range: dark where suggested, pale where "uncertain"), the floor
    (dashed) and the line where precision equals the share (dotted)."""
    left, right, top, bottom = 34, 16, 8, 28
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(share: float) -> float:
        return left + share * plot_w

    def y(precision: float) -> float:
        return top + (1.0 - precision) * plot_h

    floor = float(table["floor"])
    parts = [
        f'<svg class="reliability" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="reliability diagram">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    for row in table["bins"]:
        precision = float(row["precision"])
        kind = "suggested" if precision >= floor else "uncertain"
        x0, x1 = x(float(row["low"])) + 1, x(float(row["high"])) - 1
        tip = escape(
            f"share {row['low']:.2f}-{row['high']:.2f}: {row['correct']}/{row['suggestions']} "
            f"right ({precision:.0%}), {kind}"
        )
        parts.append(
            f'<rect class="bar-{kind}" x="{x0:.1f}" y="{y(precision):.1f}" '
            f'width="{max(1.0, x1 - x0):.1f}" height="{y(0.0) - y(precision):.1f}">'
            f"<title>{tip}</title></rect>"
        )
    parts += [
        f'<line class="diagonal" x1="{x(0):.1f}" y1="{y(0):.1f}" x2="{x(1):.1f}" y2="{y(1):.1f}"/>',
        f'<line class="floor" x1="{x(0):.1f}" y1="{y(floor):.1f}" x2="{x(1):.1f}" '
        f'y2="{y(floor):.1f}"/>',
        f'<text class="floor-label" x="{x(0) + 3:.1f}" y="{y(floor) - 3:.1f}">'
        f"floor {floor:.0%}</text>",
    ]
    for tick in (0.0, 0.5, 1.0):
        parts.append(
            f'<text x="{left - 4}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.0%}</text>'
            f'<text x="{x(tick):.1f}" y="{top + plot_h + 13}" text-anchor="middle">'
            f"{tick:.0%}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 3}" text-anchor="middle">'
        "leader's share of the vote</text></svg>"
    )
    return Markup("".join(parts))
