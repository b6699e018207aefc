"""`.env.example` names every setting that config.settings_from_env reads, each with a comment."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from mammosearch import config

ROOT = Path(__file__).resolve().parents[2]
# Settings fields that are not read from one environment variable.
NOT_FROM_ENVIRONMENT = {"extra"}


def _env_names(node: ast.AST) -> list[str]:
    """Names passed as the first argument of `_env(...)` anywhere inside `node`."""
    return [
        call.args[0].value
        for call in ast.walk(node)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "_env"
        and call.args
        and isinstance(call.args[0], ast.Constant)
    ]


def setting_environment_variables() -> dict[str, str]:
    """Settings field -> the environment variable settings_from_env reads it from."""
    function = ast.parse(inspect.getsource(config.settings_from_env)).body[0]
    local_sources: dict[str, list[str]] = {}
    for statement in ast.walk(function):
        if isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name):
            local_sources[statement.targets[0].id] = _env_names(statement.value)
    settings_call = next(
        node
        for node in ast.walk(function)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Settings"
    )
    mapping = {}
    for keyword in settings_call.keywords:
        names = _env_names(keyword.value)
        for local in ast.walk(keyword.value):
            if isinstance(local, ast.Name) and local.id in local_sources:
                names += local_sources[local.id]
        if names:
            mapping[keyword.arg] = names[0]
    return mapping


def documented_variables() -> dict[str, str]:
    """Variable -> the comment block just above it in .env.example."""
    documented = {}
    comment_lines: list[str] = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith("#"):
            comment_lines.append(line)
        elif match := re.match(r"^([A-Z][A-Z0-9_]*)=", line):
            documented[match.group(1)] = " ".join(comment_lines)
            # Consecutive variables may share one comment (e.g. two ports).
        else:
            comment_lines = []
    return documented


def test_every_setting_is_read_from_the_environment() -> None:
    """Each Settings field (bar `extra`) has an environment variable in settings_from_env."""
    mapping = setting_environment_variables()
    missing = set(config.SETTING_NAMES) - NOT_FROM_ENVIRONMENT - set(mapping)
    assert not missing, f"settings_from_env reads no variable for: {sorted(missing)}"


def test_every_setting_is_named_in_the_env_example_with_a_comment() -> None:
    """Operators find every knob, with what it does, in .env.example."""
    documented = documented_variables()
    mapping = setting_environment_variables()
    absent = sorted(variable for variable in mapping.values() if variable not in documented)
    assert not absent, f".env.example lacks: {absent}"
    uncommented = sorted(variable for variable in mapping.values() if not documented[variable])
    assert not uncommented, f".env.example has no comment above: {uncommented}"


def test_the_env_example_holds_no_real_secret() -> None:
    """The secret key and passwords are blank in the example, so nobody ships them."""
    documented_lines = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if re.match(r"^[A-Z][A-Z0-9_]*=", line)
    )
    for variable in ("MAMMOSEARCH_SECRET_KEY", "POSTGRES_PASSWORD", "ORTHANC_PASSWORD"):
        assert documented_lines[variable] == "", variable
