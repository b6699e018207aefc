"""`mammosearch embed` and `mammosearch index ...`: vectors and the FAISS indexes."""

from __future__ import annotations

import json
from typing import Any

import click

from mammosearch.cli.space_option import backbone_option, resolve_space, settings_for
from mammosearch.db.session import session_scope


@click.command("embed")
@backbone_option
@click.option("--limit", type=int, default=None, help="Embed at most this many images.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def embed(backbone: str | None, limit: int | None, no_progress: bool) -> None:
    """Embed and index every pending image in this process (no broker needed)."""
    from mammosearch.pipeline.process import process_pending

    settings = settings_for(backbone)
    with session_scope(settings.database_url) as session:
        resolve_space(session, settings)
    summary = process_pending(settings, progress=not no_progress, limit=limit)
    click.echo(
        f"embedded {summary.embedded}, failed {summary.failed}, indexed {summary.indexed} "
        f"({summary.embedding_space['backbone']})"
    )
    for image_id, reason in list(summary.failures.items())[:20]:
        click.echo(f"  failed image {image_id}: {reason}", err=True)


@click.group("index")
def index() -> None:
    """Inspect, verify, repair, compact and rebuild the sharded FAISS indexes."""


@index.command("stats")
@backbone_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(backbone: str | None, as_json: bool) -> None:
    """Segments, vectors and bytes of each metric index of the space."""
    from mammosearch.index import open_index

    settings = settings_for(backbone)
    with session_scope(settings.database_url) as session:
        space = resolve_space(session, settings, echo=not as_json)
        result = {
            "embedding_space": space.describe(),
            "metrics": {m: open_index(settings, space, m).stats() for m in settings.index_metrics},
        }
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    for metric, metric_stats in result["metrics"].items():
        tuned = metric_stats.pop("tuned_search", [])
        click.echo(f"{metric}: " + ", ".join(f"{k}={v}" for k, v in metric_stats.items()))
        for entry in tuned:
            click.echo(f"  tuned: {_tuned_line(entry)}")


def _tuned_line(entry: dict[str, Any]) -> str:
    """A sealed segment's tuned search in one line: its knob, the recall it measured, and the
    filtered-search value per share allowed ("exact" where comparing vectors was cheaper)."""
    knob = "ef_search" if "ef_search" in entry else "nprobe"
    line = f"{knob} {entry.get(knob)} (recall@10 {entry.get('recall@10')})"
    bands = entry.get("filtered") or []
    if bands:
        shares = ", ".join(f"{band['fraction']:.0%} {band.get(knob) or 'exact'}" for band in bands)
        line += f"; filtered by share allowed: {shares}"
    return line


@index.command("verify")
@backbone_option
@click.option("--repair", is_flag=True, help="Remove orphan vectors, re-append missing ones.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(backbone: str | None, repair: bool, as_json: bool) -> None:
    """Compare the indexes with the database (the truth); exit 1 when they disagree."""
    from mammosearch.pipeline.index_stage import verify_index

    settings = settings_for(backbone)
    with session_scope(settings.database_url) as session:
        space = resolve_space(session, settings, echo=not as_json)
        report = verify_index(session, settings, space, repair=repair)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        for metric, found in report["metrics"].items():
            click.echo(
                f"{metric}: {found['vectors']} vectors, {found['rows']} rows, "
                f"{len(found['vectors_without_row'])} vectors without row, "
                f"{len(found['rows_without_vector'])} rows without vector"
            )
            for problem in found["damaged"]:
                click.echo(f"  damaged: {problem}")
            if found["stray_files"]:
                click.echo(f"  stray files: {len(found['stray_files'])}")
        if report["abandoned_claims"]:
            click.echo(
                f"claimed but held by nobody: {report['abandoned_claims']} images"
                + (" (released: pending again, the next ingest or embed embeds them)"
                   if repair else "")
            )  # fmt: skip
        click.echo("clean" if report["clean"] else ("repaired" if repair else "NOT clean"))
    if not report["clean"] and not repair:
        raise SystemExit(1)


@index.command("compact")
@backbone_option
def compact(backbone: str | None) -> None:
    """Rebuild the main index from the live vectors (deltas merged, removed vectors dropped,
    retrained) and drop unreferenced files."""
    from mammosearch.index import open_index, space_writer_lock

    settings = settings_for(backbone)
    with session_scope(settings.database_url) as session:
        space = resolve_space(session, settings)
        with space_writer_lock(settings.index_dir, space.id, "compact"):
            for metric in settings.index_metrics:
                dropped = open_index(settings, space, metric).compact()
                click.echo(f"{metric}: compacted, {dropped} removed vectors dropped")


@index.command("merge")
@backbone_option
def merge(backbone: str | None) -> None:
    """Merge the Flat deltas into the main index now (otherwise done once they hold
    MAMMOSEARCH_INDEX_SEGMENT_SIZE vectors), retraining it if the archive has outgrown it."""
    from mammosearch.index import open_index

    settings = settings_for(backbone)
    with session_scope(settings.database_url) as session:
        space = resolve_space(session, settings)
        for metric in settings.index_metrics:
            index = open_index(settings, space, metric)
            merged = index.merge()
            main = index.stats()["main"] or {}
            click.echo(
                f"{metric}: {'merged' if merged else 'nothing to merge'};"
                f" main index {main.get('factory', 'none')}, {main.get('count', 0)} vectors,"
                f" trained on {main.get('trained_on', 0)}"
            )


@index.command("rebuild")
@backbone_option
@click.confirmation_option(prompt="Rebuild the indexes from the vectors in the database?")
def rebuild(backbone: str | None) -> None:
    """Rebuild every metric index of the space from the vectors stored in the database.

    Takes the same writer lock as every index write (appends wait) and swaps each index in
    with one atomic step; the index stays searchable throughout."""
    from mammosearch.pipeline.index_stage import rebuild_indexes

    settings = settings_for(backbone)
    with session_scope(settings.database_url) as session:
        space = resolve_space(session, settings)
        count = rebuild_indexes(session, settings, space)
    click.echo(f"rebuilt from the database: {count} vectors per metric")


@index.command("remove")
@click.argument("image_ids", nargs=-1, type=int, required=True)
@click.option("--reason", default="removed on request", show_default=True)
def remove(image_ids: tuple[int, ...], reason: str) -> None:
    """Take images out of search in every space (their rows stay, status `removed`)."""
    from mammosearch.config import get_settings
    from mammosearch.pipeline.index_stage import remove_images

    settings = get_settings()
    with session_scope(settings.database_url) as session:
        count = remove_images(session, settings, image_ids, reason=reason)
    click.echo(f"removed {count} images from search")


commands = [embed, index]
