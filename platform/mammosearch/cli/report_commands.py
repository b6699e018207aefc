"""`mammosearch report`: backbones x distance metrics evaluated and written as HTML + JSON."""

from __future__ import annotations

from pathlib import Path

import click

from mammosearch.config import Settings, get_settings
from mammosearch.db.session import session_scope
from mammosearch.evaluate.labels import LABELS
from mammosearch.evaluate.protocols import DEFAULT_PROTOCOL, PROTOCOLS
from mammosearch.vocabulary import DISTANCE_METRICS


def serving_trained_model(settings: Settings) -> str | None:
    """The trained model that serves (configured or activated), if one does."""
    from mammosearch.embed.loader import trained_model_for
    from mammosearch.embed.serving_record import serving_backbone

    name = serving_backbone(settings.backbone, settings.data_dir)
    return name if trained_model_for(name) is not None else None


def _names(
    text: str, allowed: tuple[str, ...] | list[str], what: str, trained_ok: bool = False
) -> tuple[str, ...]:
    """Comma-separated names, each known (or, with `trained_ok`, a trained model)."""
    from mammosearch.embed.loader import trained_model_for

    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [
        name
        for name in names
        if name not in allowed and not (trained_ok and trained_model_for(name) is not None)
    ]
    if not names or unknown:
        raise click.BadParameter(
            f"{text!r}: unknown {what} {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(allowed)}"
        )
    return names


@click.command("report")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for report.html, report.json, figures/ and thumbs/.",
)
@click.option(
    "--backbones",
    default=None,
    help="Comma-separated backbones (default: every registered backbone).",
)
@click.option("--metrics", "metrics_text", default="l2,cosine", show_default=True)
@click.option(
    "--protocol", type=click.Choice(list(PROTOCOLS)), default=DEFAULT_PROTOCOL, show_default=True
)
@click.option("--label", type=click.Choice(list(LABELS)), default="birads", show_default=True)
@click.option("--k", "ks_text", default="1,5,10,20,50,100", show_default=True)
@click.option(
    "--vote-k",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Neighbours voting in the confusion matrix.",
)
@click.option(
    "--embed-missing",
    is_flag=True,
    help="Embed backbones the archive holds no vectors of (each into an inactive comparison "
    "space; `spaces drop` removes it). Default: report on the archive's spaces only.",
)
@click.option(
    "--allow-random",
    is_flag=True,
    help="With --embed-missing: embed backbones without weights with random weights "
    "(marked UNTRAINED).",
)
@click.option("--tsne/--no-tsne", default=True, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
def report_command(
    out_dir: Path,
    backbones: str | None,
    metrics_text: str,
    protocol: str,
    label: str,
    ks_text: str,
    vote_k: int,
    embed_missing: bool,
    allow_random: bool,
    tsne: bool,
    progress: bool,
) -> None:
    """Evaluate each backbone x metric and write an HTML report with figures and report.json.

    The report reads the archive: each backbone's vectors come from its embedding space, and
    nothing is embedded unless --embed-missing asks for it. A backbone without vectors (or,
    embedding, without weights) is listed as skipped, with the reason in one line.
    """
    from mammosearch.embed.backbones import BACKBONES
    from mammosearch.evaluate import EvaluationError, parse_ks
    from mammosearch.evaluate.report import ReportOptions, archived_backbones, write_report
    from mammosearch.evaluate.tables import format_summary_rows

    settings = get_settings()
    serving = serving_trained_model(settings)
    known = [*BACKBONES, *([serving] if serving else [])]
    if backbones:
        names = tuple(name for name in _names(backbones, known, "backbone", trained_ok=True))
    elif embed_missing:
        names = tuple(known)  # the serving trained model beside the base backbones
    else:
        with session_scope(settings.database_url) as session:
            names = tuple(archived_backbones(session, settings, known))
        if not names:
            raise click.ClickException(
                "no backbone has vectors in the archive yet: embed it first (mammosearch "
                "ingest ... / embed), or let the report embed them with --embed-missing"
            )
    metrics = _names(metrics_text, DISTANCE_METRICS, "metric")
    try:
        options = ReportOptions(
            label=label,
            protocol=protocol,
            metrics=metrics,
            ks=parse_ks(ks_text),
            vote_k=vote_k,
            tsne=tsne,
        )
        with session_scope(settings.database_url) as session:
            outcome = write_report(
                session,
                settings,
                out_dir,
                names,
                options,
                allow_random=allow_random,
                progress=progress,
                embed=embed_missing,
            )
    except EvaluationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_summary_rows(outcome.document))
    click.echo(f"wrote {outcome.html_path} and {outcome.json_path}", err=True)


commands = [report_command]
