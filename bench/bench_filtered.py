"""Benchmark filtered search: hits returned, recall and latency at 0.1% to 50% allowed.

On synthetic clustered vectors (a mixture of Gaussians; not real embeddings), per factory
(Flat, HNSW32, IVF), with allowed ids drawn at random:
  - hits: mean and min results per query for k (the contract: min(k, allowed)),
  - recall@k against exact filtered search (brute force over the allowed vectors),
  - latency: median single-query ms, and as a ratio to unfiltered search in the same run,
  - exact / selector: median ms when every segment is forced down one path (the two sides
    of filtered.EXACT_MAX_ROWS / EXACT_MAX_FRACTION, the thresholds between them),
  - before: hits and recall of the previous code (IDSelectorBatch, fixed efSearch/nprobe).
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
from mammosearch.index.segments import prepare_vectors, search_parameters

FRACTIONS = (0.001, 0.01, 0.03, 0.1, 0.5, 0.999)
"""Shares allowed; 99.9% is a search leaving out the query's own patient."""


def clustered_vectors(count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((max(16, count // 500), dim)).astype(np.float32)
    members = rng.integers(0, len(centres), size=count)
    return centres[members] + 0.6 * rng.standard_normal((count, dim)).astype(np.float32)


def median_ms(
    index: ShardedIndex, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> tuple[float, list[np.ndarray]]:
    """Median single-query latency of index.search and the ids it returned per query."""
    times, results = [], []
    for query in queries:
        began = time.perf_counter()
        results.append(index.search(query[None, :], k, id_filter=allowed)[1])
        times.append(time.perf_counter() - began)
    return float(np.median(times) * 1000), results


def previous_search(index: ShardedIndex, query: np.ndarray, k: int, allowed: np.ndarray):
    """What search did before: one IDSelectorBatch, the factory's fixed efSearch / nprobe."""
    selector = faiss.IDSelectorBatch(allowed)
    query = prepare_vectors(query, index.metric)
    distances, ids = [], []
    for segment in index._view.segments:
        params = search_parameters(segment.inner, selector, nprobe=16, ef_search=64)
        found = segment.index.search(query, min(k, len(segment.ids)), params=params)
        distances.append(found[0])
        ids.append(found[1])
    return index._merge(distances, ids, 1, k)[1]


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
        " | selector ms | before: hits mean (min), recall |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
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
            unfiltered_ms, _ = median_ms(index, queries, args.k)
            for fraction, allowed in allowed_sets.items():
                subset = prepared[allowed - 1]
                want = min(args.k, len(allowed))
                _, positions = faiss.knn(prepared_queries, subset, want, faiss.METRIC_INNER_PRODUCT)
                truth = [allowed[row] for row in positions]
                # A boolean mask by id, as the product's filter table hands the index.
                mask = np.zeros(args.n + 1, dtype=bool)
                mask[allowed] = True
                ms, found = median_ms(index, queries, args.k, mask)
                counts = [int((f >= 0).sum()) for f in found]
                forced = {}
                shares = ("EXACT_MAX_FRACTION", "EXACT_MAX_FRACTION_IN_PLACE")
                served = {name: getattr(filtered_module, name) for name in shares}
                for name, rows, share in (("exact", 10**12, 1.0), ("selector", 0, 0.0)):
                    index.exact_filter_rows = rows
                    for constant in shares:
                        setattr(filtered_module, constant, share)
                    forced[name], _ = median_ms(index, queries, args.k, mask)
                index.exact_filter_rows = None
                for constant, value in served.items():
                    setattr(filtered_module, constant, value)
                before = [previous_search(index, q[None, :], args.k, allowed) for q in queries]
                before_counts = [int((b >= 0).sum()) for b in before]
                print(
                    f"| {factory} | {fraction:.1%} | {np.mean(counts):.1f} ({min(counts)})"
                    f" | {recall(found, truth):.3f} | {ms:.2f} | {ms / unfiltered_ms:.2f}"
                    f" | {forced['exact']:.2f} | {forced['selector']:.2f}"
                    f" | {np.mean(before_counts):.1f} ({min(before_counts)}),"
                    f" {recall(before, truth):.2f} |"
                )
            print(
                f"| {factory} | unfiltered | | | {unfiltered_ms:.2f} | 1.00 | | |"
                f" build {build_s:.0f} s |"
            )


if __name__ == "__main__":
    main()
