"""Cross-validate training variants on the dev archive; one JSON line per variant.

    MAMMOSEARCH_DATA_DIR=DIR python bench/sweep_train.py --out sweep.jsonl \
        --variant loss=ce --variant loss=supcon,dim=128 ...

DIR's database must hold the dev archive (`mammosearch ingest cdd-cesm`). Each variant
starts from `TrainConfig()` (the defaults) and changes the named fields; `epochs`, `lr`,
`backbone_lr` and `batch_size` go to the fit. Variants that share the base, the input
size, the trained blocks and the views reuse one trunk cache. Figures are out-of-fold; the
"archive P@5" column scores the same unseen queries against the fold's whole archive,
training images included (what a site searching its own training archive sees).

Every variant is cross-validated on the same folds (train stratifies them by BIRADS
whatever label it learns, `labels=pathology` included) and scored for both BIRADS and
pathology (the record's `other_labels`). `--work DIR` keeps each variant's out-of-fold vectors (its
`fold-N.npz`, resumable) under DIR/<variant>; `--cache FILE` saves the trunk views and the
base space once and loads them in later runs (the same seed makes the same views).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from mammosearch.config import get_settings
from mammosearch.db.session import make_session_factory
from mammosearch.train.config import TrainConfig
from mammosearch.train.crossval import PANEL_LABELS
from mammosearch.train.dataset import load_labelled_images
from mammosearch.train.fit import FitConfig
from mammosearch.train.network import build_networks
from mammosearch.train.runner import Prepared, cross_validate, pick_device, prepare

FIT_FIELDS = {f.name: f.type for f in fields(FitConfig)}
COMPARED_TEST_VIEWS = (1, 2, 4, 6, 8)
SCORED_LABELS = PANEL_LABELS


def cached_prepare(data, config: TrainConfig, device: torch.device, cache_file: Path | None):
    """`prepare`, its trunk views and base vectors saved to / loaded from `cache_file`."""
    if cache_file is None:
        return prepare(data, config, device)
    if cache_file.is_file():
        saved = torch.load(cache_file, weights_only=False)
        if saved["key"] == cache_key(config) and saved["images"] == data.fingerprint():
            n_classes = {label: len(data.classes[label]) for label in config.labels}
            trunk, _top, weights_path = build_networks(
                config.base, config.trained_blocks, config.dim, n_classes
            )
            return Prepared(data, saved["cache"], trunk, saved["base_vectors"], weights_path)
    prepared = prepare(data, config, device)
    torch.save(
        {
            "key": cache_key(config),
            "images": data.fingerprint(),
            "cache": prepared.cache,
            "base_vectors": prepared.base_vectors,
        },
        cache_file,
    )
    return prepared


def cache_key(config: TrainConfig) -> tuple:
    return (
        config.base, config.image_size_px, config.trained_blocks, config.n_views,
        config.test_views, config.seed,
    )  # fmt: skip


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "defaults"


def parse_variant(text: str) -> TrainConfig:
    config = TrainConfig()
    for assignment in filter(None, text.split(",")):
        key, value = assignment.split("=", 1)
        if key in FIT_FIELDS:
            current = getattr(config.fit, key)
            parsed = value.lower() in ("1", "true", "yes") if isinstance(current, bool) else value
            config = config.with_fit(**{key: type(current)(parsed)})
        elif key == "labels":
            config = replace(config, labels=tuple(value.split("+")))
        else:
            current = getattr(config, key)
            config = replace(config, **{key: type(current)(value)})
    return config


def markdown_table(paths: list[Path]) -> str:
    """The variants of one or more sweep files as the table of docs/learned-embeddings.md."""
    header = (
        "| variant | P@1 | P@5 | P@10 | NDCG@5 | NDCG@10 | mAP | vote acc | vote bal. acc "
        "| P@5 by test views 1/2/4/6/8 | base P@5 | P@5 agreeing first (base) "
        "| archive P@5 (base) | CV s |"
    )
    lines = [header, "|" + "---|" * 14]
    for path in paths:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            t, b = record["trained"], record["base"]
            cells = [
                f"{t[key]:.3f}"
                for key in (
                    "precision@1", "precision@5", "precision@10", "ndcg@5", "ndcg@10", "map",
                    "vote_accuracy", "vote_balanced_accuracy",
                )
            ]  # fmt: skip
            by_views = [record.get(f"trained_test_views_{n}") for n in COMPARED_TEST_VIEWS]
            cells.append(" / ".join(f"{v['precision@5']:.3f}" if v else "-" for v in by_views))
            cells.append(f"{b['precision@5']:.3f}")
            cells.append(
                f"{t['consensus_precision@5']:.3f} ({b['consensus_precision@5']:.3f})"
                if "consensus_precision@5" in t
                else "-"
            )
            archive, base_archive = record.get("trained_archive"), record.get("base_archive")
            cells.append(
                f"{archive['precision@5']:.3f} ({base_archive['precision@5']:.3f})"
                if archive and base_archive
                else "-"
            )
            cells.append(f"{record['cv_s']:.0f}")
            lines.append(f"| {record['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, nargs="+", help="Print sweep files as markdown")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--work", type=Path, help="Keep each variant's fold vectors here")
    parser.add_argument("--cache", type=Path, help="Trunk views saved / loaded here")
    parser.add_argument(
        "--first-folds",
        type=int,
        help="Only the first N folds (with --work, run N = 1, 2, ... to interleave variants)",
    )
    parser.add_argument(
        "--no-epoch-validation", action="store_true", help="No per-epoch P@5 (faster)"
    )
    args = parser.parse_args()
    if args.table:
        print(markdown_table(args.table))
        return
    if args.out is None:
        parser.error("--out is required to run a sweep")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device()
    with make_session_factory(get_settings().database_url)() as session:
        labels_needed = {label for v in args.variant for label in parse_variant(v).labels}
        extra = sorted(labels_needed - set(SCORED_LABELS))
        data_by_primary = {
            primary: load_labelled_images(
                session, [primary, *[name for name in SCORED_LABELS if name != primary], *extra]
            )
            for primary in SCORED_LABELS
        }
    prepared_by_key: dict[tuple, Prepared] = {}
    for text in args.variant or [""]:
        config = parse_variant(text)
        data = data_by_primary.get(config.labels[0], data_by_primary[SCORED_LABELS[0]])
        key = (*cache_key(config), config.labels[0])
        started = time.perf_counter()
        if key not in prepared_by_key:
            prepared_by_key.clear()
            prepared_by_key[key] = cached_prepare(data, config, device, args.cache)
        prepared = prepared_by_key[key]
        prepare_s = time.perf_counter() - started
        work_dir = None
        if args.work is not None:
            work_dir = args.work / slug(text)
            work_dir.mkdir(parents=True, exist_ok=True)
        result = cross_validate(
            prepared,
            config,
            device,
            work_dir,
            quiet=False,
            compare_test_views=COMPARED_TEST_VIEWS,
            first_folds=args.first_folds,
            epoch_validation=not args.no_epoch_validation,
        )
        record = {
            "variant": text or "defaults",
            "config": config.to_dict(),
            "device": str(device),
            "prepare_s": round(prepare_s, 1),
            "cv_s": round(time.perf_counter() - started - prepare_s, 1),
            "trained": result["trained"]["metrics"],
            "base": result["base"]["metrics"],
            "chance": result["trained"]["chance"],
            **{
                f"trained_test_views_{n}": result[f"trained_test_views_{n}"]["metrics"]
                for n in COMPARED_TEST_VIEWS
                if f"trained_test_views_{n}" in result
            },
            "vote_per_class_recall": result["trained"]["vote_per_class_recall"],
            "trained_archive": result["trained_archive"]["metrics"],
            "base_archive": result["base_archive"]["metrics"],
            "label": result["label"],
            "folds_scored": result["folds_scored"],
            "per_class": {
                space: result[space]["per_class_precision@5"]
                for space in ("trained", "base", "trained_archive", "base_archive")
            },
            "vote_reliability": {
                space: result[space]["vote_reliability"]
                for space in ("trained", "trained_archive", "base")
            },
            "trained_case": result["trained_case"],
            "base_case": result["base_case"],
            "other_labels": result["other_labels"],
            "per_fold": [
                {
                    "fold": fold["fold"],
                    "trained": fold["trained"]["precision@5"],
                    "base": fold["base"]["precision@5"],
                }
                for fold in result["per_fold"]
            ],
        }
        with args.out.open("a") as stream:
            stream.write(json.dumps(record) + "\n")
        t, b = record["trained"], record["base"]
        print(
            f"{record['variant']}: P@5 {t['precision@5']:.3f} (base {b['precision@5']:.3f}) "
            f"NDCG@5 {t['ndcg@5']:.3f} vote {t['vote_accuracy']:.3f} "
            f"bal {t['vote_balanced_accuracy']:.3f} [{record['cv_s']} s]",
            flush=True,
        )


if __name__ == "__main__":
    main()
