"""Out-of-fold P@5 against the number of training patients: what more labelled data buys.

    MAMMOSEARCH_DATA_DIR=DIR python bench/learning_curve.py --fractions 0.25 0.5 0.75 1 \
        [--draws 3] [--seed 0] [--out curve.jsonl] [--plot curve.png]

The default training (`TrainConfig()`) on the same folds as `mammosearch train`, but each
fold's model learns from a seeded random share of that fold's training patients only; the
validation pools (queries and candidates) stay the fold's own, so every row is scored on
the same images by the same rule (patient-excluded, similarity and consensus order). The
slope says how far more labelled patients would carry the embedding, the one lever that no
training option replaces.

`--draws N` trains each fraction below 1 on N different patient subsets (draw 0 is the
subset of earlier runs), so a point's spread shows how much of it is the subset's luck.
`--seed` picks another split (and cached views), as `bench/sweep_train.py --variant seed=S`
does. At the end, P@5 is fitted as a line against log2(training patients) over every draw,
and the fit says how many patients per fold would reach the target.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from tqdm import tqdm

from mammosearch.config import get_settings
from mammosearch.db.session import make_session_factory
from mammosearch.evaluate.plots import save_png
from mammosearch.train.config import TrainConfig
from mammosearch.train.crossval import FoldFigures
from mammosearch.train.dataset import load_labelled_images
from mammosearch.train.fit import embed_cached
from mammosearch.train.folds import patient_folds
from mammosearch.train.runner import pick_device, prepare, train_top

TARGET_P_AT_5 = 0.50  # issue 10's target for the out-of-fold embedding


def patient_share(
    positions: np.ndarray, patient_ids: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    """The images of a seeded random `fraction` of the patients in `positions` (at least 2)."""
    patients = np.unique(patient_ids[positions])
    count = max(2, int(round(fraction * patients.size)))
    chosen = np.random.default_rng(seed).choice(patients, size=count, replace=False)
    return positions[np.isin(patient_ids[positions], chosen)]


def subset_seed(fold_number: int, draw: int) -> int:
    """Draw 0 keeps the subsets of the first runs (seeded by the fold number alone)."""
    return fold_number + 1000 * draw


def log_fit(records: list[dict]) -> tuple[float, float]:
    """Least-squares P@5 = intercept + slope * log2(training patients per fold)."""
    x = np.log2([r["training_patients_per_fold"] for r in records])
    y = np.array([r["precision@5"] for r in records])
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def patients_for(target: float, intercept: float, slope: float) -> float:
    return float(2 ** ((target - intercept) / slope)) if slope > 0 else float("inf")


def summarise(records: list[dict], plot: Path | None) -> None:
    """Per fraction: mean and range over draws; then the log-linear fit and its reading."""
    fractions = sorted({r["fraction"] for r in records})
    print("| training patients per fold | runs | P@5 mean (range) | consensus order mean |")
    print("|---|---|---|---|")
    for fraction in fractions:
        rows = [r for r in records if r["fraction"] == fraction]
        p5 = [r["precision@5"] for r in rows]
        consensus = [r["consensus_precision@5"] for r in rows]
        print(
            f"| {np.mean([r['training_patients_per_fold'] for r in rows]):.0f} | {len(rows)} "
            f"| {np.mean(p5):.3f} ({min(p5):.3f}-{max(p5):.3f}) | {np.mean(consensus):.3f} |"
        )
    if len(fractions) < 2:
        return
    intercept, slope = log_fit(records)
    full = max(r["training_patients_per_fold"] for r in records)
    needed = patients_for(TARGET_P_AT_5, intercept, slope)
    print(
        f"fit over {len(records)} runs: P@5 = {intercept:.3f} + {slope:.3f} x log2(patients); "
        f"{TARGET_P_AT_5:.2f} at about {needed:.0f} training patients per fold "
        f"({needed / full:.1f}x the {full:.0f} here)"
    )
    if plot is not None:
        draw_curve(records, intercept, slope, needed, plot)
        print(f"plot written to {plot}")


def draw_curve(
    records: list[dict], intercept: float, slope: float, needed: float, plot: Path
) -> None:
    figure = Figure(figsize=(6.4, 4.2), layout="tight")
    axes = figure.add_subplot()
    patients = [r["training_patients_per_fold"] for r in records]
    axes.scatter(patients, [r["precision@5"] for r in records], label="P@5, each draw")
    axes.scatter(
        patients,
        [r["consensus_precision@5"] for r in records],
        marker="x",
        label="P@5 in the served consensus order",
    )
    line = np.geomspace(min(patients), max(needed, max(patients)) * 1.1, 50)
    fitted = intercept + slope * np.log2(line)
    axes.plot(line, fitted, "--", label="fit: P@5 against log2(patients)")
    axes.axhline(TARGET_P_AT_5, color="grey", linewidth=0.8, label=f"target {TARGET_P_AT_5:.2f}")
    axes.set_xscale("log", base=2)
    ticks = [2**k for k in range(5, int(np.log2(line[-1])) + 1)]
    axes.set_xticks(ticks, [str(tick) for tick in ticks])
    axes.set_xlabel("training patients per fold (log scale)")
    axes.set_ylabel("out-of-fold, patient-excluded P@5")
    axes.set_title("What more labelled patients buy (dev archive, 5 folds)")
    axes.legend(fontsize=8)
    save_png(figure, plot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--draws", type=int, default=1, help="Patient subsets per fraction < 1")
    parser.add_argument("--seed", type=int, default=0, help="The split (and cached views)")
    parser.add_argument("--out", type=Path, help="Append one JSON line per fraction and draw")
    parser.add_argument(
        "--summary", type=Path, nargs="+", help="Only summarise these --out files, pooled"
    )
    parser.add_argument("--plot", type=Path, help="Write the curve and its fit as a PNG")
    args = parser.parse_args()
    if args.summary:
        records = [json.loads(line) for path in args.summary for line in path.open()]
        summarise(records, args.plot)
        return
    config = TrainConfig().with_fit(seed=args.seed)
    device = pick_device()
    with make_session_factory(get_settings().database_url)() as session:
        data = load_labelled_images(session, list(config.labels))
    prepared = prepare(data, config, device)
    primary = config.labels[0]
    labels = data.label_values(primary)
    folds = patient_folds(data.targets[primary], data.patient_ids, config.folds, config.seed)
    classes = list(data.classes[primary])
    runs = [
        (fraction, draw)
        for fraction in sorted(args.fractions)
        for draw in range(args.draws if fraction < 1 else 1)
    ]
    records = []
    for fraction, draw in tqdm(runs, desc="learning curve", unit="run"):
        started = time.perf_counter()
        trained = FoldFigures(classes)
        training_images, training_patients = [], []
        for number, (train_positions, valid_positions) in enumerate(folds, start=1):
            subset = patient_share(
                train_positions, data.patient_ids, fraction, subset_seed(number, draw)
            )
            training_images.append(int(subset.size))
            training_patients.append(int(np.unique(data.patient_ids[subset]).size))
            top = train_top(
                prepared, config, subset, device, None, f"{fraction:.0%} fold {number}", quiet=True
            )
            vectors = embed_cached(top, prepared.cache, valid_positions, config.test_views, device)
            trained.add_fold(
                vectors,
                [labels[i] for i in valid_positions],
                data.patient_ids[valid_positions].tolist(),
                primary,
            )
        metrics = trained.summary()["metrics"]
        record = {
            "fraction": fraction,
            "draw": draw,
            "seed": args.seed,
            "training_patients_per_fold": float(np.mean(training_patients)),
            "training_images_per_fold": float(np.mean(training_images)),
            "precision@5": metrics["precision@5"],
            "consensus_precision@5": metrics["consensus_precision@5"],
            "vote_balanced_accuracy": metrics["vote_balanced_accuracy"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        records.append(record)
        tqdm.write(
            f"{fraction:.0%} (draw {draw}) of each fold's training patients "
            f"({record['training_patients_per_fold']:.0f} patients, "
            f"{record['training_images_per_fold']:.0f} images): "
            f"P@5 {record['precision@5']:.3f}, consensus order "
            f"{record['consensus_precision@5']:.3f}, vote balanced accuracy "
            f"{record['vote_balanced_accuracy']:.3f} [{record['seconds']} s]"
        )
        if args.out is not None:
            with args.out.open("a") as stream:
                stream.write(json.dumps(record) + "\n")
    summarise(records, args.plot)


if __name__ == "__main__":
    main()
