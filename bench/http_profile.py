"""Where a search request's server time goes: cProfile over the app's own request handling.

Runs in a process with an archive's environment (bench_http_search.py --archive N
--profile starts it): builds the app as gunicorn does, sends `count` searches by image id
through Flask's test client (no sockets, one thread), and prints the functions with the
most CPU time of their own, grouped by the product's stages (auth, audit, search, SQL, JSON).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time

STAGES = {
    "auth (token lookup, user load)": ("web/auth.py", "web/access.py", "flask_login"),
    "audit insert + commit": ("mammosearch/access/audit.py",),
    "index search": ("mammosearch/index/",),
    "SQL (SQLAlchemy + psycopg)": ("sqlalchemy/", "psycopg/"),
    "JSON": ("json/", "flask/json"),
    "logging": ("logging/", "mammosearch/logs.py"),
    "Flask + Werkzeug": ("flask/", "werkzeug/"),
    "numpy + FAISS": ("numpy/", "faiss/"),
}


def profile(token: str, count: int = 300) -> None:
    from web import create_app

    app = create_app()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}

    def one(number: int) -> None:
        response = client.post(
            "/api/v1/search", json={"image_id": 1 + number % 50, "k": 10}, headers=headers
        )
        assert response.status_code == 200, response.get_data(as_text=True)[:200]

    for number in range(20):  # warm: embedder, index, connection pool
        one(number)
    began = time.process_time()
    for number in range(count):
        one(number)
    plain_ms = (time.process_time() - began) * 1000 / count
    print(
        f"in-process CPU per request, no profiler: {plain_ms:.2f} ms ({count} requests,"
        " Flask test client: no sockets, no gunicorn)"
    )
    began = time.process_time()
    profiler = cProfile.Profile(time.process_time)  # CPU time: what a request costs the host
    profiler.enable()
    for number in range(count):
        one(number)
    profiler.disable()
    cpu_ms = (time.process_time() - began) * 1000 / count
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream).sort_stats("tottime")
    stats.print_stats(40)
    print(f"in-process CPU per request under the profiler: {cpu_ms:.2f} ms ({count} requests)")
    per_file: dict[str, float] = {}
    for (file_name, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for stage, parts in STAGES.items():
            if any(part in file_name for part in parts):
                per_file[stage] = per_file.get(stage, 0.0) + tottime
                break
    own = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    print("own time by stage (share of all profiled time):")
    for stage, seconds in sorted(per_file.items(), key=lambda item: -item[1]):
        print(f"- {stage}: {seconds * 1000 / count:.2f} ms/request ({seconds / own:.0%})")
    print(stream.getvalue()[:6000])


if __name__ == "__main__":
    profile(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 300)
