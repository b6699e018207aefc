"""Measure what an index costs in memory and on disk, per vector, for each FAISS factory.

The numbers in docs/operations.md ("Sizing") come from this script. Each (dim, factory)
is built in one child process and loaded in another, so the reported resident memory is
what a web replica pays to hold the segment, not what building it cost.

    PYTHONPATH=platform:. .venv/bin/python bench/bench_index_memory.py \
        --vectors 200000 --dims 1024,1280 --threads 2 \
        --factory Flat --factory HNSW32 --factory IVF1024,Flat --factory IVF1024,PQ64 \
        --postgres-url postgresql://postgres@127.0.0.1:5432/postgres \
        --out var/bench/index_memory.json

Vectors are seeded Gaussian, L2-normalised float32 (memory does not depend on the values).
IVF training uses `--train-per-list` points per list: enough for a memory reading, not
for recall (train production IVF indexes on real vectors).
Flat and HNSW indexes are wrapped in IndexIDMap2 (the store keeps external image ids);
IVF indexes carry their ids in the inverted lists already.
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

MIB = 1024 * 1024


def _resident_bytes() -> int:
    """This process's resident set size (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def _vectors(count: int, dim: int, seed: int):  # type: ignore[no-untyped-def]
    import numpy as np

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def build_segment(dim: int, factory: str, count: int, train_count: int, path: Path) -> dict:
    """Build one index of `count` vectors, write it to `path`; return timings."""
    import faiss
    import numpy as np

    vectors = _vectors(count, dim, seed=dim)
    index = faiss.index_factory(dim, factory, faiss.METRIC_L2)
    started = time.perf_counter()
    if not index.is_trained:
        index.train(vectors[:train_count])
    train_s = time.perf_counter() - started
    if factory.startswith("IVF"):
        target = index
    else:
        target = faiss.IndexIDMap2(index)
    started = time.perf_counter()
    target.add_with_ids(vectors, np.arange(count, dtype=np.int64))
    add_s = time.perf_counter() - started
    faiss.write_index(target, str(path))
    return {"train_s": round(train_s, 2), "add_s": round(add_s, 2)}


def load_segment(path: Path) -> dict:
    """Load an index in a fresh process; report the resident memory it added."""
    import faiss

    # Load an empty index first so FAISS's own code pages and thread pools are not counted.
    faiss.deserialize_index(faiss.serialize_index(faiss.IndexFlatL2(8)))
    before = _resident_bytes()
    index = faiss.read_index(str(path))
    after = _resident_bytes()
    return {"resident_bytes": after - before, "ntotal": int(index.ntotal)}


def _child(mode: str, **kwargs: object) -> dict:
    """Run build/load in a separate interpreter so memory readings do not mix."""
    command = [sys.executable, __file__, f"--child-{mode}", json.dumps(kwargs, default=str)]
    finished = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])


def measure(dim: int, factory: str, count: int, train_count: int, work_dir: Path) -> dict:
    path = work_dir / f"{factory.replace(',', '_')}_{dim}.faiss"
    timings = _child(
        "build", dim=dim, factory=factory, count=count, train_count=train_count, path=path
    )
    loaded = _child("load", path=path)
    file_bytes = path.stat().st_size
    path.unlink()
    per_vector_file = file_bytes / count
    per_vector_resident = loaded["resident_bytes"] / count
    return {
        "dim": dim,
        "factory": factory,
        "vectors": count,
        "file_mib": round(file_bytes / MIB, 1),
        "resident_mib": round(loaded["resident_bytes"] / MIB, 1),
        "file_bytes_per_vector": round(per_vector_file, 1),
        "resident_bytes_per_vector": round(per_vector_resident, 1),
        "gib_per_million_resident": round(per_vector_resident * 1e6 / 1024**3, 2),
        **timings,
    }


