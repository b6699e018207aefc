"""`mammosearch spaces`: list embedding spaces, re-embed into a new one, switch, drop."""

from __future__ import annotations

import json

import click

from mammosearch.config import get_settings


@click.group("spaces")
def spaces() -> None:
    """Embedding spaces: one per backbone (or trained model); one of them serves search."""


@spaces.command("list")
@click.option("--json", "as_json", is_flag=True)
def spaces_list(as_json: bool) -> None:
    """Every space, how complete it is, and which one serves."""
    from sqlalchemy import select

    from mammosearch.db.models import EmbeddingSpace
    from mammosearch.db.session import session_scope
    from mammosearch.embed.serving import serving_space
    from mammosearch.jobs.space_switch import space_progress

    settings = get_settings()
    with session_scope() as session:
        serving = serving_space(session, settings)
        rows = []
        for space in session.scalars(select(EmbeddingSpace).order_by(EmbeddingSpace.id)):
            progress = space_progress(session, space)
            progress["serving"] = serving is not None and serving.id == space.id
            rows.append(progress)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        space = row["space"]
        click.echo(
            f"{'*' if row['serving'] else ' '} space {space['id']:<3} {space['backbone']:<28} "
            f"{space['weights_sha256'][:12]}  dim {space['dim']:<5} "
            f"indexed {row['indexed']}/{row['searchable_images']}"
            + (f" (missing {row['missing']})" if row["missing"] else "")
        )
    click.echo("* serves search")


@spaces.command("reembed")
@click.argument("backbone")
def spaces_reembed(backbone: str) -> None:
    """Embed every searchable image into BACKBONE's space (a backbone or model name).

    Search stays on the serving space meanwhile; `spaces activate BACKBONE` switches.
    With a broker configured the work goes to the embed workers; otherwise it runs here.
    """
    from tqdm import tqdm

    from mammosearch.db.session import session_scope
    from mammosearch.embed.serving import embedder_for
    from mammosearch.embed.spaces import get_or_create_space
    from mammosearch.jobs.space_switch import embed_into_space, missing_image_ids, space_progress

    settings = get_settings()
    with session_scope() as session:
        try:
            embedder = embedder_for(settings, backbone)
        except ValueError as error:
            raise click.ClickException(str(error)) from error
        space = get_or_create_space(session, embedder)
        session.commit()
        missing = missing_image_ids(session, space)
        if settings.celery_broker_url:
            from workers.enqueue import enqueue_space_embedding

            tasks = enqueue_space_embedding(settings, backbone, missing)
            click.echo(
                f"space {space.id}: {len(missing)} images sent to the embed workers in "
                f"{tasks} tasks; follow with `mammosearch spaces list`"
            )
            return
        with tqdm(
            total=len(missing), desc=f"re-embedding into space {space.id}", unit="img"
        ) as bar:
            embed_into_space(session, settings, backbone, missing, bar.update)
        progress = space_progress(session, space)
    click.echo(
        f"space {space.id}: indexed {progress['indexed']}/{progress['searchable_images']}; "
        f"switch with `mammosearch spaces activate {backbone}`"
    )


@spaces.command("activate")
@click.argument("backbone")
def spaces_activate(backbone: str) -> None:
    """Make BACKBONE's space serve search, once it is complete and verified."""
    from mammosearch.db.session import session_scope
    from mammosearch.jobs.space_switch import SpaceSwitchError, activate

    settings = get_settings()
    if settings.backbone != "auto":
        click.echo(
            f"note: MAMMOSEARCH_BACKBONE={settings.backbone} pins processes that set it; "
            "processes with `auto` follow the activation",
            err=True,
        )
    with session_scope() as session:
        try:
            record = activate(session, settings, backbone)
        except (SpaceSwitchError, ValueError) as error:
            raise click.ClickException(str(error)) from error
    progress = record["progress"]
    click.echo(
        f"space {record['space']['id']} ({backbone}) serves search now: "
        f"{progress['indexed']}/{progress['searchable_images']} images indexed"
    )


@spaces.command("drop")
@click.argument("space_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask.")
def spaces_drop(space_id: int, yes: bool) -> None:
    """Delete a space that does not serve: its vectors and index files."""
    from mammosearch.db.models import EmbeddingSpace
    from mammosearch.db.session import session_scope
    from mammosearch.jobs.space_switch import SpaceSwitchError, drop_space

    with session_scope() as session:
        space = session.get(EmbeddingSpace, space_id)
        if space is None:
            raise click.ClickException(f"space {space_id}: no such space (mammosearch spaces list)")
        if not yes:
            click.confirm(f"drop space {space_id} ({space.backbone}) and its vectors?", abort=True)
        try:
            result = drop_space(session, get_settings(), space)
        except SpaceSwitchError as error:
            raise click.ClickException(str(error)) from error
    click.echo(f"space {space_id}: dropped {result['vectors_removed']} vectors and its indexes")


commands = [spaces]
