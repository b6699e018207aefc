"""The `mammosearch` command line: a thin layer over the core."""

from __future__ import annotations

import importlib

import click

from mammosearch import __version__

# One module per command group; each exposes `commands: list[click.Command]`.
COMMAND_MODULES = [
    "mammosearch.cli.db_commands",
    "mammosearch.cli.users_commands",
    "mammosearch.cli.serve_commands",
    "mammosearch.cli.evaluate_commands",
    "mammosearch.cli.source_commands",
    "mammosearch.cli.ingest_commands",
    "mammosearch.cli.status_commands",
    "mammosearch.cli.index_commands",
    "mammosearch.cli.search_commands",
    "mammosearch.cli.worker_commands",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mammosearch")
def main() -> None:
    """Mammosearch: similar-case search for mammography.

    Settings come from the environment: DATABASE_URL, MAMMOSEARCH_DATA_DIR,
    CELERY_BROKER_URL, MAMMOSEARCH_BACKBONE (see .env.example).
    """


for _module_name in COMMAND_MODULES:
    for _command in importlib.import_module(_module_name).commands:
        main.add_command(_command)
