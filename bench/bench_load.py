"""Load: concurrent clients searching a real `mammosearch serve` while images are ingested.

    PYTHONPATH=platform:. .venv/bin/python bench/bench_load.py \
        [--data ../shared/data/cdd-cesm-dev] [--clients 16] [--duration-s 30] \
        [--seed-images 60] [--arrivals 120] [--upload-share 0.3] [--threads 8]

A fresh SQLite data dir under a temporary folder (removed afterwards unless --keep): the
first --seed-images of the dev folder are imported (`mammosearch ingest cdd-cesm`, through
symlinks: nothing is copied), then the server starts (gunicorn, as `mammosearch serve` runs
it) and, while --clients threads search by archived image id and by upload for
--duration-s, the next --arrivals images are imported by a second `mammosearch ingest
cdd-cesm` (the load goes on until that import has finished, unless --no-until-ingested).
Prints JSON: per mode requests, errors, p50/p95/max latency and throughput; when arrivals
were indexed and first found by a search; and, at the end, that they are searchable (each
sampled arrival, uploaded, finds itself first).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "platform"), str(REPO_ROOT)]
from bench.processes import free_port, wait_until_live  # noqa: E402

DEV_DATA = REPO_ROOT.parent / "shared" / "data" / "cdd-cesm-dev"
SHEET = "Radiology manual annotations.xlsx"
IMAGES = "Subtracted images"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def linked_folder(folder: Path, data: Path, names: list[str]) -> Path:
    """A CDD-CESM folder of symlinks: the sheet and `names` from the dev images."""
    (folder / IMAGES).mkdir(parents=True)
    (folder / SHEET).symlink_to(data / SHEET)
    for name in names:
        (folder / IMAGES / name).symlink_to(data / IMAGES / name)
    return folder


def environment(root: Path, database_url: str | None = None) -> dict[str, str]:
    """A server or CLI on the data dir under `root` and `database_url` (default: a SQLite
    file there); no broker, no Redis."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "platform"), str(REPO_ROOT)]),
        "DATABASE_URL": database_url or f"sqlite:///{root / 'mammosearch.sqlite3'}",
        "MAMMOSEARCH_DATA_DIR": str(root / "data"),
        "MAMMOSEARCH_BACKBONE": "efficientnet-lite0",
        "MAMMOSEARCH_SECRET_KEY": "bench-load-secret",
    }
    for name in ("CELERY_BROKER_URL", "REDIS_URL"):
        env.pop(name, None)
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from mammosearch.cli import main; main()", *args]


