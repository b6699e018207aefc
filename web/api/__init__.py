"""The JSON API under /api/v1 (bearer tokens; described at /api/v1/openapi.json)."""

from __future__ import annotations

from flask import Blueprint

from web.access import RADIOLOGY, restrict_blueprint
from web.security import csrf, protect_unless_token

bp = restrict_blueprint(Blueprint("api", __name__, url_prefix="/api/v1"), RADIOLOGY)
csrf.exempt(bp)
bp.before_request(protect_unless_token)

# One module per resource; importing registers its routes on `bp`.
from web.api import evaluations, images, openapi, search, status  # noqa: E402, F401
