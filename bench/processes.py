"""The product's own processes (server, workers, beat, CLI): started, waited for, stopped.

The benches drive them under load and the integration and browser tests check them; the
helpers live here, not in tests/, so that every bench runs without the tests package.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import redis

REPO_ROOT = Path(__file__).resolve().parents[1]
MAMMOSEARCH = Path(sys.executable).parent / "mammosearch"


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_live(base_url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Poll /healthz until it answers 200 (retrying until the deadline) or the server exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mammosearch serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{base_url}/healthz did not answer within {timeout_s} s")


def worker_env(database_url: str, data_dir: Path, broker_url: str, **extra: str) -> dict[str, str]:
    """The environment of a worker (and of the CLI) on this database, data dir and broker."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MAMMOSEARCH_", "CELERY_", "DATABASE_URL", "REDIS_URL"))
    }
    env.update(
        DATABASE_URL=database_url,
        MAMMOSEARCH_DATA_DIR=str(data_dir),
        CELERY_BROKER_URL=broker_url,
        CELERY_RESULT_BACKEND=broker_url,
        MAMMOSEARCH_BACKBONE=os.environ.get("MAMMOSEARCH_BACKBONE", "efficientnet-lite0"),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "platform"), str(REPO_ROOT)]),
    )
    env.update(extra)
    return env


def start_worker(
    env: dict[str, str], log_path: Path, queues: str = "ingest,embed,index", concurrency: int = 1
) -> subprocess.Popen[bytes]:
    """`mammosearch worker` (prefork) in its own process group, logging to `log_path`."""
    log = log_path.open("ab")
    command = [str(MAMMOSEARCH), "worker", "--queues", queues, "--concurrency", str(concurrency)]
    return subprocess.Popen(
        command,
        env=env,
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_beat(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`mammosearch beat`, as the compose stack runs it, in its own process group."""
    return subprocess.Popen(
        [str(MAMMOSEARCH), "beat"],
        env=env,
        cwd=REPO_ROOT,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_worker(
    worker: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait_s: float = 30
) -> None:
    """Signal the worker's whole process group (the pool children too) and reap it."""
    if worker.poll() is None:
        try:
            os.killpg(worker.pid, sig)
        except ProcessLookupError:
            pass
    try:
        worker.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)


def run_cli(env: dict[str, str], *args: str, timeout_s: float = 300) -> str:
    """Run `mammosearch ARGS` with `env`; returns stdout, raises with the output on failure."""
    done = subprocess.run(
        [str(MAMMOSEARCH), *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if done.returncode != 0:
        raise AssertionError(f"mammosearch {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.5, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what or predicate}")


def flush_redis(url: str) -> None:
    redis.Redis.from_url(url).flushdb()
