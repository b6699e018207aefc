"""The core's dependencies point one way: nothing in mammosearch (but its cli) reaches up."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import mammosearch

OUTER_PACKAGES = ("celery", "kombu", "redis", "flask", "workers", "web")
"""Outer layers and their frameworks; the core reaches them only through its ports."""

# pkgutil.walk_packages imports every package it descends into, the cli's too, so the walk
# is written out: iter_modules level by level, never entering the entry layer.
IMPORT_THE_CORE = """
import importlib, json, pkgutil, sys

ENTRY_LAYER = "mammosearch.cli"  # the program's entry point: it may import workers and web
packages = [importlib.import_module("mammosearch")]
while packages:
    package = packages.pop()
    for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if module.name != ENTRY_LAYER:
            imported = importlib.import_module(module.name)
            if module.ispkg:
                packages.append(imported)
outer = json.loads(sys.argv[1])
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in outer)))
"""


def test_importing_every_core_module_loads_no_framework_or_outer_layer() -> None:
    """No core module imports Celery, kombu, redis, Flask, workers or web (cli excepted)."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_THE_CORE, json.dumps(OUTER_PACKAGES)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"importing the core failed:\n{done.stderr[-3000:]}"
    reached = json.loads(done.stdout.strip().splitlines()[-1])
    assert reached == [], f"the core imports outer layers: {', '.join(reached)}"


def _imported_names(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_core_function_imports_an_outer_layer_lazily() -> None:
    """An import inside a function is still a wall running the wrong way."""
    core = Path(mammosearch.__file__).parent
    offending = [
        f"{path.relative_to(core.parent)}: imports {name}"
        for path in sorted(core.rglob("*.py"))
        if "cli" not in path.relative_to(core).parts[:1]
        for name in _imported_names(ast.parse(path.read_text(), str(path)))
        if name.split(".")[0] in OUTER_PACKAGES
    ]
    assert offending == []
