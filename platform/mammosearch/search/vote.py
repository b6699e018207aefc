"""The neighbours' vote: which class the nearest labelled archive images point to, and how sure.

One rule, called by everything that votes: the search service's suggestion (BIRADS and
pathology), the consensus order (mammosearch.search.ranking), the evaluations and train's
cross-validation (evaluate.neighbour_vote), and case-level search. Its parts:

- Voters: the VOTE_K nearest *labelled* neighbours, in similarity order. An image without
  the label neither votes nor takes a voter's place, so the vote search shows is the vote
  every evaluation measured (their candidates are labelled images only).
- Weight: each voter its similarity (RULE = "similarity"), no class prior. Decided by
  patient-grouped cross-validation on the dev archive (bench/vote_rules.py, the tables in
  docs/learned-embeddings.md "The suggestion"): as accurate as one vote per neighbour, a
  little better balanced, as well calibrated, among the best for pathology. The class-prior
  correction served before bought BIRADS 3/4 recall with 0.03-0.04 of accuracy, a reliability
  table that is not monotone, and suggestions that contradict the counts shown (a BIRADS 1
  image whose ten nearest held four BIRADS 1 got "BIRADS 5"). The other rules stay in
  VOTE_RULES to be measured again.
- Winner: the largest share; ties go to more votes, then to the class listed first. A vote
  whose leader does not hold strictly more voters than every other class is split: no class
  is put forward (`Vote.split`).
- How sure: the winner's share is looked up in a reliability table measured out of fold
  (`Reliability`), which says how often suggestions made at that share were right; below its
  `floor` the suggestion is "uncertain" and no class is put forward.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

VOTE_K = 10
MIN_VOTE_WEIGHT = 1e-9
"""A neighbour at similarity <= 0 still votes, with the least weight."""
MIN_SHARE_OF_EVEN = 0.5
"""A class's archive share counts as at least half of an even share: rare classes cannot
explode under a prior correction."""


@dataclass(frozen=True)
class VoteRule:
    """How much each voter weighs: 1 or its similarity, times (share x classes)^-prior."""

    name: str
    by_similarity: bool
    prior_strength: float
    description: str


VOTE_RULES: dict[str, VoteRule] = {
    rule.name: rule
    for rule in (
        VoteRule("majority", False, 0.0, "one vote per neighbour"),
        VoteRule("similarity", True, 0.0, "each neighbour weighs its similarity"),
        VoteRule(
            "prior", True, 0.5,
            "similarity-weighted, each class discounted by (its archive share x classes)^-0.5",
        ),
        VoteRule(
            "mild-prior", True, 0.25,
            "similarity-weighted, each class discounted by (its archive share x classes)^-0.25",
        ),
    )
}  # fmt: skip
RULE = VOTE_RULES["similarity"]
"""The served rule (module docstring: why)."""


def prior_correction(class_counts: np.ndarray, strength: float) -> np.ndarray:
    """Per class: (its share of the archive x number of classes present)^-strength; 0 if absent."""
    counts = np.asarray(class_counts, dtype=np.float64)
    present = counts > 0
    if not present.any() or strength == 0.0:
        return np.where(present | (strength == 0.0), 1.0, 0.0)
    n_present = int(present.sum())
    share = np.maximum(counts / counts.sum(), MIN_SHARE_OF_EVEN / n_present)
    return np.where(present, (share * n_present) ** -strength, 0.0)


def class_shares(
    codes: np.ndarray,
    similarities: np.ndarray,
    n_classes: int,
    class_counts: np.ndarray | None = None,
    rule: VoteRule = RULE,
) -> tuple[np.ndarray, np.ndarray]:
    """The vote of each row's voters: (shares (n, n_classes), votes (n, n_classes)).

    `codes` (n, m) are class indices of the voters in similarity order (< 0: no voter there);
    only the first VOTE_K voters of each row count. Shares sum to 1 (0 for a row without a
    voter). `class_counts` are the archive's images per class (for a prior-corrected rule).
    """
    codes = np.atleast_2d(np.asarray(codes, dtype=np.int64))
    similarities = np.atleast_2d(np.asarray(similarities, dtype=np.float64))
    labelled = codes >= 0
    voting = labelled & (np.cumsum(labelled, axis=1) <= VOTE_K)
    if rule.by_similarity:
        weight = np.maximum(similarities, 0.0)
        weight = np.where(weight == 0.0, MIN_VOTE_WEIGHT, weight)
    else:
        weight = np.ones_like(similarities)
    rows = np.broadcast_to(np.arange(codes.shape[0])[:, None], codes.shape)
    weights = np.zeros((codes.shape[0], n_classes))
    votes = np.zeros((codes.shape[0], n_classes), dtype=np.int64)
    np.add.at(weights, (rows[voting], codes[voting]), weight[voting])
    np.add.at(votes, (rows[voting], codes[voting]), 1)
    if rule.prior_strength:
        counts = np.zeros(n_classes) if class_counts is None else np.asarray(class_counts)
        if counts.any():
            weights *= prior_correction(counts, rule.prior_strength)[None, :]
    totals = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0), votes


def winners(shares: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """Per row: the largest share, then the most votes, then the first class; -1 if no vote."""
    largest = np.isclose(shares, shares.max(axis=1, keepdims=True), rtol=0, atol=1e-12)
    votes_of_largest = np.where(largest, votes, -1)
    best = np.argmax(votes_of_largest == votes_of_largest.max(axis=1, keepdims=True), axis=1)
    return np.where(votes.sum(axis=1) > 0, best, -1)


@dataclass(frozen=True)
class Vote:
    """One query's vote: votes and shares per class (voted classes only), and its leader."""

    votes: dict[Hashable, int]
    shares: dict[Hashable, float]
    leader: Hashable | None
    share: float  # the leader's share (0 without voters)

    @property
    def voters(self) -> int:
        return sum(self.votes.values())

    @property
    def split(self) -> bool:
        """No class holds strictly more voters than every other (or nobody voted)."""
        if self.leader is None:
            return True
        leading = self.votes[self.leader]
        return any(n >= leading for label, n in self.votes.items() if label != self.leader)


