"""The two sides of filtered search, in raw FAISS: where each pays, to place EXACT_MAX_ROWS.

    PYTHONPATH=platform python bench/bench_filtered_paths.py --n 100000 --dim 256

For allowed fractions from 0.1% to 50% (random ids), single queries on 1 thread:
  - exact: gather the allowed vectors and brute-force them (what index/filtered.py does
    below EXACT_MAX_ROWS), beside brute force over vectors gathered beforehand (the
    arithmetic alone) and a Flat scan with an IDSelectorBitmap;
  - HNSW32 with an IDSelectorBitmap at several efSearch: latency and recall@10 against
    exact filtered search.
Latencies are also printed as ratios to the unfiltered HNSW search of the same run.
Vectors: bench_filtered.py's clustered mixture (synthetic).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import faiss
import numpy as np
from bench_filtered import clustered_vectors

K = 10
FRACTIONS = (0.001, 0.01, 0.03, 0.1, 0.3, 0.5)
EF_SWEEP = (24, 64, 128, 256, 640)
QUERIES = 50


def median_ms(queries: np.ndarray, run: Callable[[np.ndarray], np.ndarray]) -> tuple[float, list]:
    times, found = [], []
    for query in queries:
        began = time.perf_counter()
        found.append(run(query[None, :]))
        times.append(time.perf_counter() - began)
    return float(np.median(times) * 1000), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    vectors = clustered_vectors(args.n + QUERIES, args.dim, rng)
    faiss.normalize_L2(vectors)
    queries, vectors = vectors[:QUERIES].copy(), vectors[QUERIES:].copy()
    index = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    index.add(vectors)
    storage = faiss.downcast_index(index.storage)
    unfiltered_params = faiss.SearchParametersHNSW(efSearch=24)
    unfiltered, _ = median_ms(queries, lambda q: index.search(q, K, params=unfiltered_params)[1])
    print(f"{args.n} x {args.dim}, HNSW32 efConstruction 40; unfiltered efSearch 24: "
          f"{unfiltered:.3f} ms")  # fmt: skip
    ip = faiss.METRIC_INNER_PRODUCT
    header = "| allowed | gather + exact ms | exact only ms | Flat + selector ms | "
    header += " | ".join(f"HNSW ef{ef} ms (recall)" for ef in EF_SWEEP) + " |"
    print(header)
    print("|" + "---|" * (4 + len(EF_SWEEP)))
    for fraction in FRACTIONS:
        allowed = rng.random(args.n) < fraction
        rows = np.flatnonzero(allowed)
        gathered = vectors[rows]
        truth = [rows[faiss.knn(q[None, :], gathered, K, metric=ip)[1][0]] for q in queries]
        packed = np.packbits(allowed, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(packed), faiss.swig_ptr(packed))
        gather_ms, _ = median_ms(
            queries, lambda q, r=rows: faiss.knn(q, np.ascontiguousarray(vectors[r]), K, metric=ip)
        )
        exact_ms, _ = median_ms(queries, lambda q, g=gathered: faiss.knn(q, g, K, metric=ip))
        flat_params = faiss.SearchParameters(sel=selector)
        flat_ms, _ = median_ms(queries, lambda q, p=flat_params: storage.search(q, K, params=p))
        cells = [f"{fraction:.1%}", f"{gather_ms:.2f}", f"{exact_ms:.2f}", f"{flat_ms:.2f}"]
        for ef in EF_SWEEP:
            params = faiss.SearchParametersHNSW(efSearch=ef, sel=selector)
            ms, found = median_ms(queries, lambda q, p=params: index.search(q, K, params=p)[1][0])
            hits = [len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]
            cells.append(f"{ms:.2f} (x{ms / unfiltered:.1f}, {np.mean(hits):.3f})")
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
