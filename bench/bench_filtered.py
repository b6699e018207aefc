"""Benchmark filtered search: hits returned, recall and latency at 0.1% to 50% allowed.

On synthetic clustered vectors (a mixture of Gaussians; not real embeddings), per factory
(Flat, HNSW32, IVF), with allowed ids drawn at random:
  - hits: mean and min results per query for k (the contract: min(k, allowed)),
  - recall@k against exact filtered search (brute force over the allowed vectors),
  - latency: median single-query ms, and the median ratio to an unfiltered search of the
    same query timed just before it (interleaved, so machine noise falls on both; the
    modes' order rotates per query),
  - exact / selector: median ms when every segment is forced down one path (exact
    comparison of the allowed vectors; the selector search at its tuned efSearch/nprobe),
  - fixed rules (before): the choice without the sealing-time filtered tuning
    (index/filtered_tuning.py): thresholds by share and efSearch/nprobe x 1 / fraction;
  - only "ms" (served) may search unfiltered and drop the few left-out ids
    (filtered.POSTFILTER_MAX_EXCLUDED; at 99.9% allowed here).
Prints a markdown table (docs/performance.md holds one run).

    PYTHONPATH=platform python bench/bench_filtered.py --n 100000 --dim 256
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from mammosearch.index import ShardedIndex
from mammosearch.index import filtered as filtered_module
from mammosearch.index.segments import prepare_vectors

FRACTIONS = (0.001, 0.01, 0.03, 0.1, 0.5, 0.999)
"""Shares allowed; 99.9% is a search leaving out the query's own patient."""


