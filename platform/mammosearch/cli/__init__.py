"""The `mammosearch` command line: a thin layer over the core."""

from __future__ import annotations

import sys

import click

from mammosearch import __version__
from mammosearch.cli.lazy_group import LazyGroup

# Each command by name, imported only when it runs (or when --help lists its summary).
COMMANDS = {
    "db": "mammosearch.cli.db_commands:db",
    "users": "mammosearch.cli.users_commands:users",
    "serve": "mammosearch.cli.serve_commands:serve",
    "evaluate": "mammosearch.cli.evaluate_commands:evaluate_command",
    "report": "mammosearch.cli.report_commands:report_command",
    "ingest": "mammosearch.cli.ingest_commands:ingest",
    "dicom-listen": "mammosearch.cli.source_commands:dicom_listen",
    "orthanc-follow": "mammosearch.cli.source_commands:orthanc_follow",
    "labels": "mammosearch.cli.source_commands:labels",
    "status": "mammosearch.cli.status_commands:status",
    "embed": "mammosearch.cli.index_commands:embed",
    "index": "mammosearch.cli.index_commands:index",
    "search": "mammosearch.cli.search_commands:search",
    "worker": "mammosearch.cli.worker_commands:worker",
    "beat": "mammosearch.cli.worker_commands:beat",
    "watch": "mammosearch.cli.worker_commands:watch",
    "reconcile": "mammosearch.cli.worker_commands:reconcile",
    "train": "mammosearch.cli.train_commands:train",
    "models": "mammosearch.cli.train_commands:models",
    "auto-train": "mammosearch.cli.train_commands:auto_train",
    "spaces": "mammosearch.cli.spaces_commands:spaces",
}


class MammosearchGroup(LazyGroup):
    """Turns set-up problems (a bad setting, the database) into one actionable line."""

    def invoke(self, ctx: click.Context) -> object:
        from sqlalchemy.exc import DatabaseError, OperationalError, ProgrammingError

        from mammosearch.config import SettingError

        try:
            return super().invoke(ctx)
        except SettingError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            full = _full_disk(exc)
            if full:
                raise click.ClickException(full) from exc
            raise
        except (OperationalError, ProgrammingError) as exc:
            from mammosearch.config import get_settings
            from mammosearch.db.session import redact_url

            full = _full_disk(exc)
            if full:
                raise click.ClickException(full) from exc
            url = redact_url(get_settings().database_url)
            text = str(exc.orig)
            if "no such table" in text or "does not exist" in text:
                raise click.ClickException(
                    f"the database at {url} is not set up ({text.splitlines()[0]}): "
                    "run `mammosearch db upgrade`"
                ) from exc
            raise click.ClickException(
                f"cannot use the database at {url}: {text.splitlines()[0]} "
                "(check DATABASE_URL and that the server is running)"
            ) from exc
        except DatabaseError as exc:
            from mammosearch.config import get_settings
            from mammosearch.db.session import damaged_database_message

            message = damaged_database_message(get_settings().database_url, exc)
            if message is None:
                raise
            raise click.ClickException(message) from exc
        except RuntimeError as exc:
            # No weights, or an unchecked / refused NAME:int8 or NAME:bf16. Only raised once
            # the embedding package is loaded; importing it here would load torch for every
            # command.
            weights = sys.modules.get("mammosearch.embed.weights")
            if weights is not None and isinstance(exc, weights.WeightsUnavailable):
                raise click.ClickException(str(exc)) from exc
            migrate = sys.modules.get("mammosearch.db.migrate")  # refused: rows to fix first
            if migrate is not None and isinstance(exc, migrate.MigrationRefused):
                raise click.ClickException(str(exc)) from exc
            _raise_index_problem(exc)
            raise
        except ValueError as exc:
            _raise_index_problem(exc)
            raise


def _raise_index_problem(error: Exception) -> None:
    """An index that cannot be opened (an unreadable manifest, another space's or metric's
    files) is one line and the way back, not a traceback; other errors pass."""
    sharded = sys.modules.get("mammosearch.index.sharded")  # loaded only by index commands
    if sharded is not None and isinstance(
        error, sharded.IndexCorruptError | sharded.IndexMismatchError
    ):
        raise click.ClickException(
            f"{error} (repair it from the database: `mammosearch index verify --repair`,"
            " or `mammosearch index rebuild --yes`)"
        ) from error


def _full_disk(error: BaseException) -> str | None:
    from mammosearch.config import get_settings
    from mammosearch.durable.disk_full import full_disk_message

    return full_disk_message(error, get_settings())


@click.group(
    cls=MammosearchGroup,
    lazy_subcommands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="mammosearch")
def main() -> None:
    """Mammosearch: similar-case search for mammography.

    Settings come from the environment: DATABASE_URL, MAMMOSEARCH_DATA_DIR,
    CELERY_BROKER_URL, MAMMOSEARCH_BACKBONE (see .env.example).
    """
    from mammosearch.config import get_settings
    from mammosearch.ingest.storage import allow_pixels
    from mammosearch.logs import configure_logging

    configure_logging()
    allow_pixels(get_settings().max_image_pixels)
