"""`mammosearch search`: similar cases for an image file or an archived image."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mammosearch.cli.space_option import backbone_option, resolve_space, settings_for
from mammosearch.db.session import session_scope
from mammosearch.ranking import RANKINGS
from mammosearch.search_request import BIRADS_HIGH, BIRADS_LOW, DEFAULT_K, MAX_K
from mammosearch.vote import suggestion_lines


def load_query_image(path: Path, max_pixels: int, modalities=None):  # type: ignore[no-untyped-def]
    """A query file (JPEG, PNG or DICOM) -> checked PIL image; errors name the file.

    The same reader as the web upload's, so both give the same neighbours.
    """
    from mammosearch.query_image import read_query_image

    return read_query_image(path.read_bytes(), path.name, max_pixels, modalities)


@click.command("search")
@click.argument(
    "image", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--image-id", type=int, default=None, help="Search with an archived image instead.")
@click.option(
    "-k", "k", type=click.IntRange(1, MAX_K), default=DEFAULT_K, show_default=True,
    help="Number of neighbours.",
)
@click.option("--metric", default=None, help="An indexed metric (default: cosine when indexed).")
@click.option("--side", type=click.Choice(["L", "R"]), default=None)
@click.option("--view", default=None, help="CC, MLO, ...")
@click.option("--modality", default=None, help="subtracted, low-energy, dicom, ...")
@click.option("--birads-min", type=click.IntRange(BIRADS_LOW, BIRADS_HIGH), default=None)
@click.option("--birads-max", type=click.IntRange(BIRADS_LOW, BIRADS_HIGH), default=None)
@click.option("--pathology", default=None, help="normal, benign, malignant")
@click.option("--exclude-same-patient", is_flag=True, help="With --image-id: skip its patient.")
@click.option(
    "--ranking", type=click.Choice(RANKINGS), default=None,
    help="Result order (default: MAMMOSEARCH_RANKING): nearest first, or the ten nearest "
    "that agree with their BIRADS vote first.",
)
@backbone_option
@click.option("--json", "as_json", is_flag=True, help="Print the response as JSON.")
def search(
    image: Path | None,
    image_id: int | None,
    k: int,
    metric: str | None,
    side: str | None,
    view: str | None,
    modality: str | None,
    birads_min: int | None,
    birads_max: int | None,
    pathology: str | None,
    exclude_same_patient: bool,
    ranking: str | None,
    backbone: str | None,
    as_json: bool,
) -> None:
    """Find the K most similar archived cases to IMAGE (JPEG, PNG, DICOM) or --image-id."""
    from mammosearch.index_health import IndexRepairing
    from mammosearch.ingest.storage import ImageRejected
    from mammosearch.search import SearchError, get_search_service
    from mammosearch.search_request import BadSearchRequest, parse_search_request

    if (image is None) == (image_id is None):
        raise click.UsageError("give either IMAGE or --image-id")
    settings = settings_for(backbone)
    service = get_search_service(settings)
    with session_scope(settings.database_url) as session:
        # Which backbone `auto` chose matters where vectors are written (embed, index); the
        # answer below names the space searched, so it is not repeated on every search.
        resolve_space(session, settings, echo=False)
        try:
            request = parse_search_request(
                {
                    "k": k, "metric": metric, "side": side, "view": view, "modality": modality,
                    "birads_min": birads_min, "birads_max": birads_max, "pathology": pathology,
                    "exclude_same_patient": exclude_same_patient, "image_id": image_id,
                    "ranking": ranking,
                },
                settings.index_metrics,
            )
        except BadSearchRequest as exc:
            raise click.UsageError(str(exc)) from exc
        k, metric, filters = request.k, request.metric, request.search_filters()
        try:
            if image is not None:
                query = load_query_image(image, settings.max_image_pixels,
                                         settings.accepted_modalities)
                response = service.search_image(
                    session, query, k, metric, filters, image.name, request.ranking
                )
            else:
                response = service.search_image_id(
                    session, image_id, k, metric, filters, exclude_same_patient, request.ranking
                )
        except (SearchError, ImageRejected, IndexRepairing) as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(response.to_dict(), indent=2, default=str))
        return
    space = response.embedding_space
    trained = "pretrained" if space["pretrained"] else "UNTRAINED"
    click.echo(
        f"space {space['id']}: {space['backbone']} ({trained}), metric {metric}, "
        f"{response.ranking} order"
    )
    click.echo(f"{'rank':>4} {'image':>6} {'patient':>8} {'side':>4} {'view':>4} "
               f"{'BIRADS':>6} {'pathology':>10} {'similarity':>10}")
    for hit in response.results:
        click.echo(
            f"{hit.rank:>4} {hit.image_id:>6} {hit.patient_id:>8} {hit.side or '-':>4} "
            f"{hit.view or '-':>4} {hit.birads if hit.birads is not None else '-':>6} "
            f"{hit.pathology or '-':>10} {hit.similarity:>10.4f}"
        )
    for line in suggestion_lines(response.suggested_birads):
        click.echo(line)
    click.echo("timing ms: " + ", ".join(f"{k}={v}" for k, v in response.timing_ms.items()))


commands = [search]