def vote(
    neighbours: Iterable[tuple[Hashable | None, float]],
    class_counts: Mapping[Hashable, int] | None = None,
    classes: Sequence[Hashable] | None = None,
    rule: VoteRule = RULE,
) -> Vote:
    """The vote of `neighbours` ((label or None, similarity), nearest first).

    `classes` orders the classes for ties (default: sorted); `class_counts` (the archive's
    images per class) matters only to a prior-corrected rule.
    """
    pairs = [(label, float(similarity)) for label, similarity in neighbours]
    labels = {label for label, _ in pairs if label is not None}
    order = list(classes) if classes is not None else sorted(labels, key=_sort_key)
    order += sorted(labels - set(order), key=_sort_key)
    code = {label: position for position, label in enumerate(order)}
    codes = np.array([[code[label] if label is not None else -1 for label, _ in pairs]])
    similarities = np.array([[similarity for _, similarity in pairs]])
    counts = np.array([(class_counts or {}).get(label, 0) for label in order], dtype=float)
    shares, votes = class_shares(
        codes.reshape(1, -1), similarities.reshape(1, -1), len(order), counts, rule
    )
    leader = int(winners(shares, votes)[0]) if order else -1
    voted = [position for position in range(len(order)) if votes[0, position]]
    return Vote(
        votes={order[p]: int(votes[0, p]) for p in voted},
        shares={order[p]: float(shares[0, p]) for p in voted},
        leader=order[leader] if leader >= 0 else None,
        share=float(shares[0, leader]) if leader >= 0 else 0.0,
    )


def _sort_key(label: Hashable) -> tuple[str, Any]:
    return (type(label).__name__, label)


# ---------------------------------------------------------------------------------------------
# How sure: the reliability of suggestions by the leader's share, measured out of fold.

SHARE_EDGES = (0.0, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 1.0)
"""Bin edges of the leader's share; with ten equal votes, each bin holds one or two counts
(0.4 and 0.5, ..., 0.8, 0.9 and 1.0)."""
MIN_BIN_QUERIES = 15
"""A bin with fewer suggestions is merged into its neighbour: its precision would be noise."""
MIN_FLOOR = 0.5
"""A suggestion is put forward only when suggestions like it were right at least this often
(and more often than always naming the most common class would be)."""


class NoSuggestion(ValueError):
    """Nothing to measure: no query had a neighbour to vote."""


