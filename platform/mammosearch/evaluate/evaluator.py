"""Leave-one-out evaluation over arrays: vectors + labels + patients -> EvaluationResult.

How the search is done, and what the timing means:
- One exact faiss index holds every vector given (`archive_size`, labelled or not):
  IndexFlatIP over L2-normalised vectors for "cosine", IndexFlatL2 for "l2".
- Metrics: each query's FULL ranking comes from a batched faiss search with k = archive
  size; the protocol's exclusions and the unlabelled images are then removed by a mask.
  N is small, so nothing is approximated and no query runs short of candidates.
- Timing: for every scored query, one separate single-query `index.search(q, k_max)` on that
  same flat index is timed with perf_counter (after a short warm-up): the cost of an exact
  search of the whole space for k_max neighbours, as in the reference paper's search time.
  It excludes embedding the query and joining metadata, and is one flat segment, not the
  product's sharded index. faiss' thread count is recorded in `config`.
- Distances reported: cosine -> 1 - cosine similarity; l2 -> squared Euclidean distance
  (what IndexFlatL2 returns).
- A query with no relevant candidate under the protocol (e.g. a class held by one patient)
  cannot be scored for recall, NDCG or AP; such queries are left out of every average (as
  trec_eval does) and counted in `excluded["no_relevant_candidate"]`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mammosearch.evaluate.labels import LABELS
from mammosearch.evaluate.metrics import METRICS
from mammosearch.evaluate.neighbour_vote import DEFAULT_VOTE_K, similarity_of_scores
from mammosearch.evaluate.protocols import candidate_mask, get_protocol, query_rows
from mammosearch.evaluate.result import EvaluationError, EvaluationResult
from mammosearch.search.ranking import RankingError, check_ranking, consensus_ranking
from mammosearch.search.vote import RULE, VoteRule
from mammosearch.vocabulary import DISTANCE_METRICS

if TYPE_CHECKING:
    import faiss

DEFAULT_KS = (1, 5, 10, 20, 50, 100)
WARMUP_SEARCHES = 3

Progress = bool | Callable[[int, int], None]


def parse_ks(text: str) -> tuple[int, ...]:
    """'1,5,10' -> (1, 5, 10); the message names the bad value."""
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EvaluationError(f"k list {text!r}: not comma-separated integers") from None
    return _checked_ks(ks)


def _checked_ks(ks: Sequence[int]) -> tuple[int, ...]:
    if not ks or any(int(k) < 1 for k in ks):
        raise EvaluationError(f"k values {list(ks)!r}: need at least one, each >= 1")
    return tuple(sorted({int(k) for k in ks}))


def class_order(label_name: str, present: set[Hashable]) -> list[Hashable]:
    spec = LABELS.get(label_name)
    ordered = [c for c in spec.classes if c in present] if spec else []
    return ordered + sorted(present - set(ordered), key=str)


class RankedSearch(Protocol):
    """(queries (n, d), depth) -> (scores, candidate rows), both (n, depth), -1 rows pad."""

    def __call__(self, queries: np.ndarray, depth: int, /) -> tuple[np.ndarray, np.ndarray]: ...


def _faiss_threads() -> int:
    import faiss

    return int(faiss.omp_get_max_threads())


def _searchable(vectors: np.ndarray, metric: str) -> tuple[np.ndarray, faiss.Index]:
    import faiss  # here: the CLI reads this module's constants for its options

    matrix = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if metric == "cosine":
        faiss.normalize_L2(matrix)
        index: faiss.Index = faiss.IndexFlatIP(matrix.shape[1])
    else:
        index = faiss.IndexFlatL2(matrix.shape[1])
    index.add(matrix)
    return matrix, index


RowSearch = Callable[[Sequence[int], int], tuple[np.ndarray, np.ndarray]]
"""(query rows, depth) -> (scores, candidate rows), as RankedSearch but by row position."""


def _matrix_search(scores: np.ndarray, metric: str) -> RowSearch:
    """A search over precomputed (n, n) scores, nearest first."""

    def search(rows: Sequence[int], depth: int) -> tuple[np.ndarray, np.ndarray]:
        chosen = scores[list(rows)]
        order = np.argsort(-chosen if metric == "cosine" else chosen, axis=1, kind="stable")
        order = order[:, :depth]
        return np.take_along_axis(chosen, order, axis=1), order

    return search


def _as_distance(raw: np.ndarray, metric: str) -> np.ndarray:
    return 1.0 - raw if metric == "cosine" else raw


def _metric_columns(
    ks: tuple[int, ...], map_cutoff: int | None
) -> list[tuple[str, Any, int | None]]:
    """(key, metric, k) for every reported ranking metric, in table order."""
    columns = []
    for metric in METRICS.values():
        for k in ks if metric.at_k else (map_cutoff,):
            columns.append((metric.key(k), metric, k))
    return columns


def _progress_reporter(
    progress: Progress, total: int
) -> tuple[Callable[[], object], Callable[[], object]]:
    """(tick once per query, close)."""
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="queries", unit="query")
        return (lambda: bar.update(1)), bar.close
    if callable(progress):
        done = [0]

        def tick() -> None:
            done[0] += 1
            if done[0] == total or done[0] % max(1, total // 100) == 0:
                progress(done[0], total)

        return tick, lambda: None
    return (lambda: None), (lambda: None)


def evaluate_vectors(
    vectors: np.ndarray,
    image_ids: Sequence[int],
    labels: Sequence[Hashable | None],
    patient_ids: Sequence[Hashable],
    metric: str = "cosine",
    protocol: str = "patient-excluded",
    ks: Sequence[int] = DEFAULT_KS,
    *,
    label_name: str = "custom",
    map_cutoff: int | None = None,
    per_query_limit: int | None = None,
    per_query_k: int = 5,
    image_names: Sequence[str] | None = None,
    embedding_space: dict[str, Any] | None = None,
    progress: Progress = False,
    chunk_size: int = 256,
    searcher: RankedSearch | None = None,
    search_depth: int | None = None,
    query_mask: np.ndarray | None = None,
    ranking: str = "similarity",
    vote_rule: VoteRule = RULE,
    score_matrix: np.ndarray | None = None,
) -> EvaluationResult:
    """Leave-one-out over every labelled image; None labels are neither queries nor candidates.

    `score_matrix` (n, n), in the metric's convention (cosine: a similarity; l2: a squared
    distance), ranks the candidates instead of the vectors: a case-level evaluation's fused
    case-to-case scores (mammosearch.search.cases), whose rules are not one vector's distance.

    `ranking` "consensus" orders each query's ten nearest as the search service does
    (mammosearch.search.ranking): those agreeing with their vote (mammosearch.search.vote) first.

    `vote_rule` is the vote the consensus order follows (the served one; bench/vote_rules.py
    scores the others).

    `query_mask` (default: every image) limits the queries; every labelled image stays a
    candidate, e.g. new patients' images querying an archive that trained the model.

    `searcher` (default: exact search over `vectors`) ranks the candidates instead, e.g. the
    served index; it returns the `search_depth` best rows per query (-1 pads), and images it
    does not return count as not retrieved.

    `map_cutoff` None scores AP over the full ranking ("map"), K scores AP@K ("map@K").
    `per_query_limit` keeps that many rows of the per-query table (None: all), each with the
    top `per_query_k` neighbours and that query's precision@per_query_k.
    """
    started = time.perf_counter()
    rule = get_protocol(protocol)
    ks = _checked_ks(ks)
    if metric not in DISTANCE_METRICS:
        raise EvaluationError(f"metric {metric!r}: unknown; choose one of {DISTANCE_METRICS}")
    try:
        check_ranking(ranking)
    except RankingError as exc:
        raise EvaluationError(str(exc)) from None
    if map_cutoff is not None and map_cutoff < 1:
        raise EvaluationError(f"map cut-off {map_cutoff}: must be >= 1 (or None: full ranking)")
    vectors = np.asarray(vectors)
    n_images = len(image_ids)
    if vectors.ndim != 2 or vectors.shape[0] != n_images:
        raise EvaluationError(
            f"vectors of shape {vectors.shape}: need ({n_images}, dim) for {n_images} image ids"
        )
    if len(labels) != n_images or len(patient_ids) != n_images:
        raise EvaluationError(
            f"{n_images} image ids but {len(labels)} labels and {len(patient_ids)} patient ids"
        )
    names = list(image_names) if image_names is not None else [str(i) for i in image_ids]
    if query_mask is not None and np.shape(query_mask) != (n_images,):
        raise EvaluationError(f"query mask of shape {np.shape(query_mask)}: need ({n_images},)")

    present = {label for label in labels if label is not None}
    classes = class_order(label_name, present)
    class_code = {label: code for code, label in enumerate(classes)}
    label_codes = np.array([class_code.get(label, -1) for label in labels], dtype=np.int64)
    eligible = label_codes >= 0
    patient_code: dict[Hashable, int] = {}
    patient_codes = np.array(
        [patient_code.setdefault(p, len(patient_code)) for p in patient_ids], dtype=np.int64
    )

    # Candidates and relevant counts per labelled query; queries without a relevant one drop out.
    masks: dict[int, np.ndarray] = {}
    n_candidates: dict[int, int] = {}
    n_relevant: dict[int, int] = {}
    scored: list[int] = []
    asked = query_rows(eligible, query_mask)
    for query in map(int, np.flatnonzero(asked)):
        mask = candidate_mask(rule, int(query), eligible, patient_codes)
        relevant = int(np.count_nonzero(mask & (label_codes == label_codes[query])))
        if relevant:
            scored.append(int(query))
            masks[int(query)] = mask
            n_candidates[int(query)] = int(np.count_nonzero(mask))
            n_relevant[int(query)] = relevant
    if not scored:
        raise EvaluationError(
            f"no query can be scored: {int(eligible.sum())} of {n_images} images carry a "
            f"{label_name!r} label and none has a relevant candidate under {protocol!r}"
        )

    class_counts = np.bincount(label_codes[eligible], minlength=len(classes))
    matrix, index = _searchable(vectors, metric)
    search: RankedSearch = searcher or index.search
    depth = n_images if searcher is None else min(n_images, search_depth or n_images)

    def search_index(rows: Sequence[int], depth: int) -> tuple[np.ndarray, np.ndarray]:
        return search(matrix[list(rows)], depth)

    search_rows: RowSearch = search_index

    if score_matrix is not None:
        if np.shape(score_matrix) != (n_images, n_images):
            raise EvaluationError(
                f"score matrix of shape {np.shape(score_matrix)}: need ({n_images}, {n_images})"
            )
        search_rows = _matrix_search(np.asarray(score_matrix), metric)
        depth = n_images
    k_timed = min(max(ks), n_images)
    for query in scored[:WARMUP_SEARCHES]:
        search_rows([query], k_timed)

    columns = _metric_columns(ks, map_cutoff)
    values = {key: np.empty(len(scored)) for key, _, _ in columns}
    chance = {key: np.empty(len(scored)) for key, _, _ in columns}
    search_ms = np.empty(len(scored))
    per_query: list[dict[str, Any]] = []
    keep_rows = len(scored) if per_query_limit is None else per_query_limit
    tick, close = _progress_reporter(progress, len(scored))
    rows_per_chunk = max(1, min(chunk_size, 2**24 // max(n_images, 1)))
    try:
        for start in range(0, len(scored), rows_per_chunk):
            chunk = scored[start : start + rows_per_chunk]
            raw_distances, ranked_ids = search_rows(chunk, depth)
            for offset, query in enumerate(chunk):
                position = start + offset
                t0 = time.perf_counter()
                search_rows([query], k_timed)
                search_ms[position] = (time.perf_counter() - t0) * 1000.0

                returned = ranked_ids[offset] >= 0
                order = ranked_ids[offset][returned]
                keep = masks[query][order]
                ranked = order[keep]
                raw_kept = raw_distances[offset][returned][keep]
                if ranking == "consensus":
                    reordered = consensus_ranking(
                        similarity_of_scores(raw_kept, metric),
                        label_codes[ranked],
                        len(classes),
                        class_counts,
                        vote_rule,
                    )
                    ranked, raw_kept = ranked[reordered], raw_kept[reordered]
                relevance = label_codes[ranked] == label_codes[query]
                for key, ranking_metric, k in columns:
                    values[key][position] = ranking_metric.value(relevance, n_relevant[query], k)
                    chance[key][position] = ranking_metric.chance(
                        n_candidates[query], n_relevant[query], k
                    )
                if position < keep_rows:
                    distances = _as_distance(raw_kept, metric)
                    per_query.append(
                        _query_row(
                            query,
                            ranked,
                            distances,
                            relevance,
                            per_query_k,
                            image_ids,
                            names,
                            labels,
                            patient_ids,
                            n_candidates[query],
                            n_relevant[query],
                        )
                    )
                tick()
    finally:
        close()

    scored_codes = label_codes[scored]
    summary = {key: float(values[key].mean()) for key, _, _ in columns}
    summary["search_ms_median"] = float(np.median(search_ms))
    summary["search_ms_p95"] = float(np.percentile(search_ms, 95))
    per_class: dict[str, dict[str, Any]] = {}
    for code, label in enumerate(classes):
        of_class = scored_codes == code
        row: dict[str, Any] = {
            "images": int(np.count_nonzero(label_codes == code)),
            "queries": int(np.count_nonzero(of_class)),
        }
        for key, _, _ in columns:
            row[key] = float(values[key][of_class].mean()) if of_class.any() else None
        row["chance"] = {
            key: float(chance[key][of_class].mean()) if of_class.any() else None
            for key, _, _ in columns
        }
        per_class[str(label)] = row

    return EvaluationResult(
        embedding_space=dict(embedding_space or {}),
        protocol=protocol,
        protocol_note=rule.description if rule.optimistic else None,
        label=label_name,
        metric=metric,
        ks=ks,
        map_cutoff=map_cutoff,
        queries=len(scored),
        archive_size=n_images,
        excluded={
            "no_label": int(n_images - eligible.sum()),
            "no_relevant_candidate": int(asked.sum() - len(scored)),
            **({} if query_mask is None else {"not_a_query": int(eligible.sum() - asked.sum())}),
        },
        metrics=summary,
        chance={key: float(chance[key].mean()) for key, _, _ in columns},
        per_class=per_class,
        per_query=per_query,
        config={
            "index": "IndexFlatIP (L2-normalised)" if metric == "cosine" else "IndexFlatL2",
            "distance": "1 - cosine similarity" if metric == "cosine" else "squared L2",
            "ranking": "full ranking of eligible candidates (batched exact search, masked)"
            + (
                f"; consensus order of the {DEFAULT_VOTE_K} nearest (mammosearch.search.ranking)"
                if ranking == "consensus"
                else ""
            ),
            "order": ranking,
            "map": "full ranking" if map_cutoff is None else f"AP@{map_cutoff}",
            "timing": f"single-query exact search, k={k_timed}, over all {n_images} vectors",
            "faiss_threads": _faiss_threads(),
            "chance": "exact expectation under a uniformly random ranking, mean over queries",
            "per_query_k": per_query_k,
        },
        duration_s=time.perf_counter() - started,
    )


def _query_row(
    query: int,
    ranking: np.ndarray,
    distances: np.ndarray,
    relevance: np.ndarray,
    per_query_k: int,
    image_ids: Sequence[int],
    names: Sequence[str],
    labels: Sequence[Hashable | None],
    patient_ids: Sequence[Hashable],
    candidates: int,
    relevant: int,
) -> dict[str, Any]:
    """One row of the Table 1 style per-query table."""
    neighbours = [
        {
            "rank": rank + 1,
            "image_id": _plain(image_ids[neighbour]),
            "name": names[neighbour],
            "patient_id": _plain(patient_ids[neighbour]),
            "label": _plain(labels[neighbour]),
            "distance": float(distances[rank]),
            "relevant": bool(relevance[rank]),
        }
        for rank, neighbour in enumerate(ranking[:per_query_k].tolist())
    ]
    return {
        "query_image_id": _plain(image_ids[query]),
        "query_name": names[query],
        "patient_id": _plain(patient_ids[query]),
        "label": _plain(labels[query]),
        "candidates": candidates,
        "relevant_candidates": relevant,
        "neighbours": neighbours,
        f"precision@{per_query_k}": METRICS["precision"].value(relevance, relevant, per_query_k),
    }


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so rows serialise to JSON."""
    return value.item() if isinstance(value, np.generic) else value
