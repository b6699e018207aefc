"""Every blueprint, registered in one place."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from web import formatting
    from web.api import bp as api_bp
    from web.blueprints import admin, auth, cases, evaluation, health, launch, models, search
    from web.blueprints.admin_audit import audit_log  # noqa: F401 - routes on admin.bp
    from web.blueprints.admin_ingestion import ingestion  # noqa: F401 - routes on admin.bp

    formatting.init_app(app)  # the `bytes`, `duration` and `metric` filters the pages use
    for blueprint in (
        health.bp,
        auth.bp,
        search.bp,
        launch.bp,
        cases.bp,
        evaluation.bp,
        evaluation.figures_bp,
        admin.bp,
        models.bp,
        api_bp,
    ):
        app.register_blueprint(blueprint)
