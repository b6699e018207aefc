"""A real `mammosearch serve` on a free port, for browser tests: started, waited for, stopped."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.processes import free_port, wait_until_live
from mammosearch.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
LIVE_TIMEOUT_S = 60


def server_environment(settings: Settings) -> dict[str, str]:
    """The environment of a server (or a CLI) on `settings`' database and data, no broker."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "platform"), str(REPO_ROOT)]),
        "DATABASE_URL": settings.database_url,
        "MAMMOSEARCH_DATA_DIR": str(settings.data_dir),
        "MAMMOSEARCH_BACKBONE": settings.backbone,
        "MAMMOSEARCH_EMBED_RUNTIME": settings.embed_runtime,
        "MAMMOSEARCH_SECRET_KEY": "e2e-secret",
    }
    env.pop("CELERY_BROKER_URL", None)
    return env


@contextmanager
def serving(settings: Settings, log_dir: Path) -> Iterator[str]:
    """`mammosearch serve` (no broker) over `settings`' database and data; yields its URL."""
    port = free_port()
    env = server_environment(settings)
    command = [
        sys.executable,
        "-c",
        "from mammosearch.cli import main; main()",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    log_path = log_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_live(base_url, process, timeout_s=LIVE_TIMEOUT_S)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        if process.returncode not in (0, -15):
            print(log_path.read_text(errors="replace")[-3000:])
