"""Latency of POST /api/v1/search over HTTP against a running server: by image id and by upload.

    mammosearch users token USER          # a bearer token
    python bench/bench_http_search.py --url http://127.0.0.1:5000 --token TOKEN \
        --upload some.jpg --requests 50 --k 10

Prints client-side p50/p95/max in ms per mode and the server's mean stage timings (embed,
index, join, total) from the responses' `timing_ms`. Image ids default to the first 50 the
server can find (ids 1..); pass --image-ids to choose.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests


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

    def timed(number: int) -> tuple[float, dict[str, float]]:
        started = time.perf_counter()
        response = send(number)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"search failed ({response.status_code}): {response.text[:300]}")
        return elapsed_ms, response.json()["timing_ms"]

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        outcomes = list(pool.map(timed, range(requests_count)))
    summary = summarise([wall for wall, _ in outcomes], [stages for _, stages in outcomes])
    summary["clients"] = clients
    summary["requests_per_s"] = round(requests_count / (time.perf_counter() - started), 1)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000")
    parser.add_argument("--token", required=True, help="API token (mammosearch users token USER)")
    parser.add_argument("--upload", type=Path, help="query image (JPEG/PNG/DICOM) to upload")
    parser.add_argument("--image-ids", default="", help="comma-separated archived ids to query")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--metric", default="cosine")
    parser.add_argument("--clients", type=int, default=1, help="concurrent users")
    args = parser.parse_args()

    local = threading.local()

    def session() -> requests.Session:
        """One HTTP connection per simulated user (thread)."""
        if not hasattr(local, "http"):
            local.http = requests.Session()
            local.http.headers["Authorization"] = f"Bearer {args.token}"
        return local.http

    endpoint = f"{args.url.rstrip('/')}/api/v1/search"
    image_ids = [int(i) for i in args.image_ids.split(",") if i.strip()] or list(range(1, 51))
    results: dict[str, Any] = {"url": args.url, "k": args.k, "metric": args.metric}

    def by_id(number: int) -> requests.Response:
        body = {"image_id": image_ids[number % len(image_ids)], "k": args.k, "metric": args.metric}
        return session().post(endpoint, json=body, timeout=60)

    results["by_image_id"] = run_mode(by_id, args.requests, args.warmup, args.clients)
    if args.upload:
        content = args.upload.read_bytes()

        def by_upload(_number: int) -> requests.Response:
            return session().post(
                endpoint,
                files={"image": (args.upload.name, content)},
                data={"k": str(args.k), "metric": args.metric},
                timeout=60,
            )

        results["by_upload"] = run_mode(by_upload, args.requests, args.warmup, args.clients)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
