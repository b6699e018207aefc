"""Which neighbour vote to serve: each rule of mammosearch.search.vote, scored out of fold,
per class.

    MAMMOSEARCH_DATA_DIR=DIR python bench/vote_rules.py [--space-id N] [--folds 5] [--seed 0]
        [--label birads] [--json out.json]

The archive's vectors (the active space, or --space-id) are split into patient-grouped folds
(train/folds.py's StratifiedGroupKFold, as `mammosearch train` splits); each held-out image
asks the other folds' labelled images (the ten nearest by cosine vote). Per rule: accuracy,
balanced accuracy (mean per-class recall), per-class recall, expected calibration error of
the leader's share, and the spread of accuracy and balanced accuracy over the folds (the
noise). Then the rule's reliability table (precision by the leader's share) and its floor,
as the served evaluation stores them (patient-excluded over the whole archive).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from mammosearch.config import get_settings
from mammosearch.db.session import session_scope
from mammosearch.evaluate.evaluator import class_order, evaluate_vectors
from mammosearch.evaluate.labels import get_label
from mammosearch.evaluate.neighbour_vote import measure_vote, neighbour_vote_shares
from mammosearch.evaluate.runs import load_space_vectors, resolve_space
from mammosearch.search.vote import VOTE_RULES, expected_calibration_error, winners
from mammosearch.train.folds import patient_folds


def fold_codes(codes: np.ndarray, patients: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each image's fold number: as a 'patient id' under patient-excluded, a whole fold
    is left out of its own images' candidates."""
    fold_of = np.full(codes.size, -1, dtype=np.int64)
    labelled = np.flatnonzero(codes >= 0)
    for number, (_, valid) in enumerate(
        patient_folds(codes[labelled], patients[labelled], folds, seed)
    ):
        fold_of[labelled[valid]] = number
    return fold_of


def score_rule(
    vectors: np.ndarray, labels: list, classes: list, fold_of: np.ndarray, rule_name: str
) -> dict:
    """Out-of-fold figures of one rule, pooled and per fold."""
    rule = VOTE_RULES[rule_name]
    class_code = {label: code for code, label in enumerate(classes)}
    codes = np.array([class_code.get(label, -1) for label in labels])
    shares, votes = neighbour_vote_shares(
        vectors, labels, fold_of.tolist(), classes, "cosine", "patient-excluded", rule=rule
    )
    predicted = winners(shares, votes)
    asked = (codes >= 0) & (predicted >= 0)
    right = predicted[asked] == codes[asked]
    leader = shares[np.flatnonzero(asked), predicted[asked]]

    def balanced(mask: np.ndarray) -> float:
        recalls = [right[mask & (codes[asked] == c)].mean() for c in range(len(classes))
                   if (mask & (codes[asked] == c)).any()]  # fmt: skip
        return float(np.mean(recalls))

    everyone = np.ones(right.size, dtype=bool)
    per_fold = [fold_of[asked] == f for f in np.unique(fold_of[asked])]
    return {
        "rule": rule_name,
        "accuracy": float(right.mean()),
        "accuracy_sd": float(np.std([right[m].mean() for m in per_fold])),
        "balanced_accuracy": balanced(everyone),
        "balanced_accuracy_sd": float(np.std([balanced(m) for m in per_fold])),
        "per_class_recall": {
            str(label): float(right[codes[asked] == c].mean())
            for c, label in enumerate(classes)
            if (codes[asked] == c).any()
        },  # fmt: skip
        "predicted": {
            str(label): int((predicted[asked] == c).sum()) for c, label in enumerate(classes)
        },
        "ece": expected_calibration_error(leader, right),
        "queries": int(asked.sum()),
    }


