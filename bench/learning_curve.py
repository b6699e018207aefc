"""Out-of-fold P@5 against the number of training patients: what more labelled data buys.

    MAMMOSEARCH_DATA_DIR=DIR python bench/learning_curve.py --fractions 0.25 0.5 0.75 1

The default training (`TrainConfig()`) on the same folds as `mammosearch train`, but each
fold's model learns from a seeded random share of that fold's training patients only; the
validation pools (queries and candidates) stay the fold's own, so every row is scored on
the same images by the same rule (patient-excluded, similarity and consensus order). The
slope says how far more labelled patients would carry the embedding, the one lever that no
training option replaces.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mammosearch.config import get_settings
from mammosearch.db.session import make_session_factory
from mammosearch.train.config import TrainConfig
from mammosearch.train.crossval import FoldFigures
from mammosearch.train.dataset import load_labelled_images
from mammosearch.train.fit import embed_cached
from mammosearch.train.folds import patient_folds
from mammosearch.train.runner import pick_device, prepare, train_top


def patient_share(
    positions: np.ndarray, patient_ids: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    """The images of a seeded random `fraction` of the patients in `positions` (at least 2)."""
    patients = np.unique(patient_ids[positions])
    count = max(2, int(round(fraction * patients.size)))
    chosen = np.random.default_rng(seed).choice(patients, size=count, replace=False)
    return positions[np.isin(patient_ids[positions], chosen)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--out", type=Path, help="Append one JSON line per fraction")
    args = parser.parse_args()
    config = TrainConfig()
    device = pick_device()
    with make_session_factory(get_settings().database_url)() as session:
        data = load_labelled_images(session, list(config.labels))
    prepared = prepare(data, config, device)
    primary = config.labels[0]
    labels = data.label_values(primary)
    folds = patient_folds(data.targets[primary], data.patient_ids, config.folds, config.seed)
    classes = list(data.classes[primary])
    for fraction in sorted(args.fractions):
        started = time.perf_counter()
        trained = FoldFigures(classes)
        training_images, training_patients = [], []
        for number, (train_positions, valid_positions) in enumerate(folds, start=1):
            subset = patient_share(train_positions, data.patient_ids, fraction, number)
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
            "training_patients_per_fold": float(np.mean(training_patients)),
            "training_images_per_fold": float(np.mean(training_images)),
            "precision@5": metrics["precision@5"],
            "consensus_precision@5": metrics["consensus_precision@5"],
            "vote_balanced_accuracy": metrics["vote_balanced_accuracy"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(
            f"{fraction:.0%} of each fold's training patients "
            f"({record['training_patients_per_fold']:.0f} patients, "
            f"{record['training_images_per_fold']:.0f} images): "
            f"P@5 {record['precision@5']:.3f}, consensus order "
            f"{record['consensus_precision@5']:.3f}, vote balanced accuracy "
            f"{record['vote_balanced_accuracy']:.3f} [{record['seconds']} s]",
            flush=True,
        )
        if args.out is not None:
            with args.out.open("a") as stream:
                stream.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
