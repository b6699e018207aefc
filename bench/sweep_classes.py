"""Per-class tables of `bench/sweep_train.py` records: every scored label, images and cases.

    python bench/sweep_classes.py sweep.jsonl [more.jsonl ...]

For each variant and each label it was scored on (the trained one and `other_labels`), one
row per space: out-of-fold P@5 of images and of cases (the served `mean` fusion), pooled
and per class, then the per-fold image P@5. Markdown, as in docs/learned-embeddings.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

KEY = "precision@5"
FUSION = "mean"


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def label_figures(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{label: {"trained"|"base": image summary-ish, "<space>_case": case summary}}."""
    trained_label = record.get("label", "birads")
    figures = {
        trained_label: {
            "trained": {"metrics": record["trained"], "per_class": record["per_class"]["trained"]},
            "base": {"metrics": record["base"], "per_class": record["per_class"]["base"]},
            "trained_case": record.get("trained_case", {}),
            "base_case": record.get("base_case", {}),
        }
    }
    for label, other in (record.get("other_labels") or {}).items():
        figures[label] = {
            space: {
                "metrics": other[space]["metrics"],
                "per_class": other[space][f"per_class_{KEY}"],
            }
            for space in ("trained", "base")
        } | {space: other[space] for space in ("trained_case", "base_case")}
    return figures


def rows(paths: list[Path]) -> list[str]:
    lines = []
    for path in paths:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            folds = record.get("folds_scored", record["config"]["folds"])
            for label, figures in label_figures(record).items():
                classes = list(figures["trained"]["per_class"].get("similarity", {}))
                lines.append(
                    f"\n{record['variant']} (learns {record.get('label', 'birads')}), "
                    f"same-{label} P@5, folds 1-{folds}:\n"
                )
                lines.append(
                    "| space | images | "
                    + " | ".join(str(c) for c in classes)
                    + " | cases (mean) | "
                    + " | ".join(str(c) for c in classes)
                    + " |"
                )
                lines.append("|" + "---|" * (3 + 2 * len(classes)))
                for space in ("trained", "base"):
                    image = figures[space]
                    per_class = image["per_class"].get("similarity", {})
                    case = (figures[f"{space}_case"] or {}).get(FUSION, {})
                    case_class = case.get(f"per_class_{KEY}", {})
                    cells = [_cell(image["metrics"][KEY])]
                    cells += [_cell(per_class.get(c)) for c in classes]
                    cells.append(_cell(case.get("metrics", {}).get(KEY)))
                    cells += [_cell(case_class.get(c)) for c in classes]
                    lines.append(f"| {space} | " + " | ".join(cells) + " |")
            per_fold = record.get("per_fold", [])
            if per_fold:
                lines.append(
                    f"\nper fold, image P@5 ({record['variant']}): "
                    + ", ".join(f"{f['trained']:.3f} (base {f['base']:.3f})" for f in per_fold)
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", type=Path, nargs="+")
    print("\n".join(rows(parser.parse_args().paths)))


if __name__ == "__main__":
    main()
