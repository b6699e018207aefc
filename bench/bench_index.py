"""Benchmark the sharded index: Flat vs HNSW32 vs IVF (nlist ~ sqrt(N)), one run, ratios vs Flat.

Measures, per factory string, on synthetic clustered unit vectors (a mixture of Gaussians,
closer to real embeddings than uniform noise, which no ANN index can shortcut):
  - append throughput: vectors/s of `add` in batches (Flat deltas, O(batch) each),
  - seal time: the batch that reaches segment_size builds/trains the factory's segment,
  - bytes per vector on disk (segments are read whole into memory, so ~ RAM per vector),
  - single-query search latency (median, p95) and recall@k against exact Flat.

    PYTHONPATH=platform python bench/bench_index.py --n 100000 --dim 1024
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from mammosearch.index import ShardedIndex


def clustered_vectors(count: int, dim: int, clusters: int, rng: np.random.Generator):
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    members = rng.integers(0, clusters, size=count)
    noise = rng.standard_normal((count, dim)).astype(np.float32)
    return centres[members] + 0.6 * noise


def build(root: Path, factory: str, ids, vectors, segment_size: int, batch: int, metric: str):
    index = ShardedIndex(root, vectors.shape[1], metric, segment_size=segment_size, factory=factory)
    append_s, append_count, seal_s = 0.0, 0, 0.0
    for start in range(0, len(ids), batch):
        stop = min(start + batch, len(ids))
        sealed_before = index.stats()["sealed_segments"]
        began = time.perf_counter()
        index.add(ids[start:stop], vectors[start:stop])
        elapsed = time.perf_counter() - began
        if index.stats()["sealed_segments"] > sealed_before:
            seal_s += elapsed
        else:
            append_s += elapsed
            append_count += stop - start
    return index, append_count / append_s if append_s else float("nan"), seal_s


def time_single_queries(index: ShardedIndex, queries: np.ndarray, k: int):
    found, latencies_ms = [], []
    index.search(queries[:1], k)  # warm-up
    for query in queries:
        began = time.perf_counter()
        _, ids = index.search(query[None], k)
        latencies_ms.append((time.perf_counter() - began) * 1000)
        found.append(ids[0])
    return np.array(found), np.median(latencies_ms), np.percentile(latencies_ms, 95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="vectors in the index")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1000, help="vectors per add() call")
    parser.add_argument("--segment-size", type=int, default=None, help="default: N (one seal)")
    parser.add_argument("--metric", default="cosine", choices=["l2", "cosine"])
    parser.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    clusters = max(10, int(math.sqrt(args.n)))
    vectors = clustered_vectors(args.n + args.queries, args.dim, clusters, rng)
    queries, vectors = vectors[: args.queries], vectors[args.queries :]
    ids = np.arange(args.n, dtype=np.int64)
    segment_size = args.segment_size or args.n
    nlist = max(1, int(round(math.sqrt(segment_size))))
    factories = ["Flat", "HNSW32", f"IVF{nlist},Flat"]
    print(
        f"N={args.n} dim={args.dim} metric={args.metric} segment_size={segment_size} "
        f"batch={args.batch} queries={args.queries} k={args.k} threads={args.threads}"
    )

    rows, truth = [], None
    with tempfile.TemporaryDirectory(prefix="bench-index-") as scratch:
        for factory in factories:
            root = Path(scratch) / factory.replace(",", "_")
            index, append_per_s, seal_s = build(
                root, factory, ids, vectors, segment_size, args.batch, args.metric
            )
            found, median_ms, p95_ms = time_single_queries(index, queries, args.k)
            if truth is None:
                truth = found
            recall = np.mean([len(set(f) & set(t)) for f, t in zip(found, truth, strict=True)])
            stats = index.stats()
            rows.append(
                {
                    "factory": factory,
                    "append_per_s": append_per_s,
                    "seal_s": seal_s,
                    "bytes_per_vector": stats["bytes"] / stats["vectors"],
                    "median_ms": median_ms,
                    "p95_ms": p95_ms,
                    "recall": recall / args.k,
                }
            )

    flat = rows[0]
    header = (
        f"{'factory':<14}{'append vec/s':>13}{'seal s':>8}{'B/vector':>10}{'GiB/1M':>8}"
        f"{'x Flat':>8}{'search ms':>11}{'p95 ms':>8}{'x Flat':>8}{f'recall@{args.k}':>11}"
    )
    print(header)
    for row in rows:
        print(
            f"{row['factory']:<14}{row['append_per_s']:>13.0f}{row['seal_s']:>8.2f}"
            f"{row['bytes_per_vector']:>10.0f}{row['bytes_per_vector'] * 1e6 / 2**30:>8.2f}"
            f"{row['bytes_per_vector'] / flat['bytes_per_vector']:>8.2f}"
            f"{row['median_ms']:>11.3f}{row['p95_ms']:>8.3f}"
            f"{row['median_ms'] / flat['median_ms']:>8.3f}{row['recall']:>11.3f}"
        )


if __name__ == "__main__":
    main()
