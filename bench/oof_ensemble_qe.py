"""Out-of-fold P@5 of seed ensembles and of query expansion, from one set of trained folds.

    MAMMOSEARCH_DATA_DIR=DIR python bench/oof_ensemble_qe.py --members 3 --vectors oof.npz
    python bench/oof_ensemble_qe.py --vectors oof.npz          # score saved vectors again

Trains the default top (`TrainConfig()`) on every fold's training patients once per seed
(0, 1, ...), keeps each fold's validation vectors (plain + mirror, as served), and scores,
on the same folds and by the progress bar's patient-excluded rule:
- each seed alone and the average of the first 2, 3, ... seeds' vectors (`--ensemble N`);
- query expansion: the query is replaced by itself plus its n nearest other-patient
  neighbours weighted by similarity**alpha, then searched again (candidates unchanged);
- breast-averaged candidates: each candidate's vector averaged with the other views of the
  same breast (same patient and side; the query stays one image).
Vectors are saved after every fold, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sqlalchemy import select

from mammosearch.config import get_settings
from mammosearch.db.models import Image
from mammosearch.db.session import make_session_factory
from mammosearch.train.config import TrainConfig
from mammosearch.train.dataset import load_labelled_images
from mammosearch.train.fit import embed_cached, patient_excluded_precision
from mammosearch.train.folds import patient_folds

QUERY_EXPANSIONS = ((1, 1.0), (2, 1.0), (2, 3.0), (3, 3.0), (5, 3.0))


def _normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def expanded_queries(vectors: np.ndarray, patients: np.ndarray, n: int, alpha: float):  # noqa: ANN201
    """Each vector plus its n nearest other-patient neighbours, weighted by similarity**alpha."""
    similarity = vectors @ vectors.T
    similarity[patients[:, None] == patients[None, :]] = -np.inf
    nearest = np.argsort(-similarity, axis=1)[:, :n]
    weights = np.take_along_axis(similarity, nearest, axis=1).clip(0) ** alpha
    return _normalised(vectors + (weights[:, :, None] * vectors[nearest]).sum(axis=1))


def breast_averaged(vectors: np.ndarray, patients: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """Each vector averaged with those of the same patient's same side (its other views)."""
    same_breast = (patients[:, None] == patients[None, :]) & (sides[:, None] == sides[None, :])
    return _normalised(same_breast.astype(vectors.dtype) @ vectors)


def precision_at_5(queries: np.ndarray, candidates: np.ndarray, targets, patients) -> float:  # noqa: ANN001
    similarity = queries @ candidates.T
    similarity[patients[:, None] == patients[None, :]] = -np.inf
    nearest = np.argsort(-similarity, axis=1)[:, :5]
    return float((targets[nearest] == targets[:, None]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=0, help="Seeds to train (0: score only)")
    parser.add_argument("--vectors", type=Path, required=True)
    args = parser.parse_args()
    config = TrainConfig()
    with make_session_factory(get_settings().database_url)() as session:
        data = load_labelled_images(session, list(config.labels))
        side_of = {row.id: row.side for row in session.execute(select(Image.id, Image.side))}
    targets, patients = data.targets[config.labels[0]], data.patient_ids
    sides = np.array([side_of[int(image_id)] or "" for image_id in data.image_ids])
    folds = patient_folds(targets, patients, config.folds, config.seed)
    saved = dict(np.load(args.vectors)) if args.vectors.is_file() else {}
    if args.members:
        from mammosearch.train.runner import _train_member, pick_device, prepare

        device = pick_device()
        prepared = prepare(data, config, device)
        for member in range(args.members):
            for number, (train, valid) in enumerate(folds, start=1):
                key = f"m{member}_f{number}"
                if key in saved:
                    continue
                top = _train_member(
                    prepared, config.with_fit(seed=config.seed + member), train, device,
                    None, f"seed {member} fold {number}", valid, False, None,
                )  # fmt: skip
                saved[key] = embed_cached(top, prepared.cache, valid, config.test_views, device)
                np.savez(args.vectors, **saved)
    members = sorted({int(key.split("_")[0][1:]) for key in saved})

    def pooled(
        chosen: list[int], expansion: tuple[int, float] | None = None, by_breast: bool = False
    ) -> float | None:
        total = count = 0.0
        for number, (_train, valid) in enumerate(folds, start=1):
            keys = [f"m{m}_f{number}" for m in chosen]
            if not all(key in saved for key in keys):
                return None
            vectors = _normalised(sum(saved[key] for key in keys))
            if by_breast:
                candidates = breast_averaged(vectors, patients[valid], sides[valid])
                value = precision_at_5(vectors, candidates, targets[valid], patients[valid])
            elif expansion is None:
                value = patient_excluded_precision(vectors, targets[valid], patients[valid])
            else:
                queries = expanded_queries(vectors, patients[valid], *expansion)
                value = precision_at_5(queries, vectors, targets[valid], patients[valid])
            total += value * valid.size
            count += valid.size
        return total / count

    rows = [[m] for m in members] + [members[:n] for n in range(2, len(members) + 1)]
    header = "| seeds | P@5 | " + " | ".join(f"QE n={n} a={a:g}" for n, a in QUERY_EXPANSIONS)
    print(header + " | breast-averaged candidates |\n|" + "---|" * (3 + len(QUERY_EXPANSIONS)))
    for chosen in rows:
        plain = pooled(chosen)
        if plain is None:
            continue
        cells = [f"{pooled(chosen, e):.3f}" for e in QUERY_EXPANSIONS]
        cells.append(f"{pooled(chosen, by_breast=True):.3f}")
        print(f"| {'+'.join(map(str, chosen))} | {plain:.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
