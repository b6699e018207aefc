"""DICOM sources and late labels: `ingest dicom`, `dicom-listen`, `orthanc-follow`, `labels`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mammosearch.config import Settings, get_settings
from mammosearch.db.session import make_session_factory

if TYPE_CHECKING:
    from mammosearch.ingest.dicom_register import ImageRegisteredHook

log = logging.getLogger(__name__)


def _process(settings: Settings) -> None:
    """Move what was registered forward: embed + index here, or enqueue for the workers."""
    from workers.work_queue import work_queue_for

    summary = work_queue_for(settings).enqueue_embedding()
    click.echo(f"pipeline ({summary.mode}): {summary.images} image(s), {summary.tasks} task(s)")


def background_processing(settings: Settings) -> ImageRegisteredHook:
    """A hook that runs the pipeline on one background thread, coalescing bursts: a C-STORE
    is answered as soon as its image is committed, not after it is embedded."""
    from workers.work_queue import work_queue_for

    queue = work_queue_for(settings)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")
    queued = threading.Event()

    def run() -> None:
        queued.clear()  # images registered from now on need another run
        try:
            queue.enqueue_embedding()
        except Exception:
            log.exception("pipeline run after C-STORE failed; images stay pending")

    def hook(image_id: int) -> None:
        if not queued.is_set():
            queued.set()
            executor.submit(run)

    return hook


def iter_dicom_files(paths: tuple[Path, ...]) -> Iterator[Path]:
    """The given files, and the DICOM files under the given folders (recursively, sorted)."""
    from mammosearch.ingest.dicom import is_dicom_file  # here: pydicom is slow to import

    for path in paths:
        if path.is_dir():
            for candidate in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in candidate.relative_to(path).parts)
                if candidate.is_file() and not hidden and is_dicom_file(candidate):
                    yield candidate
        else:
            yield path


@click.command("dicom")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--no-process", is_flag=True, help="Only register; leave the images pending.")
def ingest_dicom(paths: tuple[Path, ...], no_process: bool) -> None:
    """Register DICOM files (folders are searched recursively); each file commits alone."""
    from mammosearch.cli.db_commands import migrate_embedded_database
    from mammosearch.ingest.dicom_register import register_dicom
    from mammosearch.ingest.storage import ImageRejected

    settings = get_settings()
    migrate_embedded_database(settings)
    session_factory = make_session_factory(settings.database_url)
    created = known = 0
    rejected: list[str] = []
    started = time.perf_counter()
    for path in iter_dicom_files(paths):
        try:
            with session_factory() as session:
                result = register_dicom(session, path.read_bytes(), str(path), settings)
                session.commit()
        except ImageRejected as exc:
            rejected.append(str(exc))
            click.echo(f"rejected {exc}", err=True)
            continue
        created += result.created
        known += not result.created
    elapsed_s = time.perf_counter() - started
    click.echo(
        f"{created} image(s) registered, {known} already known, {len(rejected)} rejected "
        f"in {elapsed_s:.1f} s"
    )
    if created and not no_process:
        _process(settings)
    if rejected:
        raise SystemExit(1)


@click.command("dicom-listen")
@click.option("--port", default=11112, show_default=True, type=int)
@click.option("--ae-title", default="MAMMOSEARCH", show_default=True)
@click.option("--bind", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--no-process", is_flag=True, help="Only register; leave the images pending.")
def dicom_listen(port: int, ae_title: str, bind: str, no_process: bool) -> None:
    """Receive images over DICOM C-STORE (Storage SCP) and register each one."""
    from mammosearch.ingest.dicom_listener import start_listener

    settings = get_settings()
    session_factory = make_session_factory(settings.database_url)
    click.echo(f"listening as {ae_title} on {bind}:{port} (Ctrl-C stops)")
    start_listener(
        session_factory,
        settings,
        port=port,
        ae_title=ae_title,
        bind=bind,
        on_registered=[] if no_process else [background_processing(settings)],
        block=True,
    )


@click.command("orthanc-follow")
@click.option("--url", default=None, help="Orthanc base URL [MAMMOSEARCH_ORTHANC_URL].")
@click.option("--once", is_flag=True, help="Read the feed to its end, then exit.")
@click.option("--limit", default=100, show_default=True, help="Changes per request.")
@click.option("--interval-s", type=float, default=None, help="Poll interval [settings].")
@click.option("--no-process", is_flag=True, help="Only register; leave the images pending.")
def orthanc_follow(
    url: str | None, once: bool, limit: int, interval_s: float | None, no_process: bool
) -> None:
    """Register every new instance from Orthanc's change feed, resuming where it stopped."""
    from mammosearch.ingest.orthanc import OrthancError, follow_orthanc

    settings = get_settings()
    url = url or settings.orthanc_url
    if not url:
        raise click.UsageError("no Orthanc URL: pass --url or set MAMMOSEARCH_ORTHANC_URL")
    session_factory = make_session_factory(settings.database_url)
    interval_s = settings.orthanc_schedule_s if interval_s is None else interval_s
    while True:
        try:
            created = follow_orthanc(session_factory, url, settings, limit=limit)
            click.echo(f"{created} new image(s) from {url}")
            if created and not no_process:
                _process(settings)
        except OrthancError as exc:
            if once:
                raise click.ClickException(str(exc)) from exc
            click.echo(f"error: {exc}; retrying in {interval_s:.0f} s", err=True)
        if once:
            return
        time.sleep(interval_s)


@click.group("labels")
def labels() -> None:
    """Attach or correct BIRADS / pathology labels after ingestion."""


@labels.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--by", "changed_by", default=None, help="Who is making the change [$USER].")
def labels_import(file: Path, changed_by: str | None) -> None:
    """Apply FILE (CSV: a key column image_id / sop_instance_uid / patient_id /
    source_file_name, plus birads and/or pathology); each change is recorded."""
    import getpass

    from mammosearch.ingest.labels import LabelFileError, import_labels

    settings = get_settings()
    changed_by = changed_by or getpass.getuser()
    with make_session_factory(settings.database_url)() as session:
        try:
            summary = import_labels(session, file, changed_by)
        except LabelFileError as exc:
            raise click.ClickException(str(exc)) from exc
        session.commit()
    for problem in summary.unknown_keys + summary.errors:
        click.echo(f"{file}: {problem}", err=True)
    click.echo(
        f"{summary.rows} row(s): {summary.events} change(s) on {summary.images_changed} "
        f"image(s), {summary.unchanged} unchanged, "
        f"{len(summary.unknown_keys)} unknown key(s), {len(summary.errors)} bad row(s)"
    )
    if not summary.ok:
        raise SystemExit(1)


commands = [ingest_dicom, dicom_listen, orthanc_follow, labels]
