"""`mammosearch search`: similar cases for an image file or an archived image."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mammosearch.cli.space_option import backbone_option, resolve_space, settings_for
from mammosearch.db.session import session_scope
from mammosearch.search.cases import CASE_FUSIONS, DEFAULT_FUSION, SEARCH_UNITS
from mammosearch.search.filters import FILTER_FIELDS, BoundField
from mammosearch.search.request import DEFAULT_K, MAX_K
from mammosearch.search.vote import suggestion_lines
from mammosearch.vocabulary import RANKINGS


def filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One option per filterable field (FILTER_FIELDS), in the table's order."""
    for field in reversed(FILTER_FIELDS):
        if isinstance(field, BoundField):
            kind: Any = click.IntRange(field.values[0], field.values[-1])
        else:
            kind = click.Choice(field.choices) if field.choices else None
        flag = "--" + field.name.replace("_", "-")
        command = click.option(flag, type=kind, default=None, help=field.help)(command)
    return command


@click.command("search")
@click.argument("images", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--image-id", type=int, default=None, help="Search with an archived image instead.")
@click.option(
    "--unit",
    type=click.Choice(SEARCH_UNITS),
    default="image",
    show_default=True,
    help="What a result is: one image, or one case (a breast of one study, all its views). "
    "Several IMAGES are the views of one breast (--unit case).",
)
@click.option(
    "--fusion",
    type=click.Choice(CASE_FUSIONS),
    default=None,
    help=f"--unit case: how views make one similarity (default {DEFAULT_FUSION}).",
)
@click.option("--case-id", default=None, help="--unit case: an archived case (e.g. 12-L).")
@click.option(
    "--patient",
    "patient_id",
    default=None,
    help="--unit case: an archived case by patient id (with --breast).",
)
@click.option(
    "--breast",
    type=click.Choice(["L", "R"]),
    default=None,
    help="--unit case, with --patient or --study-uid: which breast.",
)
@click.option("--study-uid", default=None, help="--unit case: the case's StudyInstanceUID.")
@click.option(
    "-k",
    "k",
    type=click.IntRange(1, MAX_K),
    default=DEFAULT_K,
    show_default=True,
    help="Number of neighbours.",
)
@click.option("--metric", default=None, help="An indexed metric (default: cosine when indexed).")
@filter_options
@click.option(
    "--exclude-same-patient",
    is_flag=True,
    help="Leave out the query patient's images (default: yes for --unit case and for a file "
    "the archive holds; no for --image-id of --unit image).",
)
@click.option(
    "--include-same-patient",
    is_flag=True,
    help="Keep the query patient's other images (turns the default off).",
)
@click.option(
    "--ranking",
    type=click.Choice(RANKINGS),
    default=None,
    help="Result order (default: MAMMOSEARCH_RANKING): nearest first, or the ten nearest "
    "that agree with their BIRADS vote first.",
)
@backbone_option
@click.option("--json", "as_json", is_flag=True, help="Print the response as JSON.")
def search(
    images: tuple[Path, ...],
    image_id: int | None,
    unit: str,
    fusion: str | None,
    case_id: str | None,
    patient_id: str | None,
    breast: str | None,
    study_uid: str | None,
    k: int,
    metric: str | None,
    exclude_same_patient: bool,
    include_same_patient: bool,
    ranking: str | None,
    backbone: str | None,
    as_json: bool,
    **filters: Any,
) -> None:
    """Find the K most similar archived images (or cases, --unit case) to IMAGES (JPEG, PNG,
    DICOM; several: the views of one breast) or to an archived image or case."""
    from mammosearch.ingest.storage import ImageRejected
    from mammosearch.pipeline.index_health import IndexRepairing
    from mammosearch.search.case_search import CaseSearchResponse, QueryUpload, run_search
    from mammosearch.search.request import BadSearchRequest, parse_search_request
    from mammosearch.search.service import SearchError, get_search_service

    archived = [image_id, case_id, patient_id, study_uid]
    if bool(images) == any(value is not None for value in archived):
        raise click.UsageError(
            "give IMAGES, or one of --image-id, --case-id, --patient/--study-uid with --breast"
        )
    if exclude_same_patient and include_same_patient:
        raise click.UsageError("give --exclude-same-patient or --include-same-patient, not both")
    settings = settings_for(backbone)
    service = get_search_service(settings)
    with session_scope(settings.database_url) as session:
        # Which backbone `auto` chose matters where vectors are written (embed, index); the
        # answer below names the space searched, so it is not repeated on every search.
        resolve_space(session, settings, echo=False)
        try:
            request = parse_search_request(
                {
                    "k": k,
                    "metric": metric,
                    **filters,
                    "exclude_same_patient": (
                        True if exclude_same_patient else False if include_same_patient else None
                    ),
                    "image_id": image_id,
                    "ranking": ranking,
                    "unit": unit,
                    "fusion": fusion,
                    "case_id": case_id,
                    "patient_id": patient_id,
                    "breast": breast,
                    "study_uid": study_uid,
                },
                settings.index_metrics,
            )
            uploads = [QueryUpload(path.name, path.read_bytes()) for path in images]
            response = run_search(service, session, request, uploads)
        except BadSearchRequest as exc:
            raise click.UsageError(str(exc)) from exc
        except (SearchError, ImageRejected, LookupError, IndexRepairing) as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(response.to_dict(), indent=2, default=str))
        return
    space = response.embedding_space
    trained = "pretrained" if space["pretrained"] else "UNTRAINED"
    click.echo(
        f"space {space['id']}: {space['backbone']} ({trained}), metric {response.metric}, "
        f"{response.ranking} order"
        + (
            f", unit case, fusion {response.fusion}"
            if isinstance(response, CaseSearchResponse)
            else ""
        )
    )
    _echo_archived(response.query)
    if response.unit == "case":
        _echo_cases(response)
    else:
        _echo_images(response)
    for line in suggestion_lines(response.suggested_birads):
        click.echo(line)
    click.echo("timing ms: " + ", ".join(f"{k}={v}" for k, v in response.timing_ms.items()))


