"""Case-level figures of a `mammosearch train` run from its saved out-of-fold vectors.

    MAMMOSEARCH_DATA_DIR=DIR python bench/case_level_oof.py OUT.work [--base-space-id 1]

`mammosearch train` scores every fold at case level itself (`trained_case` / `base_case`
in the model's cross-validation record); this reads the same folds' vectors from the work
directory (`fold-N.npz`, written as each fold ends), so the figures are there before the
final model is trained, or from a run interrupted after its folds. The folds are rebuilt as
train builds them (train/folds.py, default config); the base space is the archive's stored
space (`--base-space-id`), not re-embedded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mammosearch.config import get_settings
from mammosearch.db.models import EmbeddingSpace
from mammosearch.db.session import session_scope
from mammosearch.evaluate.runs import load_space_vectors
from mammosearch.train.config import TrainConfig
from mammosearch.train.crossval import CaseFoldFigures
from mammosearch.train.dataset import load_labelled_images
from mammosearch.train.folds import patient_folds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--base-space-id", type=int, default=1)
    parser.add_argument("--label", default="birads")
    args = parser.parse_args()
    config = TrainConfig()
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        data = load_labelled_images(session, [args.label])
        base = load_space_vectors(session, session.get(EmbeddingSpace, args.base_space_id))
    position = {image_id: row for row, image_id in enumerate(base.image_ids)}
    base_vectors = base.vectors[[position[int(i)] for i in data.image_ids]]
    folds = patient_folds(data.targets[args.label], data.patient_ids, config.folds, config.seed)
    trained, base_case = CaseFoldFigures(args.label), CaseFoldFigures(args.label)
    done = []
    for number, (_, valid) in enumerate(folds, start=1):
        fold_file = args.work_dir / f"fold-{number}.npz"
        if not fold_file.exists():
            print(f"fold {number}: not finished, left out", file=sys.stderr)
            continue
        rows = [data.case_rows[i] for i in valid]
        trained.add_fold(np.load(fold_file)["vectors"], rows)
        base_case.add_fold(base_vectors[valid], rows)
        done.append(number)
    print(
        json.dumps(
            {"folds": done, "trained_case": trained.summary(), "base_case": base_case.summary()},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