def consensus_p5(
    vectors: np.ndarray, labels: list, fold_of: np.ndarray, rule_name: str | None
) -> dict:
    """Out-of-fold P@5 in the consensus order this rule would drive (None: similarity
    order), overall, mean over classes and per class (the order search serves by default
    re-ranks the vote's neighbours by their class's share)."""
    result = evaluate_vectors(
        vectors, list(range(len(labels))), labels, fold_of.tolist(), ks=(5,),
        label_name="birads", ranking="similarity" if rule_name is None else "consensus",
        vote_rule=VOTE_RULES[rule_name or "similarity"],
    )  # fmt: skip
    per_class = {c: row["precision@5"] for c, row in result.per_class.items()}
    present = [value for value in per_class.values() if value is not None]
    return {"p5": result.metrics["precision@5"], "class_mean": float(np.mean(present)),
            "per_class": per_class}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space-id", type=int)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", default="birads", choices=("birads", "pathology"))
    parser.add_argument("--json")
    args = parser.parse_args()
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        space = resolve_space(session, settings, space_id=args.space_id)
        loaded = load_space_vectors(session, space)
        described = f"space {space.id} ({space.backbone})"
    spec = get_label(args.label)
    labels = [spec.of_image(row) for row in loaded.image_rows]
    classes = class_order(args.label, {label for label in labels if label is not None})
    class_code = {label: code for code, label in enumerate(classes)}
    codes = np.array([class_code.get(label, -1) for label in labels])
    patients = np.array(loaded.patient_ids)
    fold_of = fold_codes(codes, patients, args.folds, args.seed)
    print(f"{described}: {int((codes >= 0).sum())} labelled images, "
          f"{np.unique(patients[codes >= 0]).size} patients, {args.folds} patient-grouped folds "
          f"(seed {args.seed}), label {args.label}, k=10, cosine")  # fmt: skip
    counts = np.bincount(codes[codes >= 0], minlength=len(classes))
    print("class counts: " + ", ".join(f"{c} {n}" for c, n in zip(classes, counts, strict=True)))
    rows = [score_rule(loaded.vectors, labels, classes, fold_of, name) for name in VOTE_RULES]
    header = "| rule | accuracy | balanced acc. | " + " | ".join(
        f"recall {c}" for c in classes
    ) + " | ECE |"  # fmt: skip
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for row in rows:
        recalls = " | ".join(
            f"{row['per_class_recall'].get(str(c), float('nan')):.2f}" for c in classes
        )
        print(
            f"| {row['rule']} | {row['accuracy']:.3f} ± {row['accuracy_sd']:.3f} | "
            f"{row['balanced_accuracy']:.3f} ± {row['balanced_accuracy_sd']:.3f} | {recalls} | "
            f"{row['ece']:.3f} |"
        )
    print("predicted per class: " + "; ".join(f"{r['rule']} {r['predicted']}" for r in rows))
    if args.label == "birads":
        print("\nout-of-fold P@5 in the consensus order each rule drives: | order | P@5 | "
              "mean of classes | per class |")  # fmt: skip
        for row, name in [({}, None), *((r, r["rule"]) for r in rows)]:
            scored = consensus_p5(loaded.vectors, labels, fold_of, name)
            row["consensus"] = scored
            per_class = " / ".join(
                "-" if value is None else f"{value:.3f}" for value in scored["per_class"].values()
            )
            print(f"| {name or 'similarity order'} | {scored['p5']:.3f} | "
                  f"{scored['class_mean']:.3f} | {per_class} |")  # fmt: skip
    tables = {}
    for name, rule in VOTE_RULES.items():
        table = measure_vote(loaded.vectors, labels, loaded.patient_ids, classes, rule=rule)
        tables[name] = table.to_dict()
        print(f"\nreliability, rule {name} (patient-excluded over the archive; floor "
              f"{table.floor:.2f}, majority rate {table.majority_rate:.2f}):")  # fmt: skip
        for b in table.bins:
            mark = "" if b["precision"] >= table.floor else "  uncertain"
            print(f"  share {b['low']:.2f}-{b['high']:.2f}: {b['correct']}/{b['suggestions']} "
                  f"right = {b['precision']:.2f}{mark}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"space": described, "rules": rows, "reliability": tables}, handle, indent=1)


if __name__ == "__main__":
    main()