def admin_token(env: dict[str, str]) -> str:
    """A bearer token of a new admin `loadtest` (admin: /api/v1/status too)."""
    code = (
        "from mammosearch.db.session import make_session_factory\n"
        "from mammosearch.access.users import create_api_token, create_user\n"
        "import os\n"
        "session = make_session_factory(os.environ['DATABASE_URL'])()\n"
        "user = create_user(session, 'loadtest', 'load test password 1', 'admin')\n"
        "print(create_api_token(session, user)); session.commit()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip().splitlines()[-1]


def image_ids(root: Path, names: list[str]) -> dict[str, int]:
    """Indexed images among `names` (file names) -> their ids, read from the SQLite file."""
    with sqlite3.connect(f"file:{root / 'mammosearch.sqlite3'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT source_file_name, id FROM images WHERE status = 'indexed'")
        wanted = set(names)
        return {name: image_id for name, image_id in rows if name in wanted}


def watch_arrivals(
    root: Path,
    base_url: str,
    token: str,
    data: Path,
    names: list[str],
    stop: threading.Event,
    started: float,
    seen: dict[str, Any],
) -> None:
    """Every 2 s during the load: how many arrivals are indexed, and when the first indexed
    one was found by a search (uploaded, it comes back first)."""
    while not stop.wait(2.0):
        indexed = image_ids(root, names)
        if len(indexed) != (seen["indexed_at_s"][-1][1] if seen["indexed_at_s"] else 0):
            seen["indexed_at_s"].append([round(time.monotonic() - started, 1), len(indexed)])
        if indexed and seen["first_searchable_s"] is None:
            name = max(indexed, key=indexed.get)
            if finds_itself(base_url, token, data / IMAGES / name, indexed[name]):
                seen["first_searchable_s"] = round(time.monotonic() - started, 1)


class Recorder:
    """Every request's mode, outcome and latency, from all client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency_ms: dict[str, list[float]] = {"by_id": [], "by_upload": []}
        self.errors: dict[str, Counter[str]] = {"by_id": Counter(), "by_upload": Counter()}

    def add(self, mode: str, latency_ms: float, error: str | None) -> None:
        with self.lock:
            self.latency_ms[mode].append(latency_ms)
            if error:
                self.errors[mode][error] += 1

    def summary(self, seconds: float) -> dict[str, Any]:
        modes = {}
        every = self.latency_ms["by_id"] + self.latency_ms["by_upload"]
        for mode, values in {**self.latency_ms, "all": every}.items():
            errors = (
                self.errors["by_id"] + self.errors["by_upload"]
                if mode == "all"
                else self.errors[mode]
            )
            modes[mode] = {
                "requests": len(values),
                "errors": sum(errors.values()),
                "error_kinds": dict(errors.most_common(5)),
                "p50_ms": round(percentile(values, 0.50), 1) if values else None,
                "p95_ms": round(percentile(values, 0.95), 1) if values else None,
                "max_ms": round(max(values), 1) if values else None,
                "per_s": round(len(values) / seconds, 1),
            }
        return modes


def client_loop(
    base_url: str,
    token: str,
    stop: threading.Event,
    seed_ids: list[int],
    uploads: list[Path],
    upload_share: float,
    client_seed: int,
    recorder: Recorder,
) -> None:
    """One user: search by an archived id or upload a dev image, back to back, until the end."""
    rng = random.Random(client_seed)
    headers = {"Authorization": f"Bearer {token}"}
    contents = {path: path.read_bytes() for path in uploads}
    with requests.Session() as session:
        while not stop.is_set():
            mode = "by_upload" if rng.random() < upload_share else "by_id"
            started = time.perf_counter()
            error = None
            try:
                if mode == "by_id":
                    response = session.post(
                        f"{base_url}/api/v1/search",
                        headers=headers,
                        timeout=60,
                        json={"image_id": rng.choice(seed_ids), "k": 10},
                    )
                else:
                    path = rng.choice(uploads)
                    response = session.post(
                        f"{base_url}/api/v1/search",
                        headers=headers,
                        timeout=60,
                        data={"k": "10"},
                        files={"image": (path.name, contents[path])},
                    )
                if response.status_code != 200:
                    error = f"HTTP {response.status_code}: {response.text[:80]}"
            except requests.RequestException as exc:
                error = type(exc).__name__
            recorder.add(mode, (time.perf_counter() - started) * 1000, error)


def finds_itself(base_url: str, token: str, path: Path, image_id: int) -> bool:
    """The arrival, uploaded, is its own nearest neighbour: it is in the index."""
    response = requests.post(
        f"{base_url}/api/v1/search",
        headers={"Authorization": f"Bearer {token}"},
        data={"k": "1"},
        files={"image": (path.name, path.read_bytes())},
        timeout=60,
    )
    results = response.json().get("results", []) if response.status_code == 200 else []
    return bool(results) and results[0]["image_id"] == image_id


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    names = sorted(p.name for p in (args.data / IMAGES).glob("*.jpg"))
    seed_names = names[: args.seed_images]
    arrival_names = names[args.seed_images : args.seed_images + args.arrivals]
    env = environment(root)
    log = (root / "logs.txt").open("wb")
    started = time.perf_counter()
    subprocess.run(
        cli(
            "ingest",
            "cdd-cesm",
            str(linked_folder(root / "seed", args.data, seed_names)),
            "--no-progress",
        ),
        env=env,
        check=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    seed_ingest_s = time.perf_counter() - started
    token = admin_token(env)
    seed_ids = sorted(image_ids(root, seed_names).values())
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        cli("serve", "--host", "127.0.0.1", "--port", str(port), "--threads", str(args.threads)),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    ingest: subprocess.Popen[bytes] | None = None
    try:
        wait_until_live(base_url, server, timeout_s=120)
        uploads = [args.data / IMAGES / name for name in seed_names[:20]]
        finds_itself(base_url, token, uploads[0], seed_ids[0])  # warm-up: loads the backbone
        arrivals = linked_folder(root / "arrivals", args.data, arrival_names)
        ingest_started = time.perf_counter()
        ingest = subprocess.Popen(
            cli("ingest", "cdd-cesm", str(arrivals), "--no-progress"),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        recorder = Recorder()
        load_started = time.monotonic()
        seen: dict[str, Any] = {"indexed_at_s": [], "first_searchable_s": None}
        stop, watching = threading.Event(), threading.Event()
        watcher = threading.Thread(
            target=watch_arrivals,
            args=(root, base_url, token, args.data, arrival_names, watching, load_started, seen),
            daemon=True,
        )
        watcher.start()
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            futures = [
                pool.submit(
                    client_loop,
                    base_url,
                    token,
                    stop,
                    seed_ids,
                    uploads,
                    args.upload_share,
                    number,
                    recorder,
                )
                for number in range(args.clients)
            ]
            time.sleep(args.duration_s)
            if args.until_ingested:  # the load goes on until the arrivals are in, and a bit
                ingest.wait(timeout=args.ingest_timeout_s)
                ingest_s = time.perf_counter() - ingest_started
                time.sleep(5.0)
            stop.set()
            for future in futures:
                future.result()
        load_s = time.monotonic() - load_started
        watching.set()
        watcher.join()
        indexed_during_load = len(image_ids(root, arrival_names))
        if not args.until_ingested:
            ingest.wait(timeout=args.ingest_timeout_s)
            ingest_s = time.perf_counter() - ingest_started
        arrived = image_ids(root, arrival_names)
        sample = random.Random(0).sample(sorted(arrived), min(args.check_arrivals, len(arrived)))
        found = sum(
            finds_itself(base_url, token, args.data / IMAGES / name, arrived[name])
            for name in sample
        )
        return {
            "clients": args.clients,
            "duration_s": round(load_s, 1),
            "server_threads": args.threads,
            "seed_images": len(seed_ids),
            "seed_ingest_s": round(seed_ingest_s, 1),
            "search": recorder.summary(load_s),
            "arrivals": len(arrival_names),
            "arrivals_indexed_during_load": indexed_during_load,
            "arrivals_indexed_at_s": seen["indexed_at_s"],
            "first_arrival_searchable_at_s": seen["first_searchable_s"],
            "arrivals_indexed_at_end": len(arrived),
            "arrivals_ingest_s": round(ingest_s, 1),
            "arrivals_ingest_rc": ingest.returncode,
            "arrivals_searchable": f"{found}/{len(sample)} sampled arrivals find themselves first",
            "server_alive": server.poll() is None,
        }
    finally:
        for process in (ingest, server):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEV_DATA, help="a CDD-CESM dev folder")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--seed-images", type=int, default=60, help="imported before the load")
    parser.add_argument("--arrivals", type=int, default=120, help="imported during the load")
    parser.add_argument("--upload-share", type=float, default=0.3, help="searches by upload")
    parser.add_argument("--threads", type=int, default=8, help="the server's request threads")
    parser.add_argument("--check-arrivals", type=int, default=10)
    parser.add_argument("--ingest-timeout-s", type=float, default=900.0)
    parser.add_argument(
        "--until-ingested",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="go on past --duration-s until the arrivals' import has finished (+5 s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args()
    if not (args.data / SHEET).is_file():
        sys.exit(f"{args.data}: no {SHEET!r} (pass --data, a CDD-CESM folder)")
    root = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        print(json.dumps(run(args, root), indent=2))
    except BaseException:
        print(f"logs: {root / 'logs.txt'}", file=sys.stderr)
        args.keep = True
        raise
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
