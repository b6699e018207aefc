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


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _lazy_homes(tree: ast.Module) -> dict[str, str]:
    """A package's `_HOMES` (name -> defining module), read where its __init__ exports lazily."""
    for node in tree.body:
        names = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        if isinstance(node, ast.Assign) and "_HOMES" in names:
            return ast.literal_eval(node.value)
    return {}


def core_import_graph(core: Path) -> dict[str, set[str]]:
    """Module -> the core modules it imports: every import, in functions and TYPE_CHECKING
    blocks too (a lazy import hides a cycle, it does not remove it)."""
    root = core.parent
    trees = {_module_name(path, root): (path, ast.parse(path.read_text(), str(path)))
             for path in core.rglob("*.py")}  # fmt: skip
    homes = {name: _lazy_homes(tree) for name, (path, tree) in trees.items()
             if path.name == "__init__.py"}  # fmt: skip
    graph: dict[str, set[str]] = {name: set() for name in trees}
    for name, (path, tree) in trees.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(kept + ([node.module] if node.module else []))
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    home = homes.get(base, {}).get(alias.name)
                    targets.append(submodule if submodule in trees else home or base)
            for target in targets:
                while target and target not in trees:  # a name inside a module: the module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[tuple[str, ...]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for imported in graph[module]:
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(tuple(sorted(group)))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return cycles


def test_the_import_graph_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    core = tmp_path / "mammosearch"
    core.mkdir()
    (core / "__init__.py").write_text("")
    (core / "a.py").write_text("from mammosearch.b import thing\n")
    (core / "b.py").write_text("def thing():\n    from mammosearch import a\n")
    (core / "c.py").write_text("import mammosearch.a\n")
    assert import_cycles(core_import_graph(core)) == [("mammosearch.a", "mammosearch.b")]


STAGES = {
    f"mammosearch.{stage}"
    for stage in ("access", "db", "durable", "embed", "evaluate", "index", "ingest", "jobs")
    + ("pipeline", "search", "train", "vocabulary", "config")
}
"""The core's stages: the graph must reach into each (a package the walk misses hides cycles)."""


def test_no_import_cycle_among_core_modules() -> None:
    """Each stage imports the ones before it, never back: a cycle means two modules share a
    piece that belongs in a third."""
    graph = core_import_graph(Path(mammosearch.__file__).parent)
    assert STAGES <= graph.keys(), f"stages missing from the graph: {STAGES - graph.keys()}"
    assert import_cycles(graph) == []
