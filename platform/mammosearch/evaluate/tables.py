"""Readable text tables of a result: metrics as rows, k as columns."""

from __future__ import annotations

from typing import Any

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
        f"protocol {result.protocol}, label {result.label}, metric {result.metric}, "
        f"{result.config.get('order', 'similarity')} order; "
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


def headline_k(ks: list[int] | tuple[int, ...]) -> int:
    """The k a one-line summary quotes: 5 when it was measured, else the smallest."""
    return 5 if 5 in ks else min(ks)


def metric_grid(
    metrics: dict[str, Any], chance: dict[str, Any], ks: list[int] | tuple[int, ...]
) -> dict[str, Any]:
    """Metric x k as data for a page: `{"ks", "rows": [{"name", "values", "chance"}],
    "single": [{"name", "value", "chance"}]}` (mAP and the search times); keys a run does not
    have are None, and metrics this code does not know are listed under "single" as they are."""
    rows, single, shown = [], [], set()
    for metric in METRICS.values():
        if metric.at_k:
            keys = [metric.key(k) for k in ks]
            shown.update(keys)
            rows.append({
                "name": metric.name, "description": metric.description,
                "values": [metrics.get(key) for key in keys],
                "chance": [chance.get(key) for key in keys],
            })  # fmt: skip
    for key, value in metrics.items():
        if key in shown or key.startswith("search_ms"):
            continue
        single.append({"name": key, "value": value, "chance": chance.get(key)})
    return {"ks": list(ks), "rows": rows, "single": single}


def per_class_rows(per_class: dict[str, Any], ks: list[int] | tuple[int, ...]) -> dict[str, Any]:
    """One row per class at the headline k: images, queries, P/R/NDCG@k, mAP and chance P@k."""
    k = headline_k(ks)
    keys = [METRICS[name].key(k) for name in ("precision", "recall", "ndcg")]
    map_keys = sorted({key for row in per_class.values() if isinstance(row, dict)
                       for key in row if key.startswith("map")})  # fmt: skip
    rows = []
    for label, row in per_class.items():
        if not isinstance(row, dict):
            continue
        rows.append({
            "label": label, "images": row.get("images"), "queries": row.get("queries"),
            "values": [row.get(key) for key in [*keys, *map_keys]],
            "chance": (row.get("chance") or {}).get(keys[0]),
        })  # fmt: skip
    return {"k": k, "columns": [*keys, *map_keys], "chance_of": keys[0], "rows": rows}


def summary_rows(document: dict[str, Any], k: int = 10) -> list[dict[str, Any]]:
    """backbone x metric -> P/R/NDCG@k, mAP and search time, each with its chance level."""
    rows = []
    for entry in document["backbones"]:
        if entry["status"] == "skipped":
            rows.append({"backbone": entry["backbone"], "skipped": entry["skipped_reason"]})
            continue
        for metric, result in entry["results"].items():
            values, chance = result["metrics"], result["chance"]
            shown_k = k if f"precision@{k}" in values else max(result["ks"])
            row: dict[str, Any] = {
                "backbone": entry["backbone"]
                + (" (UNTRAINED)" if entry["untrained"] else "")
                + (
                    " (LEAKY: trained on these images; see its out-of-fold figures)"
                    if (entry.get("training_overlap") or {}).get("leaky")
                    else ""
                ),
                "metric": metric,
                "k": shown_k,
            }
            for name in ("precision", "recall", "ndcg"):
                key = f"{name}@{shown_k}"
                row[key] = (values[key], chance[key])
            row[document["map_key"]] = (values[document["map_key"]], chance[document["map_key"]])
            row["search_ms_median"] = values["search_ms_median"]
            rows.append(row)
    return rows


def format_summary_rows(document: dict[str, Any], k: int = 10) -> str:
    """The summary as text (what the CLI prints at the end)."""
    lines = []
    for row in summary_rows(document, k):
        if "skipped" in row:
            lines.append(f"{row['backbone']}: SKIPPED ({row['skipped']})")
            continue
        cells = [
            f"{key} {value:.3f} (chance {chance:.3f})"
            for key, pair in row.items()
            if isinstance(pair, tuple)
            for value, chance in [pair]
        ]
        lines.append(
            f"{row['backbone']} / {row['metric']}: " + ", ".join(cells)
            + f", search {row['search_ms_median']:.3f} ms"
        )  # fmt: skip
    return "\n".join(lines)