def clustered_vectors(count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((max(16, count // 500), dim)).astype(np.float32)
    members = rng.integers(0, len(centres), size=count)
    return centres[members] + 0.6 * rng.standard_normal((count, dim)).astype(np.float32)


MODES = {
    # name: (exact_filter_rows, tuned_plan replacement or None for the served one, whether the
    # unfiltered search with the few left-out ids dropped may answer)
    "served": (None, None, True),
    "exact": (10**12, lambda bands, fraction: (True, None), False),
    "selector": (0, None, False),
    "fixed": (None, lambda bands, fraction: None, False),
}
"""The paths measured per query, interleaved with an unfiltered search of the same query so
that a slow spell of this shared machine lands on all of them alike."""


def interleaved(
    index: ShardedIndex, queries: np.ndarray, k: int, allowed: np.ndarray
) -> tuple[dict[str, float], dict[str, float], dict[str, list[np.ndarray]]]:
    """Per mode: median single-query ms, median of its ratio to the unfiltered search of the
    same query timed just before it, and the ids returned per query."""
    served_plan = filtered_module.tuned_plan
    postfilter_max = filtered_module.POSTFILTER_MAX_EXCLUDED
    times: dict[str, list[float]] = {name: [] for name in ("unfiltered", *MODES)}
    ratios: dict[str, list[float]] = {name: [] for name in MODES}
    results: dict[str, list[np.ndarray]] = {name: [] for name in MODES}
    try:
        names = list(MODES)
        for number, query in enumerate(queries):
            # The order rotates per query: the exact scan of 50-99.9% evicts the caches, and
            # whichever mode always came right after it paid for that.
            turn = number % len(names)
            for name in names[turn:] + names[:turn]:
                rows, plan, postfilter = MODES[name]
                began = time.perf_counter()
                index.search(query[None, :], k)
                unfiltered = time.perf_counter() - began
                index.exact_filter_rows = rows
                filtered_module.tuned_plan = plan or served_plan
                filtered_module.POSTFILTER_MAX_EXCLUDED = postfilter_max if postfilter else -1
                began = time.perf_counter()
                results[name].append(index.search(query[None, :], k, id_filter=allowed)[1])
                elapsed = time.perf_counter() - began
                times["unfiltered"].append(unfiltered)
                times[name].append(elapsed)
                ratios[name].append(elapsed / unfiltered)
    finally:
        index.exact_filter_rows = None
        filtered_module.tuned_plan = served_plan
        filtered_module.POSTFILTER_MAX_EXCLUDED = postfilter_max
    medians = {name: float(np.median(values) * 1000) for name, values in times.items()}
    return medians, {name: float(np.median(r)) for name, r in ratios.items()}, results


def recall(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
    hits = sum(len(set(f[0][f[0] >= 0]) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / max(1, sum(len(t) for t in truth))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--segment-size", type=int, default=50_000)
    parser.add_argument("--factories", default="Flat;HNSW32;IVF256,Flat", help="';'-separated")
    args = parser.parse_args()
    factories = args.factories.split(";")
    rng = np.random.default_rng(0)
    ids = np.arange(1, args.n + 1, dtype=np.int64)
    # Queries from the archive's own clusters (a query is a mammogram like the archive's),
    # drawn with it and held out of it.
    drawn = clustered_vectors(args.n + args.queries, args.dim, rng)
    vectors, queries = drawn[: args.n], drawn[args.n :]
    prepared = prepare_vectors(vectors, "cosine")
    prepared_queries = prepare_vectors(queries, "cosine")
    allowed_sets = {
        fraction: np.sort(rng.choice(ids, max(1, int(args.n * fraction)), replace=False))
        for fraction in FRACTIONS
    }
    print(
        f"synthetic clustered vectors: n={args.n}, dim={args.dim}, k={args.k}, cosine,"
        f" {args.queries} single queries, segment_size={args.segment_size}\n"
    )
    print(
        "| factory | allowed | hits mean (min) | recall | ms | x unfiltered | exact ms"
        " | selector ms | fixed rules (before): ms (x unfiltered), recall |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    tuned = []
    with tempfile.TemporaryDirectory() as scratch:
        for factory in factories:
            index = ShardedIndex(
                Path(scratch) / factory.replace(",", "_"),
                args.dim,
                "cosine",
                segment_size=args.segment_size,
                factory=factory,
            )
            began = time.perf_counter()
            index.replace_all(ids, vectors)
            build_s = time.perf_counter() - began
            unfiltered_ms = []
            for fraction, allowed in allowed_sets.items():
                subset = prepared[allowed - 1]
                want = min(args.k, len(allowed))
                _, positions = faiss.knn(prepared_queries, subset, want, faiss.METRIC_INNER_PRODUCT)
                truth = [allowed[row] for row in positions]
                # A boolean mask by id, as the product's filter table hands the index.
                mask = np.zeros(args.n + 1, dtype=bool)
                mask[allowed] = True
                ms, ratio, found = interleaved(index, queries, args.k, mask)
                unfiltered_ms.append(ms["unfiltered"])
                counts = [int((f >= 0).sum()) for f in found["served"]]
                print(
                    f"| {factory} | {fraction:.1%} | {np.mean(counts):.1f} ({min(counts)})"
                    f" | {recall(found['served'], truth):.3f} | {ms['served']:.2f}"
                    f" | **{ratio['served']:.2f}** | {ms['exact']:.2f} | {ms['selector']:.2f}"
                    f" | {ms['fixed']:.2f} (x{ratio['fixed']:.2f}),"
                    f" {recall(found['fixed'], truth):.3f} |"
                )
            print(
                f"| {factory} | unfiltered | | | {np.median(unfiltered_ms):.2f} | 1.00 | | |"
                f" build {build_s:.0f} s |"
            )
            tuned.append((factory, [dict(t) for t in index._reader.view.tuned]))
    print(
        "\nFiltered search tuned at sealing, per segment (fraction: value, selector ms /"
        " exact ms; value None: exact):"
    )
    for factory, segments in tuned:
        for number, entry in enumerate(segments):
            bands = entry.get("filtered") or []
            cells = ", ".join(
                f"{band['fraction']:g}: {band.get('ef_search', band.get('nprobe'))}"
                f" ({band.get('selector_ms', float('nan')):.2f}"
                f" / {band['exact_ms'] and round(band['exact_ms'], 2)})"
                for band in bands
            )
            print(f"- {factory} segment {number}: {cells or 'none'}")


if __name__ == "__main__":
    main()
