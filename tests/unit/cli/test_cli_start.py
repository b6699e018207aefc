"""The command line starts at once: light commands never import a model or index library.

Asserted on what is imported, not on time (the timing ratios are in bench/bench_cli_start.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HEAVY_LIBRARIES = (
    "torch",
    "torchvision",
    "faiss",
    "onnxruntime",
    "openvino",
    "sklearn",
    "matplotlib",
    "pydicom",
    "pynetdicom",
    "openpyxl",
    "celery",
    "flask",
)
"""Each takes from a tenth of a second to seconds to import; only the commands that use them
(embed, search, evaluate, report, train, serve, worker, ingest) may load them."""

LIGHT_COMMANDS = [
    ["--help"],
    ["db", "upgrade"],
    ["db", "current"],
    ["status"],
    ["status", "--json"],
    ["users", "list"],
    *([name, "--help"] for name in ("search", "evaluate", "report", "train", "ingest", "index")),
]

# Runs each command in turn in one interpreter; prints which heavy library each one loaded.
RUN_AND_LIST_IMPORTS = """
import json, sys
from mammosearch.cli import main
heavy, commands = json.loads(sys.argv[1]), json.loads(sys.argv[2])
loaded = {}
for args in commands:
    code = main(args, prog_name="mammosearch", standalone_mode=False)
    if code not in (None, 0):
        raise SystemExit(f"mammosearch {' '.join(args)}: exit {code}")
    now = {name.split(".")[0] for name in sys.modules} & set(heavy)
    loaded[" ".join(args)] = sorted(now - {n for names in loaded.values() for n in names})
print(json.dumps(loaded))
"""

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_light_commands_import_no_heavy_library(tmp_path: Path, sqlite_template: Path) -> None:
    """--help of every command, status, users and db never wait for torch, faiss and co."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(sqlite_template, data_dir / "archive.sqlite3")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "platform"), str(REPO_ROOT)]),
        "MAMMOSEARCH_DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{data_dir / 'archive.sqlite3'}",
    }
    env.pop("CELERY_BROKER_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_IMPORTS, json.dumps(HEAVY_LIBRARIES),
         json.dumps(LIGHT_COMMANDS)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(loaded) == [" ".join(args) for args in LIGHT_COMMANDS]
    assert {command: names for command, names in loaded.items() if names} == {}