def _echo_archived(query: dict) -> None:  # type: ignore[type-arg]
    """Say which query files the archive already holds, and whose patient is left out."""
    archived = query.get("archived_as")
    if isinstance(archived, dict):
        archived = [{"file": query.get("upload"), **archived}]
    for known in archived or []:
        click.echo(
            f"{known['file']}: archived as patient {known['patient_id']}, image {known['image_id']}"
        )
    excluded = query.get("excluded_patient_ids")
    if excluded:
        click.echo(f"left out: patient {', '.join(excluded)} (--include-same-patient keeps it)")


def _echo_images(response) -> None:  # type: ignore[no-untyped-def]
    click.echo(
        f"{'rank':>4} {'image':>6} {'patient':>8} {'side':>4} {'view':>4} "
        f"{'BIRADS':>6} {'pathology':>10} {'similarity':>10}"
    )
    for hit in response.results:
        click.echo(
            f"{hit.rank:>4} {hit.image_id:>6} {hit.patient_id:>8} {hit.side or '-':>4} "
            f"{hit.view or '-':>4} {hit.birads if hit.birads is not None else '-':>6} "
            f"{hit.pathology or '-':>10} {hit.similarity:>10.4f}"
        )


def _echo_cases(response) -> None:  # type: ignore[no-untyped-def]
    click.echo(
        f"{'rank':>4} {'case':>10} {'patient':>8} {'side':>4} {'BIRADS':>6} "
        f"{'pathology':>10} {'similarity':>10}  views (best first)"
    )
    for hit in response.results:
        views = sorted(hit.views, key=lambda view: view.image_id != hit.best_view_image_id)
        shown = ", ".join(f"{view.view or '?'} #{view.image_id}" for view in views)
        click.echo(
            f"{hit.rank:>4} {hit.case_id:>10} {hit.patient_id:>8} {hit.side or '-':>4} "
            f"{hit.birads if hit.birads is not None else '-':>6} {hit.pathology or '-':>10} "
            f"{hit.similarity:>10.4f}  {shown}"
        )


commands = [search]