@dataclass(frozen=True)
class Reliability:
    """How often suggestions were right, by the leader's share, and the floor below which
    the panel says "uncertain"."""

    bins: list[dict[str, Any]]  # {"low", "high", "suggestions", "correct", "precision"}, from
    # 0 to 1 without gaps; a share equal to a bin's "high" belongs to the next bin
    floor: float  # precision below which a suggestion is "uncertain"
    accuracy: float
    majority_rate: float  # how often naming the most common class would be right
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def precision_at(self, share: float) -> float | None:
        """The measured precision of suggestions made at this share (None: no such bin)."""
        precision: float | None = None
        for row in self.bins:  # contiguous, from 0 to 1; a share on an edge is the upper bin's
            precision = row["precision"]
            if share < row["high"]:
                break
        return precision

    def is_sure(self, share: float) -> bool:
        precision = self.precision_at(share)
        return precision is not None and precision >= self.floor

    def to_dict(self) -> dict[str, Any]:
        return {
            "bins": self.bins,
            "floor": self.floor,
            "accuracy": self.accuracy,
            "majority_rate": self.majority_rate,
            "source": self.source,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Reliability:
        known = {"bins", "floor", "accuracy", "majority_rate", "source"}
        return cls(
            bins=[dict(row) for row in document["bins"]],
            floor=float(document["floor"]),
            accuracy=float(document["accuracy"]),
            majority_rate=float(document["majority_rate"]),
            source=str(document.get("source", "")),
            extra={key: value for key, value in document.items() if key not in known},
        )


def reliability_table(
    leader_shares: np.ndarray,
    correct: np.ndarray,
    true_codes: np.ndarray,
    edges: Sequence[float] = SHARE_EDGES,
    min_bin: int = MIN_BIN_QUERIES,
    source: str = "",
) -> Reliability:
    """Out-of-fold suggestions (their leader's share, whether right, the true class) -> table.

    Bins of `edges`, a bin with fewer than `min_bin` suggestions merged into the next (the
    last into the one before). The floor is the larger of MIN_FLOOR and the rate of the most
    common true class: a suggestion below it says less than "more often right than wrong" or
    than naming the archive's commonest class without looking at the image.
    """
    shares = np.asarray(leader_shares, dtype=np.float64)
    right = np.asarray(correct, dtype=bool)
    if shares.size == 0:
        raise NoSuggestion("no suggestion to measure: the reliability table needs votes")
    position = np.clip(np.searchsorted(edges, shares, side="right") - 1, 0, len(edges) - 2)
    groups: list[list[int]] = []
    for index in range(len(edges) - 1):
        if not groups or sum(int((position == b).sum()) for b in groups[-1]) >= min_bin:
            groups.append([index])
        else:
            groups[-1].append(index)
    if len(groups) > 1 and sum(int((position == b).sum()) for b in groups[-1]) < min_bin:
        groups[-2].extend(groups.pop())
    bins = []
    for group in groups:
        inside = np.isin(position, group)
        count = int(inside.sum())
        if not count:
            continue
        hits = int(right[inside].sum())
        bins.append(
            {
                "low": float(edges[group[0]]),
                "high": float(edges[group[-1] + 1]),
                "suggestions": count,
                "correct": hits,
                "precision": round(hits / count, 4),
            }
        )
    for previous, following in zip(bins, bins[1:], strict=False):
        following["low"] = previous["high"]  # an empty bin's range joins the next
    bins[0]["low"], bins[-1]["high"] = 0.0, 1.0
    codes = np.asarray(true_codes)
    majority_rate = float(np.bincount(codes[codes >= 0]).max() / max(1, (codes >= 0).sum()))
    return Reliability(
        bins=bins,
        floor=round(max(MIN_FLOOR, majority_rate), 4),
        accuracy=round(float(right.mean()), 4),
        majority_rate=round(majority_rate, 4),
        source=source,
    )


def expected_calibration_error(
    leader_shares: np.ndarray, correct: np.ndarray, n_bins: int = 10
) -> float:
    """ECE: the suggestions' |share - accuracy| per equal-width share bin, weighted by size."""
    shares = np.asarray(leader_shares, dtype=np.float64)
    right = np.asarray(correct, dtype=np.float64)
    position = np.clip((shares * n_bins).astype(int), 0, n_bins - 1)
    error = 0.0
    for index in range(n_bins):
        inside = position == index
        if inside.any():
            error += inside.mean() * abs(shares[inside].mean() - right[inside].mean())
    return float(error)


# ---------------------------------------------------------------------------------------------
# What the suggestion panel shows (search's `suggested_birads`, the API's and CLI's too).

DECISION_SUPPORT_NOTE = "Decision support, not a diagnosis."
SUGGESTED, UNCERTAIN, UNMEASURED, NO_VOTE = "suggested", "uncertain", "unmeasured", "no-vote"
"""A vote's status: a class put forward; a vote too split or too rarely right at its share;
a space whose vote was never measured (labels listed, nothing suggested); no labelled
neighbour."""


MEASURED_KEYS = (
    "accuracy",
    "balanced_accuracy",
    "per_class_recall",
    "ece",
    "source",
    "rule",
    "suggestions",
    "unit",
)
"""What the panel shows of a measurement beside each vote ("unit": "case" for a case-level
table, absent for an image one)."""


def label_suggestion(
    neighbours: Sequence[tuple[Hashable | None, float]],
    reliability: Mapping[str, Any] | None,
    classes: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """One label's vote as the panel shows it: votes and shares per class, the leader, its
    status, and (when measured) how often suggestions at the leader's share were right."""
    result = vote(neighbours, classes=classes)
    shown: dict[str, Any] = {
        "votes": {str(label): count for label, count in result.votes.items()},
        "distribution": {str(label): round(s, 4) for label, s in result.shares.items()},
        "neighbours": result.voters,
        "leading": result.leader,
        "share": round(result.share, 4),
        "split": result.split,
        "precision": None,
        "suggested": None,
    }
    if result.leader is None:
        return {**shown, "status": NO_VOTE}
    if not reliability:
        return {**shown, "status": UNMEASURED}
    table = Reliability.from_dict(reliability)
    sure = not result.split and table.is_sure(result.share)
    return {
        **shown,
        "status": SUGGESTED if sure else UNCERTAIN,
        "suggested": result.leader if sure else None,
        "precision": table.precision_at(result.share),
        "floor": table.floor,
        "measured": {key: reliability.get(key) for key in MEASURED_KEYS},
    }


def suggest(
    birads: Sequence[tuple[int | None, float]],
    pathology: Sequence[tuple[str | None, float]],
    measured: Mapping[str, Any] | None,
    pathology_classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The suggestion panel's document: the BIRADS vote at the top level (`birads` is the
    class put forward, None unless its status is "suggested"), pathology beside it.

    `birads` and `pathology` are the neighbours' (label or None, similarity), nearest first;
    `measured` the space's reliability per label (evaluate.runs.measured_vote), {} if none.
    """
    measured = measured or {}
    birads_vote = label_suggestion(birads, measured.get("birads"))
    return {
        "birads": birads_vote["suggested"],
        **birads_vote,
        "rule": f"the {VOTE_K} nearest labelled neighbours; {RULE.description}",
        "note": DECISION_SUPPORT_NOTE,
        "pathology": label_suggestion(pathology, measured.get("pathology"), pathology_classes),
    }


def suggestion_lines(panel: Mapping[str, Any]) -> list[str]:
    """The suggestion panel as text (the CLI's): one line per label, then the note."""
    lines = []
    for title, shown in (("BIRADS", panel), ("pathology", panel.get("pathology") or {})):
        if not shown:
            continue
        counts = ", ".join(f"{label}: {n}" for label, n in shown.get("votes", {}).items())
        status = shown.get("status")
        if status == SUGGESTED:
            verdict = (
                f"suggested {shown['suggested']} (suggestions at {shown['share']:.0%} of the "
                f"vote were right for {shown['precision']:.0%})"
            )
        elif status == UNCERTAIN:
            verdict = "uncertain (" + (
                "split vote)" if shown.get("split") else
                f"suggestions at {shown['share']:.0%} of the vote were right for only "
                f"{shown['precision']:.0%}, under the {shown['floor']:.0%} needed)"
            )  # fmt: skip
        elif status == UNMEASURED:
            verdict = "no suggestion: this space's vote has not been measured"
        else:
            verdict = "no labelled neighbour"
        voters = shown.get("neighbours", 0)
        lines.append(f"{title} of the {voters} neighbours ({counts}): {verdict}")
    if panel.get("note"):
        lines.append(str(panel["note"]))
    return lines


def reliability_lines(label: str, reliability: Mapping[str, Any]) -> list[str]:
    """A measured vote as text (`mammosearch evaluate`): its figures, then precision by share."""
    table = Reliability.from_dict(reliability)
    recall = ", ".join(
        f"{name} {value:.2f}" if value is not None else f"{name} -"
        for name, value in (reliability.get("per_class_recall") or {}).items()
    )
    lines = [
        f"{label} vote ({reliability.get('rule')}, {reliability.get('k')} nearest): accuracy "
        f"{table.accuracy:.3f}, balanced {reliability.get('balanced_accuracy') or 0:.3f}, "
        f"ECE {reliability.get('ece') or 0:.3f}; recall {recall}",
        f"  suggested when suggestions at its share were right >= {table.floor:.2f} "
        f"(commonest class {table.majority_rate:.2f}):",
    ]
    for row in table.bins:
        verdict = "suggested" if row["precision"] >= table.floor else "uncertain"
        lines.append(
            f"  share {row['low']:.2f}-{row['high']:.2f}: {row['correct']}/{row['suggestions']}"
            f" right = {row['precision']:.2f}  {verdict}"
        )
    return lines