def measure_postgres(url: str, dim: int, rows: int) -> dict:
    """Bytes per row of a table shaped like image_embeddings (float32 bytes in bytea)."""
    import numpy as np
    import psycopg

    vectors = _vectors(rows, dim, seed=7)
    with psycopg.connect(url, autocommit=False) as connection:
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE bench_image_embeddings ("
                " image_id integer, space_id integer, vector bytea, indexed boolean,"
                " created_at timestamptz DEFAULT now(), PRIMARY KEY (image_id, space_id))"
            )
            cursor.execute("CREATE INDEX ON bench_image_embeddings (indexed)")
            with cursor.copy(
                "COPY bench_image_embeddings (image_id, space_id, vector, indexed) FROM STDIN"
            ) as copy:
                for image_id, vector in enumerate(vectors):
                    copy.write_row((image_id, 1, vector.astype(np.float32).tobytes(), True))
            cursor.execute("ANALYZE bench_image_embeddings")
            cursor.execute("SELECT pg_total_relation_size('bench_image_embeddings')")
            total_bytes = cursor.fetchone()[0]
        connection.rollback()
    return {
        "dim": dim,
        "rows": rows,
        "total_mib": round(total_bytes / MIB, 1),
        "bytes_per_row": round(total_bytes / rows, 1),
        "gib_per_million": round(total_bytes / rows * 1e6 / 1024**3, 2),
    }


def markdown_table(results: dict) -> str:
    """The tables docs/operations.md shows, from this script's JSON output."""
    lines = [
        "| dim | factory | vectors | file MiB | resident MiB | bytes/vector (resident) "
        "| GiB per million (linear) | build s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["indexes"]:
        lines.append(
            f"| {row['dim']} | `{row['factory']}` | {row['vectors']:,} | {row['file_mib']} "
            f"| {row['resident_mib']} | {row['resident_bytes_per_vector']:,} "
            f"| {row['gib_per_million_resident']} | {row['train_s'] + row['add_s']:.0f} |"
        )
    if results["postgres"]:
        lines += [
            "",
            "| dim | rows | table + indexes MiB | bytes/row | GiB per million (linear) |",
            "|---:|---:|---:|---:|---:|",
        ]
        for row in results["postgres"]:
            lines.append(
                f"| {row['dim']} | {row['rows']:,} | {row['total_mib']} "
                f"| {row['bytes_per_row']:,} | {row['gib_per_million']} |"
            )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1].startswith("--child-"):
        arguments = json.loads(sys.argv[2])
        if sys.argv[1] == "--child-build":
            arguments["path"] = Path(arguments["path"])
            print(json.dumps(build_segment(**arguments)))
        else:
            print(json.dumps(load_segment(Path(arguments["path"]))))
        return

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--dims", default="1024,1280", help="comma-separated dimensions")
    parser.add_argument("--factory", action="append", help="FAISS factory string (repeat)")
    parser.add_argument(
        "--train-per-list",
        type=int,
        default=64,
        help="IVF training points per list (FAISS warns below 39)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--postgres-url", help="also measure bytea rows in PostgreSQL")
    parser.add_argument("--postgres-rows", type=int, default=20_000)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--markdown", type=Path, help="print the tables of an earlier --out JSON and exit"
    )
    options = parser.parse_args()
    if options.markdown:
        print(markdown_table(json.loads(options.markdown.read_text())))
        return
    factories = options.factory or ["Flat", "HNSW32", "IVF1024,Flat", "IVF1024,PQ64"]
    os.environ["OMP_NUM_THREADS"] = str(options.threads)

    results: dict[str, object] = {"command": " ".join(sys.argv), "indexes": [], "postgres": []}
    with tempfile.TemporaryDirectory(prefix="bench-index-memory-") as work_dir:
        for dim in (int(part) for part in options.dims.split(",")):
            for factory in factories:
                lists = int(factory[3:].split(",")[0]) if factory.startswith("IVF") else 0
                train_count = min(options.vectors, max(lists * options.train_per_list, 1))
                row = measure(dim, factory, options.vectors, train_count, Path(work_dir))
                print(json.dumps(row), flush=True)
                results["indexes"].append(row)  # type: ignore[union-attr]
            if options.postgres_url:
                row = measure_postgres(options.postgres_url, dim, options.postgres_rows)
                print(json.dumps({"postgres": row}), flush=True)
                results["postgres"].append(row)  # type: ignore[union-attr]
    if options.out:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
