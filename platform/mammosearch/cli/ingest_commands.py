"""`mammosearch ingest ...`: bring images from a source into the archive (one subcommand each)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mammosearch.cli.db_commands import migrate_embedded_database
from mammosearch.cli.lazy_group import LazyGroup
from mammosearch.config import Settings, get_settings
from mammosearch.db import session_scope
from mammosearch.ingest.import_record import record_import
from mammosearch.ingest.sheet import BIRADS_RULES, SheetError, SheetRow

if TYPE_CHECKING:
    from mammosearch.ingest.cdd_cesm import ImportSummary

NAMES_SHOWN = 5  # long lists (e.g. 500 missing DM images) are summarised; --json has them all


@click.group(
    "ingest",
    cls=LazyGroup,
    lazy_subcommands={"dicom": "mammosearch.cli.source_commands:ingest_dicom"},
)
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


def split_missing(summary: ImportSummary) -> tuple[int, list[str]]:
    """(low-energy rows without a file, the other rows without a file by name).

    TCIA's CDD-CESM downloads are often the subtracted images only, so the sheet's DM rows
    find no file: that is expected, and said once, calmly; a missing subtracted image is not.
    """
    low_energy = summary.missing_by_modality.get("low-energy", 0)
    others = [
        name for name in summary.missing
        if SheetRow(image_name=name, row_number=0).modality != "low-energy"
    ]  # fmt: skip
    return low_energy, others


def missing_lines(summary: ImportSummary) -> list[str]:
    """What the rows without an image file mean, in at most two lines."""
    low_energy, others = split_missing(summary)
    lines = []
    if low_energy:
        rows = "1 sheet row describes a low-energy image" if low_energy == 1 else (
            f"{low_energy} sheet rows describe low-energy images"
        )  # fmt: skip
        lines.append(
            f"{rows}, which this folder does not hold (expected for a subtracted-only export)"
        )
    if others:
        lines.append(
            f"missing: {len(others)} sheet rows name images not in the folder: {_some(others)}"
        )
    return lines


def recorded_summary(summary: ImportSummary) -> dict[str, object]:
    """What the ingestion page shows of this import: counts and the lines that need reading
    (the folder by its name only: no server path leaves the machine)."""
    lines = missing_lines(summary)
    for title, names in (("rejected", summary.rejected), ("skipped", summary.skipped),
                         ("sheet rows not used", summary.sheet_problems)):  # fmt: skip
        if names:
            lines.append(f"{title}: {len(names)}: {_some(names)}")
    return {
        "folder": Path(summary.folder).name,
        "birads_rule": summary.birads_rule,
        "elapsed_s": round(summary.elapsed_s, 1),
        "counts": {**summary.counts(), "missing": len(split_missing(summary)[1])},
        "lines": lines,
    }


def echo_summary(summary: ImportSummary) -> None:
    """The readable end-of-import summary: counts first, then what needs attention."""
    click.echo(
        f"CDD-CESM import of {summary.folder} (BIRADS rule: {summary.birads_rule}, "
        f"{summary.elapsed_s:.1f} s)"
    )
    low_energy, missing = split_missing(summary)
    click.echo(
        f"images: {summary.new} new, {summary.updated} updated, {summary.unchanged} unchanged, "
        f"{len(missing)} missing, {len(summary.rejected)} rejected"
    )
    for line in missing_lines(summary):
        click.echo(line)
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
        click.echo(f"segmentations of images not registered: {_some(segmentations.without_image)}")
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
    from mammosearch.ingest.cdd_cesm import FolderError, import_cdd_cesm

    settings = get_settings()
    rule = birads_rule or settings.birads_rule
    if rule not in BIRADS_RULES:
        raise click.BadParameter(
            f"{rule!r} (from MAMMOSEARCH_BIRADS_RULE); choose one of {', '.join(BIRADS_RULES)}",
            param_hint="--birads-rule",
        )
    migrate_embedded_database(settings, quiet=as_json)
    try:
        with session_scope() as session:
            summary = import_cdd_cesm(
                session, folder, settings, birads_rule=rule, progress=not no_progress
            )
            record_import(session, "CDD-CESM", recorded_summary(summary))
    except (FolderError, SheetError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        echo_summary(summary)
    if not no_process:
        _after_import(settings, progress=not no_progress, quiet=as_json)


commands = [ingest]
