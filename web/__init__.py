"""The Flask service: pages for radiologists and admins, and the JSON API under /api/v1."""

from __future__ import annotations

from typing import Any

from flask import Flask

from mammosearch.ingest.storage import allow_pixels
from mammosearch.logs import configure_logging


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app; `config` overrides settings (tests: TESTING, DATABASE_URL, DATA_DIR)."""
    from web import (
        auth,
        blueprints,
        configuration,
        db,
        handlers,
        limiter,
        metrics,
        public_names,
        request_limits,
        security,
    )

    app = Flask(__name__)
    configuration.init_app(app, config)
    configure_logging(app.extensions["mammosearch_settings"])  # JSON + scrubbed, as workers
    allow_pixels(app.extensions["mammosearch_settings"].max_image_pixels)  # before threads
    db.init_app(app)
    metrics.init_app(app)  # first: it times every request, refused ones included
    auth.init_app(app)  # before CSRF: an anonymous POST is sent to sign in, not told "bad token"
    security.init_app(app)
    limiter.init_app(app)
    handlers.init_app(app)
    public_names.init_app(app)  # no server path in any page
    request_limits.init_app(app)  # before the blueprints: their routes take its converter
    blueprints.init_app(app)
    return app
