"""Readable text tables of a result: metrics as rows, k as columns."""

from __future__ import annotations

from mammosearch.evaluate.leakage import format_overlap
from mammosearch.evaluate.metrics import METRICS
from mammosearch.evaluate.result import EvaluationResult


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(line[col]) for line in [header, *rows]) for col in range(len(header))]
    return [
        "  ".join(
            text.ljust(width) if col == 0 else text.rjust(width)
            for col, (text, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in [header, *rows]
    ]


def format_summary(result: EvaluationResult) -> str:
    """Space, protocol and counts, then metric x k with a chance row under each metric."""
    space = result.embedding_space
    weights = "pretrained" if space.get("pretrained") else "UNTRAINED (random weights)"
    lines = [
        f"embedding space {space.get('id')}: {space.get('backbone')}, {weights}, "
        f"weights {str(space.get('weights_sha256', ''))[:12]} ({space.get('weights_source')}), "
        f"dim {space.get('dim')}",
        f"protocol {result.protocol}, label {result.label}, metric {result.metric}; "
        f"{result.queries} queries over {result.archive_size} images "
        f"(excluded: {result.excluded.get('no_label', 0)} without label, "
        f"{result.excluded.get('no_relevant_candidate', 0)} without a relevant candidate)",
    ]
    if result.protocol_note:
        lines.append(f"NOTE: {result.protocol_note}")
    lines += format_overlap(result.training_overlap)
    header = ["metric", *[f"k={k}" for k in result.ks]]
    rows: list[list[str]] = []
    for metric in METRICS.values():
        if not metric.at_k:
            continue
        rows.append([metric.name, *[_cell(result.metrics[metric.key(k)]) for k in result.ks]])
        rows.append(["  chance", *[_cell(result.chance[metric.key(k)]) for k in result.ks]])
    lines += ["", *_grid(header, rows), ""]
    for metric in METRICS.values():
        if metric.at_k:
            continue
        key = metric.key(result.map_cutoff)
        lines.append(f"{key}: {_cell(result.metrics[key])} (chance {_cell(result.chance[key])})")
    lines.append(
        f"search time per query: median {result.metrics['search_ms_median']:.3f} ms, "
        f"p95 {result.metrics['search_ms_p95']:.3f} ms"
    )
    return "\n".join(lines)


def format_per_class(result: EvaluationResult, k: int | None = None) -> str:
    """One row per class: images, queries, and P/R/NDCG at one k plus mAP."""
    k = k if k is not None else min(result.ks, key=lambda value: (value != 5, value))
    map_key = METRICS["map"].key(result.map_cutoff)
    keys = [METRICS[name].key(k) for name in ("precision", "recall", "ndcg")] + [map_key]
    header = ["class", "images", "queries", *keys]
    rows = [
        [label, str(row["images"]), str(row["queries"]), *[_cell(row[key]) for key in keys]]
        for label, row in result.per_class.items()
    ]
    return "\n".join(_grid(header, rows))
