"""Ingestion throughput through the real queues: images/s from arrival to searchable.

For each worker count, a fresh PostgreSQL database and a flushed Redis DB; the CDD-CESM dev
folder is registered first (the images have *arrived*: rows + stored files, status pending),
then the clock starts, the Celery work queue sends the embed batches, and the clock stops when
the last image is `indexed` (in the FAISS index: searchable). Workers are separate
`mammosearch worker` processes (prefork, concurrency 1) consuming `embed`, plus one dedicated
`index` worker (concurrency 1, the one-writer-per-space deployment). Each worker loads its
backbone on its first task; a warm-up batch is run before the clock starts so that load is
not counted.

    PYTHONPATH=platform:. .venv/bin/python bench/bench_ingest_throughput.py \
        --workers 1,2 --backbone efficientnet-lite0 --limit 0

Prints one line per worker count and the ratio of the last to the first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import redis

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "platform"), str(REPO_ROOT)]

from bench.processes import start_worker, stop_worker, wait_until, worker_env  # noqa: E402
from mammosearch.config import settings_from_env  # noqa: E402
from mammosearch.db import migrate  # noqa: E402
from mammosearch.db.models import Image, ImageStatus  # noqa: E402
from mammosearch.db.session import clear_engines, session_scope  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "cdd-cesm-dev"


def _counts(database_url: str) -> dict[str, int]:
    from sqlalchemy import func, select

    with session_scope(database_url) as session:
        rows = session.execute(select(Image.status, func.count()).group_by(Image.status)).all()
    return {str(status): count for status, count in rows}


def _register(database_url: str, data: Path, limit: int) -> int:
    """The arrival: rows + stored files, status pending (no dispatch)."""
    from sqlalchemy import delete, select

    from mammosearch.ingest.cdd_cesm import import_cdd_cesm

    settings = settings_from_env()
    with session_scope(database_url) as session:
        import_cdd_cesm(session, data, settings, progress=False)
    if limit:
        with session_scope(database_url) as session:
            extra = session.scalars(select(Image.id).order_by(Image.id).offset(limit)).all()
            if extra:  # keep the first `limit` images pending; the rest are out of the run
                session.execute(delete(Image).where(Image.id.in_(extra)))
    return sum(_counts(database_url).values())


def run_once(workers: int, args: argparse.Namespace, admin_dsn: str) -> dict[str, float]:
    db_name = f"msbench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    database_url = f"{admin_dsn.rsplit('/', 1)[0]}/{db_name}".replace(
        "postgresql://", "postgresql+psycopg://", 1
    )
    redis.Redis.from_url(args.redis_url).flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="msbench-"))
    env = worker_env(
        database_url,
        tmp / "data",
        args.redis_url,
        MAMMOSEARCH_BACKBONE=args.backbone,
        MAMMOSEARCH_EMBED_BATCH_SIZE=str(args.batch_size),
        OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
    )
    os.environ.update(
        {k: v for k, v in env.items() if k.startswith(("MAMMOSEARCH_", "CELERY_", "DATABASE_URL"))}
    )
    processes = []
    try:
        migrate.upgrade(database_url)
        images = _register(database_url, args.data, args.limit)
        processes.append(start_worker(env, tmp / "index.log", queues="index"))
        processes += [
            start_worker(env, tmp / f"embed-{n}.log", queues="embed") for n in range(workers)
        ]
        settings = settings_from_env()
        from workers.enqueue import CeleryWorkQueue, enqueue_pending

        # Warm-up: one single-image batch per worker loads each backbone off the clock.
        with session_scope(database_url) as session:
            from sqlalchemy import select

            first_ids = session.scalars(select(Image.id).order_by(Image.id).limit(workers)).all()
        for image_id in first_ids:
            enqueue_pending(settings, image_ids=[image_id], batch_size=1)
        wait_until(
            lambda: _counts(database_url).get(ImageStatus.INDEXED, 0) >= len(first_ids),
            timeout_s=600,
            what="warm-up",
        )
        pending = images - len(first_ids)
        started = time.perf_counter()
        CeleryWorkQueue(settings).enqueue_embedding()
        wait_until(
            lambda: _counts(database_url).get(ImageStatus.INDEXED, 0) == images,
            timeout_s=3600,
            interval_s=0.25,
            what=f"{images} images indexed",
        )
        elapsed_s = time.perf_counter() - started
    finally:
        for process in processes:
            stop_worker(process)
        clear_engines()
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    return {
        "workers": workers,
        "images": pending,
        "seconds": round(elapsed_s, 2),
        "images_per_s": round(pending / elapsed_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1,2", help="Comma-separated embed worker counts.")
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="Torch threads per worker.")
    parser.add_argument("--limit", type=int, default=0, help="Images to use (0: all).")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON.")
    args = parser.parse_args()
    if not (args.data / "Radiology manual annotations.xlsx").exists():
        sys.exit(f"{args.data}: CDD-CESM dev data not found (--data)")
    results = []
    for workers in [int(n) for n in args.workers.split(",")]:
        result = run_once(workers, args, args.postgres)
        results.append(result)
        print(json.dumps(result), flush=True)
    if len(results) > 1:
        ratio = results[-1]["images_per_s"] / results[0]["images_per_s"]
        print(
            f"throughput ratio {results[-1]['workers']} vs {results[0]['workers']} workers: "
            f"{ratio:.2f}x (cores: {os.cpu_count()}, torch threads per worker: {args.threads})"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
