"""Every blueprint, registered in one place."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from web.api import bp as api_bp
    from web.blueprints import admin, auth, cases, evaluation, health, models, search

    for blueprint in (
        health.bp,
        auth.bp,
        search.bp,
        cases.bp,
        evaluation.bp,
        evaluation.figures_bp,
        admin.bp,
        models.bp,
        api_bp,
    ):
        app.register_blueprint(blueprint)
