"""`mammosearch serve`: the web service, under gunicorn (production-like) or werkzeug."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import click

# The path only (%(U)s), never the query string: search filters may carry patient ids. The
# same format as deploy/gunicorn.conf.py (a test keeps the two equal).
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'


EMBEDDED_SWEEP_INTERVAL_S = 60.0
"""How often `serve` without a broker does what the sweep does for the workers."""


def _start_embedded_sweep(app: Any) -> None:
    """No broker, no sweep: the server itself releases claims a killed `ingest` or `embed`
    left, removes its temp files, and finishes lost work (embedding, indexing, verifying
    the indexes against the database and repairing them: a segment changed on disk after
    it was loaded is found here), at start and then every EMBEDDED_SWEEP_INTERVAL_S, in one
    thread. It also measures the neighbour vote of an active space that was never measured
    (beat's "measure-new-space" where there is a broker): search shows no suggestion until
    then, so a first run's base space and a newly activated one are measured at once."""
    import threading

    from mammosearch.evaluate.scheduled import run_scheduled_evaluations
    from mammosearch.jobs.reconcile import reconcile

    queue = app.extensions["mammosearch_work_queue"]
    if queue.mode != "in-process":
        return
    settings = app.extensions["mammosearch_settings"]
    log = logging.getLogger("mammosearch.serve")

    def _sweep() -> None:
        stop = threading.Event()
        while True:
            try:
                summary = reconcile(settings, queue)
                if summary.expired_claims:
                    log.warning("released %d abandoned claims", len(summary.expired_claims))
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("the embedded sweep failed")
            try:
                measured = run_scheduled_evaluations(
                    settings, write_report=False, trigger="schedule", unmeasured_only=True
                )
                if measured:
                    log.info("measured a new space's neighbour vote (runs %s)", measured)
            except Exception:  # noqa: BLE001 - a failed run is stored; the next round skips it
                log.exception("measuring a new space's vote failed")
            stop.wait(EMBEDDED_SWEEP_INTERVAL_S)

    threading.Thread(target=_sweep, name="embedded sweep", daemon=True).start()


def _run_gunicorn(
    app: Any, host: str, port: int, threads: int, in_worker: Callable[[], None]
) -> None:
    """`in_worker` runs in the worker after the fork: a thread started before it (the sweep)
    could hold a lock (the database pool's, sqlite's) at the fork, and the worker's requests
    would wait on it for ever."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.glogging import Logger

    class _RootLogger(Logger):
        """Gunicorn's records through the root handler: scrubbed, JSON when configured."""

        def setup(self, cfg):  # type: ignore[no-untyped-def]
            super().setup(cfg)
            for gunicorn_log in (self.error_log, self.access_log):
                for handler in list(gunicorn_log.handlers):
                    gunicorn_log.removeHandler(handler)
                gunicorn_log.propagate = True

    class _EmbeddedGunicorn(BaseApplication):
        """Gunicorn serving an already-built app: one worker, several threads."""

        def load_config(self) -> None:
            options = {
                "bind": f"{host}:{port}",
                "workers": 1,
                "worker_class": "gthread",
                "threads": threads,
                "timeout": 120,
                "accesslog": "-",
                "access_log_format": ACCESS_LOG_FORMAT,
                "logger_class": _RootLogger,
                "control_socket_disable": True,  # its default path is shared per host
                "post_worker_init": lambda _worker: in_worker(),
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    _EmbeddedGunicorn().run()


AUTO_TRAIN_CHILD = "from mammosearch.cli import main; main(prog_name='mammosearch')"


def _start_auto_training() -> None:
    """Embedded default (no broker): `auto-train --watch` in a child process beside the server.

    A process of its own, so its low CPU priority (os.nice) covers every thread torch
    starts, and the server's request threads never wait for it. With a broker, beat asks
    the `train` queue's worker instead (workers/schedule.py).
    """
    import subprocess
    import sys

    from mammosearch.config import get_settings

    settings = get_settings()
    if not settings.tasks_in_process or not settings.auto_train:
        return
    subprocess.Popen(  # noqa: S603 - our own command line, no user input
        [sys.executable, "-c", AUTO_TRAIN_CHILD, "auto-train", "--watch"],
        stdin=subprocess.DEVNULL,
    )


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=int, help="Port to listen on.")
@click.option("--threads", default=4, show_default=True, type=int, help="Request threads.")
@click.option("--dev", is_flag=True, help="Use werkzeug's development server instead.")
def serve(host: str, port: int, threads: int, dev: bool) -> None:
    """Serve the web pages and the /api/v1 API (production: gunicorn "web:create_app()")."""
    from web import create_app

    app = create_app()
    _start_auto_training()
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        dev = True
    if dev:
        from mammosearch.logs import QueryStringFilter

        logging.getLogger("werkzeug").addFilter(QueryStringFilter())
        _start_embedded_sweep(app)
        app.run(host=host, port=port, threaded=True)
    else:
        _run_gunicorn(app, host, port, threads, lambda: _start_embedded_sweep(app))


commands = [serve]
