"""How long the command line takes to start, as ratios to a bare `import click, sqlalchemy`.

    PYTHONPATH=platform:. .venv/bin/python bench/bench_cli_start.py [--runs 7]

Each command runs --runs times in a fresh interpreter on a throw-away SQLite archive (a
temporary data dir, migrated once by `db upgrade` before timing). Prints, per command, the
median wall time and the median CPU time (user + sys of the child: steadier than wall time on
a loaded machine) and both as ratios to the bare imports. The target (issue 33): `--help` and
`status` within 3x.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from mammosearch.cli import main; main()"]
BARE = [sys.executable, "-c", "import click, sqlalchemy"]
COMMANDS = {
    "--help": ["--help"],
    "status": ["status"],
    "users list": ["users", "list"],
    "db upgrade": ["db", "upgrade"],
    "search --help": ["search", "--help"],
}
TARGET_RATIO = 3.0
TARGETS = ("--help", "status")


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, cpu s) of one run; fails loudly when the command fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[3:]) or argv}: exit {done.returncode}\n{done.stderr}")
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall_s, cpu_s


def _medians(argv: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    samples = [_timed(argv, env) for _ in range(runs)]
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as data_dir:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "platform"), str(REPO_ROOT)]),
            "MAMMOSEARCH_DATA_DIR": data_dir,
            "DATABASE_URL": f"sqlite:///{data_dir}/archive.db",
        }
        env.pop("CELERY_BROKER_URL", None)
        _timed([*CLI, "db", "upgrade"], env)  # the archive exists before anything is timed
        bare_wall_s, bare_cpu_s = _medians(BARE, env, args.runs)
        rows = {}
        for name, command_args in COMMANDS.items():
            wall_s, cpu_s = _medians([*CLI, *command_args], env, args.runs)
            rows[name] = {
                "wall_s": round(wall_s, 3),
                "cpu_s": round(cpu_s, 3),
                "wall_ratio": round(wall_s / bare_wall_s, 2),
                "cpu_ratio": round(cpu_s / bare_cpu_s, 2),
            }
    print(json.dumps({
        "bare": {"wall_s": round(bare_wall_s, 3), "cpu_s": round(bare_cpu_s, 3)},
        "commands": rows,
        "target": f"{', '.join(TARGETS)} within {TARGET_RATIO}x of the bare imports",
        "met": all(rows[name]["cpu_ratio"] <= TARGET_RATIO for name in TARGETS),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
