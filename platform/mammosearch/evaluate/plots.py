"""The report's figures as PNG files (matplotlib's Agg canvas; no pyplot, no display).

Each function takes plain data and a path, and writes the file atomically.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mammosearch.durable.atomic_files import SHARED, atomic_path
from mammosearch.evaluate.neighbour_vote import VoteConfusion
from mammosearch.evaluate.projection import Projection

DPI = 110
CURVE_METRICS = (("precision", "Precision@k"), ("recall", "Recall@k"), ("ndcg", "NDCG@k"))
LINESTYLES = {"cosine": "-", "l2": "--"}
UNLABELLED_COLOUR = "#bbbbbb"


@dataclass
class CurveSeries:
    """One line per backbone x distance metric."""

    backbone: str
    metric: str
    untrained: bool
    values: dict[str, float]  # "precision@5" -> mean
    search_ms_by_k: dict[int, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.backbone} / {self.metric}" + (" (UNTRAINED)" if self.untrained else "")


def save_png(figure: Figure, path: Path) -> Path:
    """Write `figure` to `path` as PNG, atomically, on the Agg canvas (no pyplot)."""
    FigureCanvasAgg(figure)
    with atomic_path(path, SHARED, suffix=".png.tmp") as temp_path:  # the web service reads it
        figure.savefig(temp_path, format="png", dpi=DPI, bbox_inches="tight")
    return path


def plot_curves(
    series: Sequence[CurveSeries],
    chance: dict[str, float],
    ks: Sequence[int],
    path: Path,
    title: str,
) -> Path:
    """Precision, recall, NDCG and search time against k (the paper's Figures 3 and 4)."""
    figure = Figure(figsize=(12, 8.5))
    axes = figure.subplots(2, 2).ravel()
    backbones = sorted({line.backbone for line in series})
    palette = {name: f"C{position % 10}" for position, name in enumerate(backbones)}
    ks = list(ks)
    for axis, (name, heading) in zip(axes, CURVE_METRICS, strict=False):
        for line in series:
            axis.plot(
                ks, [line.values.get(f"{name}@{k}", np.nan) for k in ks],
                color=palette[line.backbone], linestyle=LINESTYLES.get(line.metric, "-."),
                marker="o", markersize=4, label=line.label,
            )  # fmt: skip
        axis.plot(
            ks, [chance.get(f"{name}@{k}", np.nan) for k in ks],
            color="black", linestyle=":", linewidth=1.5, label="chance (random ranking)",
        )  # fmt: skip
        axis.set_title(heading)
        axis.set_ylim(0, 1.02)
    timing = axes[3]
    for line in series:
        timing.plot(
            [k for k in ks if k in line.search_ms_by_k],
            [line.search_ms_by_k[k] for k in ks if k in line.search_ms_by_k],
            color=palette[line.backbone], linestyle=LINESTYLES.get(line.metric, "-."),
            marker="o", markersize=4, label=line.label,
        )  # fmt: skip
    timing.set_title("Search time per query (median, ms)")
    timing.set_ylim(bottom=0)
    for axis in axes:
        axis.set_xscale("log")
        axis.set_xticks(ks, [str(k) for k in ks])
        axis.minorticks_off()
        axis.set_xlabel("k")
        axis.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), frameon=False)
    figure.suptitle(title)
    figure.subplots_adjust(bottom=0.13, hspace=0.32, wspace=0.18, top=0.92)
    return save_png(figure, path)


def _scatter(
    axis: object,
    xy: np.ndarray,
    labels: Sequence[Hashable | None],
    classes: Sequence[Hashable],
    class_name: str,
) -> None:
    label_array = np.array([str(label) if label is not None else "" for label in labels])
    unlabelled = label_array == ""
    if unlabelled.any():
        axis.scatter(  # type: ignore[attr-defined]
            xy[unlabelled, 0], xy[unlabelled, 1], s=10, c=UNLABELLED_COLOUR, label="no label"
        )
    for position, label in enumerate(classes):
        chosen = label_array == str(label)
        if chosen.any():
            axis.scatter(  # type: ignore[attr-defined]
                xy[chosen, 0], xy[chosen, 1], s=14, color=f"C{position % 10}",
                label=f"{class_name} {label} ({int(chosen.sum())})", alpha=0.85,
                edgecolors="none",
            )  # fmt: skip


def plot_projection(
    projection: Projection,
    labels: Sequence[Hashable | None],
    classes: Sequence[Hashable],
    class_name: str,
    path: Path,
    title: str,
) -> Path:
    """PCA (axes with the variance they explain) and t-SNE, coloured by class (Figure 5)."""
    figure = Figure(figsize=(12, 5.4))
    pca_axis, tsne_axis = figure.subplots(1, 2)
    _scatter(pca_axis, projection.pca, labels, classes, class_name)
    first, second = projection.pca_variance_ratio
    pca_axis.set_title(f"PCA: first two components explain {100 * (first + second):.1f}%")
    pca_axis.set_xlabel(f"PC1 ({100 * first:.1f}% of variance)")
    pca_axis.set_ylabel(f"PC2 ({100 * second:.1f}% of variance)")
    if projection.tsne is not None and projection.tsne_rows is not None:
        _scatter(
            tsne_axis, projection.tsne, [labels[row] for row in projection.tsne_rows],
            classes, class_name,
        )  # fmt: skip
        tsne_axis.set_title(f"t-SNE ({projection.tsne_note})", fontsize=9)
    else:
        tsne_axis.text(0.5, 0.5, f"t-SNE {projection.tsne_note}", ha="center", va="center")
    tsne_axis.set_xticks([])
    tsne_axis.set_yticks([])
    handles, legend_labels = pca_axis.get_legend_handles_labels()
    figure.legend(handles, legend_labels, loc="center right", frameon=False)
    figure.suptitle(title)
    figure.subplots_adjust(right=0.84, wspace=0.15)
    return save_png(figure, path)


def plot_confusion(confusion: VoteConfusion, class_name: str, path: Path, title: str) -> Path:
    """Row-normalised true class x neighbours' vote, each cell with its count."""
    counts = confusion.matrix
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = 1.2 + 0.75 * len(confusion.classes)
    figure = Figure(figsize=(size + 1.4, size))
    axis = figure.subplots()
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for row in range(counts.shape[0]):
        for col in range(counts.shape[1]):
            axis.text(
                col, row, f"{counts[row, col]}\n{100 * shares[row, col]:.0f}%",
                ha="center", va="center", fontsize=8,
                color="white" if shares[row, col] > 0.55 else "black",
            )  # fmt: skip
    ticks = range(len(confusion.classes))
    axis.set_xticks(ticks, confusion.classes)
    axis.set_yticks(ticks, confusion.classes)
    axis.set_xlabel(f"neighbours' vote ({class_name}, top {confusion.k}, distance-weighted)")
    axis.set_ylabel(f"true {class_name}")
    accuracy = confusion.accuracy
    subtitle = f"accuracy {100 * accuracy:.1f}%" if accuracy is not None else "no votes"
    axis.set_title(f"{title}\n{subtitle}", fontsize=10)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of true class")
    return save_png(figure, path)
