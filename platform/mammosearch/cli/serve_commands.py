"""`mammosearch serve`: the web service, under gunicorn (production-like) or werkzeug."""

from __future__ import annotations

from typing import Any

import click


def _run_gunicorn(app: Any, host: str, port: int, threads: int) -> None:
    from gunicorn.app.base import BaseApplication

    class _EmbeddedGunicorn(BaseApplication):  # type: ignore[misc]
        """Gunicorn serving an already-built app: one worker, several threads."""

        def load_config(self) -> None:
            options = {
                "bind": f"{host}:{port}",
                "workers": 1,
                "worker_class": "gthread",
                "threads": threads,
                "timeout": 120,
                "accesslog": "-",
                "control_socket_disable": True,  # its default path is shared per host
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    _EmbeddedGunicorn().run()


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=int, help="Port to listen on.")
@click.option("--threads", default=4, show_default=True, type=int, help="Request threads.")
@click.option("--dev", is_flag=True, help="Use werkzeug's development server instead.")
def serve(host: str, port: int, threads: int, dev: bool) -> None:
    """Serve the web pages and the /api/v1 API (production: gunicorn "web:create_app()")."""
    from web import create_app

    app = create_app()
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        dev = True
    if dev:
        app.run(host=host, port=port, threaded=True)
    else:
        _run_gunicorn(app, host, port, threads)


commands = [serve]
