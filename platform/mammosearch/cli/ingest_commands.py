"""`mammosearch ingest ...`: bring images from a source into the archive (one subcommand each)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mammosearch.config import Settings, get_settings
from mammosearch.db import session_scope
from mammosearch.ingest.cdd_cesm import FolderError, ImportSummary, import_cdd_cesm
from mammosearch.ingest.sheet import BIRADS_RULES, SheetError

NAMES_SHOWN = 5  # long lists (e.g. 500 missing DM images) are summarised; --json has them all


@click.group("ingest")
def ingest() -> None:
    """Register images from a source; they are then embedded and indexed."""


def _after_import(settings: Settings, progress: bool = True, quiet: bool = False) -> None:
    """Move what was registered forward: embed + index here, or enqueue for the workers."""
    from workers.work_queue import work_queue_for

    dispatched = work_queue_for(settings, progress=progress).enqueue_embedding()
    if quiet:
        return
    if dispatched.mode == "in-process":  # detail: the PipelineSummary of the run
        ran = dispatched.detail
        space = ran["embedding_space"]
        trained = "" if space["pretrained"] else " UNTRAINED weights"
        click.echo(
            f"embedded {ran['embedded']}, failed {ran['failed']}, indexed "
            f"{ran['indexed']} with {space['backbone']}{trained} (space {space['id']})"
        )
    else:
        click.echo(f"enqueued {dispatched.images} images in {dispatched.tasks} worker tasks")


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    more = len(names) - NAMES_SHOWN
    return f"{shown}, ... and {more} more (--json lists all)" if more > 0 else shown


def _echo_list(title: str, lines: list[str]) -> None:
    """A heading with its count, then the first few lines, each naming its input."""
    if not lines:
        return
    click.echo(f"{title}: {len(lines)}")
    for line in lines[:NAMES_SHOWN]:
        click.echo(f"  {line}")
    if len(lines) > NAMES_SHOWN:
        click.echo(f"  ... and {len(lines) - NAMES_SHOWN} more (--json lists all)")


def echo_summary(summary: ImportSummary) -> None:
    """The readable end-of-import summary: counts first, then what needs attention."""
    click.echo(
        f"CDD-CESM import of {summary.folder} (BIRADS rule: {summary.birads_rule}, "
        f"{summary.elapsed_s:.1f} s)"
    )
    click.echo(
        f"images: {summary.new} new, {summary.updated} updated, {summary.unchanged} unchanged, "
        f"{len(summary.missing)} missing, {len(summary.rejected)} rejected"
    )
    if summary.missing:
        by_modality = ", ".join(f"{n} {m}" for m, n in sorted(summary.missing_by_modality.items()))
        click.echo(
            f"missing: {len(summary.missing)} sheet rows name images not in the folder "
            f"({by_modality}): {_some(summary.missing)}"
        )
    _echo_list("rejected", summary.rejected)
    _echo_list("skipped", summary.skipped)
    if summary.duplicates:
        click.echo(
            f"duplicates: {len(summary.duplicates)} identical repeated rows counted once: "
            f"{_some(summary.duplicates)}"
        )
    _echo_list("conflicting duplicate rows (first row used)", summary.conflicts)
    _echo_list("sheet rows not used", summary.sheet_problems)
    if summary.images_without_row:
        click.echo(
            f"images without a sheet row (not registered): {len(summary.images_without_row)}: "
            f"{_some(summary.images_without_row)}"
        )
    reports = summary.reports
    if reports.new or reports.updated or reports.unchanged or reports.rejected:
        click.echo(
            f"reports: {reports.new} new, {reports.updated} updated, "
            f"{reports.unchanged} unchanged, {len(reports.rejected)} rejected"
        )
    _echo_list("reports rejected", reports.rejected)
    if reports.without_patient:
        click.echo(f"reports of patients not in the sheet: {_some(reports.without_patient)}")
    segmentations = summary.segmentations
    if segmentations.new or segmentations.updated or segmentations.unchanged:
        click.echo(
            f"segmentations: {segmentations.new} new, {segmentations.updated} updated, "
            f"{segmentations.unchanged} unchanged"
        )
    _echo_list("segmentation problems", segmentations.problems)
    if segmentations.without_image:
        click.echo(
            f"segmentations of images not registered: {_some(segmentations.without_image)}"
        )
    if summary.nothing_new:
        click.echo(f"nothing new: {summary.registered} images already registered")


@ingest.command("cdd-cesm")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--birads-rule",
    type=click.Choice(sorted(BIRADS_RULES)),
    default=None,
    help="Which BIRADS to use when a cell lists several (e.g. 3$2): max (default), "
    "first or min. Default from MAMMOSEARCH_BIRADS_RULE.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full summary as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option(
    "--no-process", is_flag=True, help="Only register; leave the images pending for the pipeline."
)
def ingest_cdd_cesm(
    folder: Path, birads_rule: str | None, as_json: bool, no_progress: bool, no_process: bool
) -> None:
    """Import a CDD-CESM folder (annotation sheet + image folders, TCIA layout)."""
    settings = get_settings()
    rule = birads_rule or settings.birads_rule
    if rule not in BIRADS_RULES:
        raise click.BadParameter(
            f"{rule!r} (from MAMMOSEARCH_BIRADS_RULE); choose one of {', '.join(BIRADS_RULES)}",
            param_hint="--birads-rule",
        )
    try:
        with session_scope() as session:
            summary = import_cdd_cesm(session, folder, settings, birads_rule=rule,
                                      progress=not no_progress)
    except (FolderError, SheetError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        echo_summary(summary)
    if not no_process:
        _after_import(settings, progress=not no_progress, quiet=as_json)


commands = [ingest]
