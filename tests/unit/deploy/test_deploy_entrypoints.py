"""Every command the compose file, the manifests and the Dockerfile run is a real entry point.

Commands not written yet are skipped with the missing command in the reason, so this test
turns from skipped to passed (or failed, on a wrong option) as the project fills in.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import click
import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[3]


def _compose_commands() -> list[tuple[str, tuple[str, ...]]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return [
        (f"docker-compose.yml:{name}", tuple(service["command"]))
        for name, service in compose["services"].items()
        if "build" in service and "command" in service
    ]


def _manifest_commands() -> list[tuple[str, tuple[str, ...]]]:
    commands = []
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            pod = ((document or {}).get("spec", {}).get("template") or {}).get("spec", {})
            for container in pod.get("containers", []):
                if container.get("image", "").split(":")[0].endswith("mammosearch"):
                    argv = (*container.get("command", []), *container.get("args", []))
                    commands.append((f"{path.name}:{container['name']}", argv))
    return commands


def _dockerfile_command() -> list[tuple[str, tuple[str, ...]]]:
    return [("Dockerfile:CMD", tuple(json.loads(DockerfileParser(str(ROOT / "Dockerfile")).cmd)))]


ALL_COMMANDS = _compose_commands() + _manifest_commands() + _dockerfile_command()


def _import_or_skip(module_name: str, wanted: str) -> object:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name.split(".")[0]):
            pytest.skip(f"{wanted}: module {error.name} is not written yet")
        raise


def check_mammosearch_command(argv: tuple[str, ...]) -> None:
    """Walk the click groups to the leaf command, then parse the options against it."""
    cli = _import_or_skip("mammosearch.cli", f"`{' '.join(argv)}`")
    context = click.Context(cli.main, info_name="mammosearch")
    command: click.Command = cli.main
    words = list(argv[1:])
    path = ["mammosearch"]
    while isinstance(command, click.Group):
        assert words, f"`{' '.join(argv)}` stops at the group `{' '.join(path)}`"
        name = words.pop(0)
        subcommand = command.get_command(context, name)
        if subcommand is None:
            pytest.skip(f"`{' '.join([*path, name])}` is not registered yet")
        path.append(name)
        context = click.Context(subcommand, info_name=name, parent=context)
        command = subcommand
    # Parsing (not invoking) rejects unknown options, bad types and missing arguments.
    command.make_context(path[-1], words, parent=context.parent)


def check_gunicorn_command(argv: tuple[str, ...]) -> None:
    """The config file exists and `module:factory()` names an importable callable."""
    config_path = argv[argv.index("--config") + 1]
    assert (ROOT / config_path).is_file(), f"{config_path} does not exist"
    module_name, factory = argv[-1].split(":")
    module = _import_or_skip(module_name, argv[-1])
    factory_name = factory.removesuffix("()")
    if not hasattr(module, factory_name):
        pytest.skip(f"{argv[-1]}: {module_name}.{factory_name} is not written yet")
    assert callable(getattr(module, factory_name))


def check_celery_command(argv: tuple[str, ...]) -> None:
    """`celery -A module:attribute ...` names the project's Celery app."""
    module_name, attribute = argv[argv.index("-A") + 1].split(":")
    module = _import_or_skip(module_name, f"celery -A {module_name}:{attribute}")
    if not hasattr(module, attribute):
        pytest.skip(f"{module_name}.{attribute} is not written yet")
    from celery import Celery

    assert isinstance(getattr(module, attribute), Celery)
    if "flower" in argv:
        pytest.importorskip("flower", reason="flower is installed in the image only")


CHECKERS = {
    "mammosearch": check_mammosearch_command,
    "gunicorn": check_gunicorn_command,
    "celery": check_celery_command,
}


def test_every_deployed_command_has_a_checker() -> None:
    """A new kind of command in the deploy files needs a check here too."""
    unknown = sorted({where for where, argv in ALL_COMMANDS if argv[0] not in CHECKERS})
    assert not unknown, f"no entry-point check for: {unknown}"
    assert len(ALL_COMMANDS) >= 10


@pytest.mark.parametrize(
    "argv", sorted({argv for _, argv in ALL_COMMANDS}), ids=lambda argv: " ".join(argv)
)
def test_deployed_command_is_a_real_entry_point(argv: tuple[str, ...]) -> None:
    """`mammosearch ...` resolves in the click group; gunicorn/celery targets import."""
    CHECKERS[argv[0]](argv)
