"""`mammosearch evaluate`: leave-one-out retrieval metrics of an embedding space."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mammosearch.config import get_settings
from mammosearch.db.session import session_scope
from mammosearch.durable.atomic_files import atomic_write_text
from mammosearch.evaluate.labels import LABELS
from mammosearch.evaluate.protocols import DEFAULT_PROTOCOL, PROTOCOLS
from mammosearch.search.cases import CASE_FUSIONS, DEFAULT_FUSION, SEARCH_UNITS
from mammosearch.search.vote import reliability_lines
from mammosearch.vocabulary import DISTANCE_METRICS, RANKINGS


@click.command("evaluate")
@click.option("--label", type=click.Choice(list(LABELS)), default="birads", show_default=True)
@click.option(
    "--protocol",
    type=click.Choice(list(PROTOCOLS)),
    default=DEFAULT_PROTOCOL,
    show_default=True,
    help="patient-excluded: a query's own patient's images are not candidates; "
    "self-included is the paper's optimistic protocol.",
)
@click.option("--metric", type=click.Choice(DISTANCE_METRICS), default="cosine", show_default=True)
@click.option(
    "--k",
    "ks_text",
    default="1,5,10,20,50,100",
    show_default=True,
    help="Comma-separated cut-offs.",
)
@click.option(
    "--map-cutoff",
    type=click.IntRange(min=1),
    default=None,
    help="Score AP@K instead of AP over the full ranking.",
)
@click.option("--backbone", default=None, help="Evaluate the newest space of this backbone.")
@click.option("--space-id", type=int, default=None, help="Evaluate this embedding space.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the full result (incl. per-query table) here.",
)
@click.option("--per-class/--no-per-class", default=True, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option(
    "--through-index",
    is_flag=True,
    help="Rank with the served index (its factory, efSearch / nprobe) instead of exact "
    "search, to see what an ANN index costs in P@k; mAP becomes AP@max(k).",
)
@click.option(
    "--ranking",
    type=click.Choice(RANKINGS),
    default="similarity",
    show_default=True,
    help="similarity: the space's own ranking; consensus: the ten nearest that agree with "
    "their BIRADS vote first, as search orders them by default (MAMMOSEARCH_RANKING).",
)
@click.option(
    "--unit",
    type=click.Choice(SEARCH_UNITS),
    default="image",
    show_default=True,
    help="image: every image a query; case: every case (one breast of one study, all its "
    "views) a query against the other cases, as search's unit=case answers.",
)
@click.option(
    "--fusion",
    type=click.Choice(CASE_FUSIONS),
    default=None,
    help=f"With --unit case: how views make one case similarity (default {DEFAULT_FUSION}).",
)
def evaluate_command(
    label: str,
    protocol: str,
    metric: str,
    ks_text: str,
    map_cutoff: int | None,
    backbone: str | None,
    space_id: int | None,
    json_path: Path | None,
    per_class: bool,
    progress: bool,
    through_index: bool,
    ranking: str,
    unit: str,
    fusion: str | None,
) -> None:
    """Leave-one-out precision/recall/NDCG@k, mAP and search time over a space's images
    (or cases, --unit case)."""
    from mammosearch.evaluate import (
        EvaluationError,
        evaluate_space,
        format_per_class,
        format_summary,
        parse_ks,
        resolve_space,
    )
    from mammosearch.evaluate.runs import VOTE_KEYS

    if fusion is not None and unit != "case":
        raise click.UsageError("--fusion is for --unit case")
    settings = get_settings()
    try:
        ks = parse_ks(ks_text)
        with session_scope(settings.database_url) as session:
            space = resolve_space(session, settings, backbone=backbone, space_id=space_id)
            description = space.describe()
            click.echo(
                f"evaluating embedding space {description['id']} ({description['backbone']}, "
                f"{'pretrained' if description['pretrained'] else 'UNTRAINED'})",
                err=True,
            )
            result = evaluate_space(
                session,
                settings,
                space,
                label=label,
                protocol=protocol,
                metric=metric,
                ks=ks,
                map_cutoff=map_cutoff,
                trigger="cli",
                progress=progress,
                through_index=through_index,
                ranking=ranking,
                unit=unit,
                fusion=fusion,
            )
    except EvaluationError as exc:
        raise click.ClickException(str(exc)) from exc
    served = result.config.get("served_index") if isinstance(result.config, dict) else None
    if through_index and served:
        click.echo(
            f"ranked through the served index: {served['factory']}, "
            f"{served['vectors']} vectors, tuned {served['tuned_search'] or 'none'}"
        )
    if unit == "case":
        views = result.config.get("views_per_case", {})
        click.echo(
            f"unit case, fusion {result.config['fusion']}: {result.config['cases']} cases of "
            f"{result.config['images']} images (views per case: {views}); "
            f"{result.queries} cases scored"
        )
    click.echo(format_summary(result))
    if per_class:
        click.echo("")
        click.echo(format_per_class(result))
    for label, reliability in (result.config.get(VOTE_KEYS[unit]) or {}).items():
        click.echo("")
        title = f"case {label}" if unit == "case" else label
        click.echo("\n".join(reliability_lines(title, reliability)))
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2))
        click.echo(f"wrote {json_path}", err=True)


commands = [evaluate_command]
