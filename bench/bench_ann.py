"""The product's index against raw FAISS, hnswlib and usearch, in one run, on realistic vectors.

Vectors come from bench/realistic_vectors.py (fitted to real efficientnet-lite0 embeddings
of the dev images; its nearest-neighbour check is printed first). Cosine, k=10, queries
drawn from the same generator and not in the index. Per config: recall@10 against exact
search, single-query p50/p99 on 1 thread, batched QPS (all queries in one call, all
threads), build time, bytes on disk, and for the product the RSS of a fresh reader process
(memory-mapped segments). The product builds as it is deployed ("auto": HNSW32 at these
sizes, deltas merged into one main index every 50,000 vectors, efSearch tuned at each
merge) and is then also searched at each efSearch of the sweep, to compare like with like.
Every HNSW here is M=32 with efConstruction=40 (FAISS's default; hnswlib and usearch set
the same), so the graphs cost the same to build. The Pareto table: the fastest config of
each at recall@10 >= 0.95, and its p50 as a ratio to the product's.

    PYTHONPATH=platform python bench/bench_ann.py --n 100000[,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realistic_vectors import Generator, check, real_embeddings  # noqa: E402

from mammosearch.embed.cpu_features import vector_extensions  # noqa: E402
from mammosearch.index import ShardedIndex  # noqa: E402

K = 10
EF_SWEEP = (16, 24, 32, 48, 64, 96, 128)
RECALL_LEVELS = (0.95, 0.96, 0.97, 0.98, 0.99)
SERVED = "product (auto, as served)"
"""The product's row at its tuned settings (the sweeps' rows replace them)."""
M, EF_CONSTRUCTION = 32, 40
THREADS = os.cpu_count() or 1


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def single_query(search, queries: np.ndarray) -> tuple[float, float, np.ndarray]:
    """p50 and p99 ms of one query at a time, and the ids found."""
    times, found = [], []
    for query in queries:
        began = time.perf_counter()
        ids = search(query[None, :])
        times.append(time.perf_counter() - began)
        found.append(np.asarray(ids).reshape(-1)[:K])
    return (
        float(np.percentile(times, 50) * 1e3),
        float(np.percentile(times, 99) * 1e3),
        np.array(found),
    )


def batched_qps(search, queries: np.ndarray) -> float:
    began = time.perf_counter()
    search(queries)
    return len(queries) / (time.perf_counter() - began)


def measure(name, setting, single, batch, queries, truth, build_s, disk_bytes, rss=None):
    faiss.omp_set_num_threads(1)
    p50, p99, found = single_query(single, queries)
    faiss.omp_set_num_threads(THREADS)
    qps = batched_qps(batch, queries)
    row = {
        "config": name,
        "setting": setting,
        "recall@10": round(recall(found, truth), 4),
        "p50 ms": round(p50, 3),
        "p99 ms": round(p99, 3),
        "batched QPS": round(qps),
        "build s": round(build_s, 1),
        "disk MiB": round(disk_bytes / 2**20, 1),
        "reader RSS MiB": rss,
    }
    print(json.dumps(row), flush=True)
    return row


def reader_rss_mib(root: Path, dim: int, queries_file: Path) -> float:
    """Peak RSS of a fresh process that opens the index and runs every query (the mapped
    pages it touched count; they are shared with every other reader of the files)."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across execve.
    script = (
        "import re, numpy as np\n"
        "from mammosearch.index import ShardedIndex\n"
        f"index = ShardedIndex({str(root)!r}, {dim}, 'cosine', factory='auto')\n"
        f"queries = np.load({str(queries_file)!r})\n"
        "for q in queries: index.search(q[None, :], 10)\n"
        "status = open('/proc/self/status').read()\n"
        "print(int(re.search(r'VmHWM:\\s+(\\d+)', status).group(1)) / 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def bench_product(vectors, queries, truth, workdir: Path) -> list[dict]:
    root = workdir / "product"
    dim = vectors.shape[1]
    faiss.omp_set_num_threads(THREADS)
    began = time.perf_counter()
    index = ShardedIndex(root, dim, "cosine", factory="auto")
    ids = np.arange(len(vectors), dtype=np.int64)
    for start in range(0, len(vectors), 10_000):
        index.add(ids[start : start + 10_000], vectors[start : start + 10_000])
    index.merge()
    build_s = time.perf_counter() - began
    queries_file = workdir / "queries.npy"
    np.save(queries_file, queries)
    rss = reader_rss_mib(root, dim, queries_file)
    reader = ShardedIndex(root, dim, "cosine", factory="auto")
    disk = reader.stats()["bytes"]  # the files the manifest names (not yet collected ones)
    main = reader.stats()["main"]
    tuned = reader.stats()["tuned_search"]
    rows = [
        measure(
            SERVED,
            f"{main['factory']}, tuned {tuned[0] if tuned else 'none'}",
            lambda q: reader.search(q, K)[1],
            lambda q: reader.search(q, K),
            queries,
            truth,
            build_s,
            disk,
            rss,
        )
    ]
    manifest = reader._reader.view.manifest
    for ef in EF_SWEEP:  # the same files searched at a fixed efSearch instead of the tuned one
        fixed = ShardedIndex(root, dim, "cosine", factory="auto")
        forced = {
            **manifest,
            "segments": [
                {**e, "search": {"ef_search": ef}} if e["kind"] == "sealed" else e
                for e in manifest["segments"]
            ],
        }
        fixed._reader.install(fixed._reader.load(forced), None)
        rows.append(
            measure(
                "product",
                f"efSearch={ef}",
                lambda q, f=fixed: f.search(q, K)[1],
                lambda q, f=fixed: f.search(q, K),
                queries,
                truth,
                build_s,
                disk,
                rss,
            )
        )
    return rows


def bench_faiss(vectors, queries, truth) -> list[dict]:
    faiss.omp_set_num_threads(THREADS)
    began = time.perf_counter()
    index = faiss.IndexHNSWFlat(vectors.shape[1], M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.add(vectors)
    build_s = time.perf_counter() - began
    with tempfile.NamedTemporaryFile(dir=os.environ.get("BENCH_TMP")) as handle:
        faiss.write_index(index, handle.name)  # not serialize_index: a second copy in memory
        disk = os.path.getsize(handle.name)
    rows = []
    for ef in EF_SWEEP:
        params = faiss.SearchParametersHNSW(efSearch=ef)
        rows.append(
            measure(
                "raw FAISS HNSW32",
                f"efSearch={ef}",
                lambda q, p=params: index.search(q, K, params=p)[1],
                lambda q, p=params: index.search(q, K, params=p),
                queries,
                truth,
                build_s,
                disk,
            )
        )
    return rows


def bench_hnswlib(vectors, queries, truth) -> list[dict]:
    import hnswlib

    began = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=vectors.shape[1])
    index.init_index(max_elements=len(vectors), M=M, ef_construction=EF_CONSTRUCTION)
    index.set_num_threads(THREADS)
    index.add_items(vectors, np.arange(len(vectors)))
    build_s = time.perf_counter() - began
    disk = index.index_file_size()
    rows = []
    for ef in EF_SWEEP:
        index.set_ef(max(ef, K))

        def single(q):
            index.set_num_threads(1)
            return index.knn_query(q, k=K)[0]

        def batch(q):
            index.set_num_threads(THREADS)
            return index.knn_query(q, k=K)

        rows.append(
            measure(f"hnswlib M{M}", f"ef={ef}", single, batch, queries, truth, build_s, disk)
        )
    return rows


def bench_usearch(vectors, queries, truth) -> list[dict]:
    from usearch.index import Index

    began = time.perf_counter()
    index = Index(
        ndim=vectors.shape[1],
        metric="ip",
        dtype="f32",
        connectivity=M,
        expansion_add=EF_CONSTRUCTION,
    )
    index.add(np.arange(len(vectors)), vectors, threads=THREADS)
    build_s = time.perf_counter() - began
    disk = index.serialized_length
    rows = []
    for ef in EF_SWEEP:
        index.expansion_search = ef
        rows.append(
            measure(
                f"usearch conn{M}",
                f"expansion={ef}",
                lambda q: index.search(q, K, threads=1).keys,
                lambda q: index.search(q, K, threads=THREADS),
                queries,
                truth,
                build_s,
                disk,
            )
        )
    return rows


def crossover(generator: Generator, counts=(1000, 2500, 5000, 10000, 25000)) -> None:
    """Exact (Flat) against HNSW32 tuned as the product tunes it, by archive size: where
    factory_choice.EXACT_MAX_CELLS should sit."""
    print("\n## exact vs HNSW by size (1280-d, single query, 1 thread)")
    print("| n | Flat p50 ms | HNSW32 p50 ms | HNSW32 recall@10 | tuned efSearch |")
    print("|---|---|---|---|---|")
    queries = generator.sample(200, seed=3)
    faiss.normalize_L2(queries)
    for count in counts:
        vectors = generator.sample(count, seed=2)
        faiss.normalize_L2(vectors)
        _, truth = faiss.knn(queries, vectors, K, metric=faiss.METRIC_INNER_PRODUCT)
        p50 = {}
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as workdir:
            for factory in ("Flat", "HNSW32"):
                faiss.omp_set_num_threads(THREADS)
                index = ShardedIndex(
                    Path(workdir) / factory, vectors.shape[1], "cosine", factory=factory
                )
                index.add(np.arange(count), vectors)
                index.merge()
                faiss.omp_set_num_threads(1)
                p50[factory], _, found = single_query(lambda q, i=index: i.search(q, K)[1], queries)
                tuned = index.stats()["tuned_search"]
        print(
            f"| {count:,} | {p50['Flat']:.3f} | {p50['HNSW32']:.3f} |"
            f" {recall(found, truth):.3f} | {tuned[0]['ef_search'] if tuned else '-'} |"
        )
    faiss.omp_set_num_threads(THREADS)


def pareto(rows: list[dict]) -> list[dict]:
    best: dict[str, dict] = {}
    for row in rows:
        if row["recall@10"] < 0.95:
            continue
        family = row["config"]
        if family not in best or row["p50 ms"] < best[family]["p50 ms"]:
            best[family] = row
    return sorted(best.values(), key=lambda row: row["p50 ms"])


def p50_at_recall(rows: list[dict], level: float) -> float | None:
    """One library's p50 at exactly `level` recall: linear between the two sweep points that
    bracket it (the last below and the first at or above, in recall order). The sweeps step
    efSearch by up to 2x, so "fastest point at >= 0.95" compares one library at 0.958 with
    another at 0.973; at one recall the comparison is the issue's "at the same recall"."""
    points = sorted((row["recall@10"], row["p50 ms"]) for row in rows)
    for (low_recall, low_ms), (high_recall, high_ms) in zip(points, points[1:], strict=False):
        if low_recall < level <= high_recall:
            share = (level - low_recall) / (high_recall - low_recall)
            return low_ms + share * (high_ms - low_ms)
    return points[0][1] if points and points[0][0] >= level else None


def equal_recall_table(swept: list[dict]) -> str:
    """p50 per library at each of RECALL_LEVELS, and its ratio to the product's."""
    families = list(dict.fromkeys(r["config"] for r in swept))
    lines = ["| recall@10 | " + " | ".join(families) + " |", "|---|" + "---|" * len(families)]
    for level in RECALL_LEVELS:
        p50 = {f: p50_at_recall([r for r in swept if r["config"] == f], level) for f in families}
        product = p50.get("product")
        cells = [
            ""
            if p50[f] is None
            else f"{p50[f]:.3f} ms"
            + (f" ({p50[f] / product:.2f}x)" if product and f != "product" else "")
            for f in families
        ]
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join("" if r[c] is None else str(r[c]) for c in columns) + " |" for r in rows
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="100000")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--skip", default="", help="comma-separated: faiss,hnswlib,usearch")
    parser.add_argument("--crossover", action="store_true", help="also exact vs HNSW by size")
    args = parser.parse_args()
    started = time.perf_counter()
    real = real_embeddings()
    generator = Generator(real)
    print("nearest-neighbour check (cosine distance to the 1st neighbour, at the dev count):")
    print(json.dumps({k: round(v, 4) for k, v in check(real, generator).items()}))
    print(
        f"CPU: {vector_extensions()}; FAISS build {faiss.get_compile_options().strip()},"
        f" loaded {faiss.swigfaiss.__name__}; {THREADS} threads"
    )
    skip = set(filter(None, args.skip.split(",")))
    if args.crossover:
        crossover(generator)
    for count in (int(n) for n in args.n.split(",")):
        vectors = generator.sample(count, seed=2)
        queries = generator.sample(args.queries, seed=3)
        faiss.normalize_L2(vectors)
        faiss.normalize_L2(queries)
        faiss.omp_set_num_threads(THREADS)
        _, truth = faiss.knn(queries, vectors, K, metric=faiss.METRIC_INNER_PRODUCT)
        print(f"\n## n = {count:,} x {vectors.shape[1]}")
        rows = []
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as workdir:
            rows += bench_product(vectors, queries, truth, Path(workdir))
        if "faiss" not in skip:
            rows += bench_faiss(vectors, queries, truth)
        if "hnswlib" not in skip:
            rows += bench_hnswlib(vectors, queries, truth)
        if "usearch" not in skip:
            rows += bench_usearch(vectors, queries, truth)
        print(table(rows))
        swept = [r for r in rows if r["config"] != SERVED]
        front = pareto(swept)
        served = rows[0]
        if front:
            product = next((r for r in front if r["config"] == "product"), None)
            print(f"\nfastest per library at recall@10 >= 0.95 (n = {count:,}):")
            for row in front:
                ratio = row["p50 ms"] / product["p50 ms"] if product else float("nan")
                print(
                    f"- {row['config']} {row['setting']}: recall {row['recall@10']},"
                    f" p50 {row['p50 ms']} ms ({ratio:.2f}x the product's best)"
                )
            print(
                f"- product as served (tuned at its merges): recall {served['recall@10']},"
                f" p50 {served['p50 ms']} ms"
            )
            print(
                f"\np50 at the same recall, between sweep points (n = {count:,}; ratio to the"
                " product's):"
            )
            print(equal_recall_table(swept))
        del vectors
    print(f"\nran {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
