"""Latency of POST /api/v1/search over HTTP: by image id and by upload.

Against a running server:

    mammosearch users token USER          # a bearer token
    python bench/bench_http_search.py --url http://127.0.0.1:5000 --token TOKEN \
        --upload some.jpg --requests 50 --k 10

Or on an archive of N images it builds (bench/http_archive.py: the dev images imported into
a fresh PostgreSQL database, grown with synthetic rows and vectors; the index built by the
product) and serves with gunicorn as deployed (deploy/gunicorn.conf.py, GUNICORN_* as set):

    PYTHONPATH=platform:. python bench/bench_http_search.py --archive 100000 --clients 16

Prints client-side p50/p95/max in ms per mode, requests per second, the server's mean stage
timings (embed, index, join, total) from the responses' `timing_ms` and, with --archive,
the server's CPU time per request (user + system of gunicorn and its workers over the
requests of that mode). Image ids default to the first 50 the server can find (ids 1..);
pass --image-ids to choose. With --baseline REF both codes are served at once, each mode
measured in --blocks alternating blocks (default 8; 1: one code after the other), and the
median of the per-block CPU ratios is printed: on a shared machine, runs minutes apart
differed by up to 1.5x. The baseline serves the same database from a data directory of its
own, whose index its own `mammosearch index rebuild` builds from the stored vectors: an older
commit cannot read a newer index format, and is measured with the index it would have built.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "platform"), str(REPO_ROOT)]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summarise(wall_ms: list[float], stage_ms: list[dict[str, float]]) -> dict[str, Any]:
    stages = sorted({stage for timing in stage_ms for stage in timing})
    return {
        "requests": len(wall_ms),
        "p50_ms": round(percentile(wall_ms, 0.50), 1),
        "p95_ms": round(percentile(wall_ms, 0.95), 1),
        "max_ms": round(max(wall_ms), 1),
        "server_mean_ms": {
            stage: round(statistics.fmean(t.get(stage, 0.0) for t in stage_ms), 2)
            for stage in stages
        },
    }


def run_mode(send, requests_count: int, warmup: int, clients: int = 1) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Time `requests_count` requests, sent by `clients` concurrent users."""
    for _ in range(warmup):
        send(0).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        outcomes = list(
            pool.map(lambda number: _timed(lambda: send(number)), range(requests_count))
        )
    summary = summarise([wall for wall, _ in outcomes], [stages for _, stages in outcomes])
    summary["clients"] = clients
    summary["requests_per_s"] = round(requests_count / (time.perf_counter() - started), 1)
    return summary


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def with_server_cpu(pid: int | None, run):  # type: ignore[no-untyped-def]
    """run() -> its summary, plus the server's CPU ms per request while it ran."""
    before = process_tree_cpu_s(pid) if pid else 0.0
    summary = run()
    if pid:
        used = process_tree_cpu_s(pid) - before
        summary["server_cpu_ms_per_request"] = round(used * 1000 / summary["requests"], 2)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000")
    parser.add_argument("--token", help="API token (mammosearch users token USER)")
    parser.add_argument("--archive", type=int, help="build and serve an archive of N images")
    parser.add_argument("--baseline", help="with --archive: also measure this git commit first")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="with --archive: also profile requests in-process (http_profile.py)",
    )
    parser.add_argument(
        "--dev",
        type=Path,
        default=Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cdd-cesm-dev",
    )
    parser.add_argument("--upload", type=Path, help="query image (JPEG/PNG/DICOM) to upload")
    parser.add_argument("--image-ids", default="", help="comma-separated archived ids to query")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--metric", default="cosine")
    parser.add_argument("--clients", type=int, default=1, help="concurrent users")
    parser.add_argument(
        "--blocks",
        type=int,
        default=8,
        help="with --baseline: serve both codes at once and alternate this"
        " many blocks of requests between them (1: one after the other)",
    )
    args = parser.parse_args()
    if args.archive:
        run_on_archive(args)
        return
    if not args.token:
        parser.error("--token is required without --archive")
    measure(args, None, {})


