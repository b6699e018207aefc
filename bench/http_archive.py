"""A PostgreSQL archive of N images for HTTP benchmarks: the dev images, grown synthetically.

The dev folder is imported for real (`mammosearch ingest cdd-cesm`: real images, real
efficientnet-lite0 embeddings), then grown to N images: synthetic rows copying the real
rows' metadata (side, view, BIRADS, pathology, image file) under synthetic patients (four
images each), with vectors from a generator fitted to the real embeddings
(realistic_vectors.py), stored in image_embeddings like any other and indexed through the
product's own index (`replace_all`, so the main index is built as a rebuild builds it).
Rows and vectors are synthetic for size only; every search answer joins real-shaped rows.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "platform"), str(REPO_ROOT)]
from bench.bench_load import cli  # noqa: E402  (one CLI launcher for the benches)
from bench.bench_load import environment as load_environment  # noqa: E402

PG_ADMIN = os.environ.get("MAMMOSEARCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
COPIED_COLUMNS = (
    "side",
    "view",
    "modality",
    "width",
    "height",
    "breast_density",
    "birads",
    "birads_raw",
    "findings",
    "tags",
    "pathology",
    "machine",
    "stored_path",
)


def create_database(name: str) -> str:
    """A fresh, empty PostgreSQL database; returns its SQLAlchemy URL."""
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def environment(database_url: str, root: Path) -> dict[str, str]:
    """bench_load's server/CLI environment on this database, with one metric indexed."""
    return {**load_environment(root, database_url), "MAMMOSEARCH_INDEX_METRICS": "cosine"}


def build(count: int, dev: Path, env: dict[str, str], log) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Import the dev folder, then grow the archive to `count` images; seconds per step."""
    seconds = {}
    began = time.perf_counter()
    subprocess.run(cli("db", "upgrade"), env=env, check=True, stdout=log, stderr=log)
    subprocess.run(
        cli("ingest", "cdd-cesm", str(dev), "--no-progress"),
        env=env,
        check=True,
        stdout=log,
        stderr=log,
    )
    seconds["import dev images"] = time.perf_counter() - began
    began = time.perf_counter()
    grow = f"from bench.http_archive import grow; grow({count})"
    subprocess.run(
        [sys.executable, "-c", grow], env=env, check=True, stdout=log, stderr=log, cwd=REPO_ROOT
    )
    seconds["grow rows, vectors and index"] = time.perf_counter() - began
    began = time.perf_counter()
    vacuum_analyze(env["DATABASE_URL"])
    seconds["vacuum analyze"] = time.perf_counter() - began
    return seconds


def vacuum_analyze(database_url: str) -> None:
    """VACUUM ANALYZE the archive, as a DBA does after a bulk load and autovacuum does later:
    a search served straight after 100,000 inserts met tables in no state a live archive is
    in (no planner statistics, no visibility map), and measured that instead."""
    import psycopg

    dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")


def grow(count: int) -> None:
    """Runs in a process with the archive's environment (build() starts it)."""
    from sqlalchemy import insert, select

    from mammosearch.config import get_settings
    from mammosearch.db.models import EmbeddingSpace, Image, ImageEmbedding, Patient
    from mammosearch.db.session import make_session_factory
    from mammosearch.index import open_index

    sys.path.insert(0, str(REPO_ROOT / "bench"))
    from realistic_vectors import Generator

    settings = get_settings()
    session = make_session_factory(settings.database_url)()
    space = session.scalars(select(EmbeddingSpace).where(EmbeddingSpace.active.is_(True))).one()
    rows = session.execute(
        select(Image, ImageEmbedding.vector)
        .join(ImageEmbedding, ImageEmbedding.image_id == Image.id)
        .where(ImageEmbedding.space_id == space.id)
        .order_by(Image.id)
    ).all()
    real_ids = np.array([image.id for image, _ in rows], dtype=np.int64)
    real = np.stack([np.frombuffer(vector, dtype=np.float32) for _, vector in rows])
    extra = count - len(rows)
    if extra <= 0:
        return
    vectors = Generator(real).sample(extra, seed=11)
    patient_ids = session.scalars(
        insert(Patient).returning(Patient.id),
        [{"source": "synthetic", "source_patient_id": f"S{i:07d}"} for i in range(extra // 4 + 1)],
    ).all()
    templates = [image for image, _ in rows]
    new_rows = []
    for i in range(extra):
        template = templates[i % len(templates)]
        new_rows.append(
            {
                **{column: getattr(template, column) for column in COPIED_COLUMNS},
                "patient_id": patient_ids[i // 4],
                "source": "synthetic",
                "source_file_name": f"synthetic-{i:07d}.jpg",
                "sha256": hashlib.sha256(f"synthetic-{i}".encode()).hexdigest(),
                "status": "indexed",
            }
        )
    new_ids = np.array(session.scalars(insert(Image).returning(Image.id), new_rows).all())
    for start in range(0, extra, 5000):
        session.execute(
            insert(ImageEmbedding),
            [
                {
                    "image_id": int(image_id),
                    "space_id": space.id,
                    "vector": vector.tobytes(),
                    "indexed": True,
                }
                for image_id, vector in zip(
                    new_ids[start : start + 5000], vectors[start : start + 5000], strict=True
                )
            ],
        )
    session.commit()
    all_ids = np.concatenate([real_ids, new_ids])
    all_vectors = np.concatenate([real, vectors])
    for metric in settings.index_metrics:
        open_index(settings, space, metric).replace_all(all_ids, all_vectors)
    print(f"archive grown to {len(all_ids)} images", flush=True)
