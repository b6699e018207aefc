"""The default training on the dev archive: base vs trained out-of-fold figures, and its time.

    python bench/bench_train.py [--dev-data ../shared/data/cdd-cesm-dev] [--out DIR] [-- ARGS]

Imports the dev folder into a fresh SQLite data directory (no embedding needed), runs
`mammosearch train --label birads --out DIR` with the defaults (plus any ARGS), and prints
base vs trained out-of-fold P@5 / NDCG@5 / vote accuracy and the wall time of the whole
run. The time is also given as a ratio to one base-space embedding pass over the same
images measured in this run, which stays comparable across machines of different speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEV_DATA = REPO.parent / "shared" / "data" / "cdd-cesm-dev"


def run(args: list[str], env: dict[str, str]) -> None:
    subprocess.run([str(Path(sys.executable).parent / "mammosearch"), *args], env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev-data", type=Path, default=DEV_DATA)
    parser.add_argument("--out", type=Path, default=None, help="Model dir (default: a temp dir)")
    parser.add_argument("train_args", nargs="*", help="Extra `mammosearch train` arguments")
    args = parser.parse_args()
    if not (args.dev_data / "Radiology manual annotations.xlsx").exists():
        sys.exit(f"{args.dev_data}: no CDD-CESM dev data here")
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    env = {
        **os.environ,
        "MAMMOSEARCH_DATA_DIR": str(work / "data"),
        "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
        "MAMMOSEARCH_BACKBONE": "efficientnet-lite0",
    }
    env.pop("CELERY_BROKER_URL", None)
    out = args.out or work / "model"
    run(["db", "upgrade"], env)
    started = time.perf_counter()
    run(["ingest", "cdd-cesm", str(args.dev_data)], env)  # imports and embeds the base space
    base_pass_s = time.perf_counter() - started
    started = time.perf_counter()
    run(["train", "--label", "birads", "--out", str(out), *args.train_args], env)
    train_s = time.perf_counter() - started
    record = json.loads((out / "model.json").read_text())
    cv = record["cross_validation"]
    trained, base = cv["trained"]["metrics"], cv["base"]["metrics"]
    device = record["training"]["device"]
    print(f"\nout-of-fold, {cv['protocol']}, {cv['folds']} folds, device {device}")
    for key in (
        "precision@5", "consensus_precision@5", "ndcg@5", "consensus_ndcg@5",
        "vote_accuracy", "vote_balanced_accuracy",
    ):  # fmt: skip
        print(f"  {key:<24} trained {trained[key]:.3f}   base {base[key]:.3f}")
    per_class = cv["trained"]["per_class_precision@5"]
    print(
        "  P@5 per class, similarity -> consensus order: "
        + ", ".join(
            f"{label} {value:.3f} -> {per_class['consensus'][label]:.3f}"
            for label, value in per_class["similarity"].items()
        )
    )
    archive, base_archive = cv["trained_archive"]["metrics"], cv["base_archive"]["metrics"]
    print(f"{cv['archive_protocol']}:")
    for key in ("precision@5", "consensus_precision@5", "ndcg@5", "vote_accuracy"):
        print(f"  {key:<24} trained {archive[key]:.3f}   base {base_archive[key]:.3f}")
    print(
        f"training wall time {train_s / 60:.1f} min (cross-validation and final model) = "
        f"{train_s / base_pass_s:.0f}x one import + base embedding pass ({base_pass_s:.0f} s)"
    )


if __name__ == "__main__":
    main()