def run_on_archive(args: argparse.Namespace) -> None:
    """Build the archive once; serve and measure it with this checkout and, with
    --baseline REF, first with that commit (a git worktree) on the same archive."""
    with built_archive(args) as (env, token, log, built_s):
        args.token = token
        args.upload = next((args.dev / "Subtracted images").glob("*.jpg"))
        args.image_ids = ",".join(str(i) for i in range(1, 51))
        runs: dict[str, dict[str, Any]] = {}
        if args.baseline and args.blocks > 1:
            with code_versions(args.baseline) as versions, ExitStack() as servers:
                served = [
                    (
                        label,
                        *servers.enter_context(
                            gunicorn_server(environment_for(env, label, code, log), code, log)
                        ),
                    )
                    for label, code in versions
                ]
                measure_interleaved(args, served)
            if args.profile:
                subprocess.run(
                    [sys.executable, "bench/http_profile.py", token],
                    env={**os.environ, **env},
                    cwd=REPO_ROOT,
                    check=True,
                )
            return
        with code_versions(args.baseline) as versions:
            for label, code in versions:
                code_env = environment_for(env, label, code, log)
                with gunicorn_server(code_env, code, log) as (url, pid):
                    args.url = url
                    runs[label] = measure(
                        args,
                        pid,
                        {
                            "code": label,
                            "archive_images": args.archive,
                            "build_s": built_s,
                        },
                    )
        if args.baseline:
            base, now = runs[f"baseline {args.baseline}"], runs["this checkout"]
            for mode in ("by_image_id", "by_upload"):
                if mode in base and mode in now:
                    before, after = base[mode], now[mode]
                    speed = after["requests_per_s"] / before["requests_per_s"]
                    cpu_before = before["server_cpu_ms_per_request"]
                    cpu_after = after["server_cpu_ms_per_request"]
                    ratio = cpu_after / cpu_before
                    print(
                        f"{mode}: throughput x{speed:.2f} of the baseline's, server CPU per"
                        f" request {cpu_before} -> {cpu_after} ms (x{ratio:.2f})"
                    )
        if args.profile:
            subprocess.run(
                [sys.executable, "bench/http_profile.py", token],
                env={**os.environ, **env},
                cwd=REPO_ROOT,
                check=True,
            )


def measure_interleaved(
    args: argparse.Namespace, servers: list[tuple[str, str, int]]
) -> dict[str, dict[str, Any]]:
    """Both codes served at once, each mode measured in `args.blocks` alternating blocks (the
    order flipped every block), so a slow spell of a shared machine falls on both alike; per
    code the summary over all its blocks, and the median of the per-block CPU ratios."""
    local = threading.local()

    def session(url: str) -> requests.Session:
        sessions = local.__dict__.setdefault("sessions", {})
        if url not in sessions:
            sessions[url] = requests.Session()
            sessions[url].headers["Authorization"] = f"Bearer {args.token}"
        return sessions[url]

    image_ids = [int(i) for i in args.image_ids.split(",") if i.strip()] or list(range(1, 51))
    content = args.upload.read_bytes()

    def by_id(url: str, number: int) -> requests.Response:
        body = {"image_id": image_ids[number % len(image_ids)], "k": args.k, "metric": args.metric}
        return session(url).post(f"{url}/api/v1/search", json=body, timeout=60)

    def by_upload(url: str, _number: int) -> requests.Response:
        return session(url).post(
            f"{url}/api/v1/search",
            files={"image": (args.upload.name, content)},
            data={"k": str(args.k), "metric": args.metric},
            timeout=60,
        )

    block = max(1, args.requests // args.blocks)
    report: dict[str, dict[str, Any]] = {}
    for mode, send in (("by_image_id", by_id), ("by_upload", by_upload)):
        for _label, url, _pid in servers:
            for _ in range(args.warmup):
                send(url, 0).raise_for_status()
        totals = {
            label: {"wall": [], "stages": [], "cpu_s": 0.0, "seconds": 0.0}
            for label, _, _ in servers
        }
        ratios = []
        for number in range(args.blocks):
            order = servers if number % 2 == 0 else servers[::-1]
            cpu = {}
            for label, url, pid in order:
                before, began = process_tree_cpu_s(pid), time.perf_counter()
                with ThreadPoolExecutor(max_workers=args.clients) as pool:
                    outcomes = list(
                        pool.map(
                            lambda n, url=url, send=send: _timed(lambda: send(url, n)), range(block)
                        )
                    )
                totals[label]["seconds"] += time.perf_counter() - began
                cpu[label] = process_tree_cpu_s(pid) - before
                totals[label]["cpu_s"] += cpu[label]
                totals[label]["wall"] += [wall for wall, _ in outcomes]
                totals[label]["stages"] += [stages for _, stages in outcomes]
            ratios.append(cpu[servers[-1][0]] / cpu[servers[0][0]])
        for label, total in totals.items():
            summary = summarise(total["wall"], total["stages"])
            summary["clients"] = args.clients
            summary["requests_per_s"] = round(len(total["wall"]) / total["seconds"], 1)
            summary["server_cpu_ms_per_request"] = round(
                total["cpu_s"] * 1000 / len(total["wall"]), 2
            )
            report.setdefault(label, {})[mode] = summary
        base, now = (report[label][mode] for label, _, _ in servers)
        print(
            f"{mode}: {args.blocks} alternating blocks of {block} requests;"
            f" server CPU per request {base['server_cpu_ms_per_request']} ->"
            f" {now['server_cpu_ms_per_request']} ms; per-block ratios"
            f" {' '.join(f'{r:.2f}' for r in ratios)} (median x{statistics.median(ratios):.2f});"
            f" throughput x{now['requests_per_s'] / base['requests_per_s']:.2f}",
            flush=True,
        )
    print(json.dumps(report, indent=2), flush=True)
    return report


def _timed(send) -> tuple[float, dict[str, float]]:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    response = send()
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"search failed ({response.status_code}): {response.text[:300]}")
    return elapsed_ms, response.json()["timing_ms"]


@contextmanager
def code_versions(baseline: str | None):  # type: ignore[no-untyped-def]
    """(label, source root) pairs: the baseline commit checked out in a worktree, then this."""
    if not baseline:
        yield [("this checkout", REPO_ROOT)]
        return
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), baseline],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
        )
        try:
            yield [(f"baseline {baseline}", tree), ("this checkout", REPO_ROOT)]
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)],
                cwd=REPO_ROOT,
                check=False,
                capture_output=True,
            )


def environment_for(env: dict[str, str], label: str, code: Path, log) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The server environment for one code: this checkout's as built; a baseline's with a data
    directory beside it whose index the baseline's own CLI rebuilt from the database."""
    if code == REPO_ROOT:
        return env
    data_dir = Path(env["MAMMOSEARCH_DATA_DIR"]).with_name(f"data-{code.name}")
    code_env = {
        **env,
        "MAMMOSEARCH_DATA_DIR": str(data_dir),
        "PYTHONPATH": os.pathsep.join([str(code / "platform"), str(code)]),
    }
    from bench.bench_load import cli

    began = time.perf_counter()
    subprocess.run(
        cli("index", "rebuild"),
        input=b"y\n",
        env=code_env,
        cwd=code,
        check=True,
        stdout=log,
        stderr=log,
    )  # older commits ask before rebuilding
    print(
        f"{label}: its own index rebuilt from the database in {time.perf_counter() - began:.0f} s",
        flush=True,
    )
    return code_env


@contextmanager
def built_archive(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Build the archive in a fresh database; yields (environment, admin token, log, seconds)."""
    from bench.bench_load import admin_token
    from bench.http_archive import build, create_database, drop_database, environment

    name = f"bench_http_{os.getpid()}"
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        env = environment(create_database(name), root)
        log = (root / "log.txt").open("wb")
        try:
            built_s = build(args.archive, args.dev, env, log)
            rounded = {step: round(seconds, 1) for step, seconds in built_s.items()}
            yield env, admin_token(env), log, rounded
        except BaseException:
            log.flush()
            lines = (root / "log.txt").read_text(errors="replace").splitlines()
            print("\n".join(line[:400] for line in lines[-60:]), file=sys.stderr)
            raise
        finally:
            drop_database(name)


@contextmanager
def gunicorn_server(env: dict[str, str], code: Path, log):  # type: ignore[no-untyped-def]
    """gunicorn with deploy/gunicorn.conf.py over the code at `code`; yields (url, pid)."""
    from bench.processes import free_port, wait_until_live

    port = free_port()
    env = {
        **env,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "PYTHONPATH": os.pathsep.join([str(code / "platform"), str(code)]),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "deploy/gunicorn.conf.py",
            "web:create_app()",
        ],
        env=env,
        stdout=log,
        stderr=log,
        cwd=code,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_live(url, server, 120)
        yield url, server.pid
    finally:
        server.terminate()
        server.wait(60)


def measure(args: argparse.Namespace, pid: int | None, results: dict[str, Any]) -> dict[str, Any]:
    local = threading.local()

    def session() -> requests.Session:
        """One HTTP connection per simulated user (thread)."""
        if not hasattr(local, "http"):
            local.http = requests.Session()
            local.http.headers["Authorization"] = f"Bearer {args.token}"
        return local.http

    endpoint = f"{args.url.rstrip('/')}/api/v1/search"
    image_ids = [int(i) for i in args.image_ids.split(",") if i.strip()] or list(range(1, 51))
    results.update({"url": args.url, "k": args.k, "metric": args.metric})

    def by_id(number: int) -> requests.Response:
        body = {"image_id": image_ids[number % len(image_ids)], "k": args.k, "metric": args.metric}
        return session().post(endpoint, json=body, timeout=60)

    results["by_image_id"] = with_server_cpu(
        pid, lambda: run_mode(by_id, args.requests, args.warmup, args.clients)
    )
    if args.upload:
        content = args.upload.read_bytes()

        def by_upload(_number: int) -> requests.Response:
            return session().post(
                endpoint,
                files={"image": (args.upload.name, content)},
                data={"k": str(args.k), "metric": args.metric},
                timeout=60,
            )

        results["by_upload"] = with_server_cpu(
            pid, lambda: run_mode(by_upload, args.requests, args.warmup, args.clients)
        )
    print(json.dumps(results, indent=2), flush=True)
    return results


if __name__ == "__main__":
    main()
