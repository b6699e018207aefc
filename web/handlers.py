"""Errors as JSON `{"error": ...}` for the API and as a page for people; never a stack trace."""

from __future__ import annotations

import logging

from flask import Flask, current_app, jsonify, render_template
from werkzeug.exceptions import (
    HTTPException,
    InternalServerError,
    RequestEntityTooLarge,
    ServiceUnavailable,
)
from werkzeug.sansio.response import Response as SansioResponse  # HTTPException.response

from mammosearch.durable.disk_full import full_disk_message
from mammosearch.pipeline.index_health import IndexRepairing
from web.auth import is_api_request
from web.configuration import settings

log = logging.getLogger(__name__)


def _message(error: HTTPException) -> str:
    if isinstance(error, RequestEntityTooLarge):
        limit_mb = current_app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024)
        return f"upload too large: the limit is {limit_mb:.0f} MB (MAMMOSEARCH_MAX_UPLOAD_BYTES)"
    return error.description or error.name


def _respond(error: HTTPException) -> SansioResponse | HTTPException:
    if error.code is None:
        return error
    if error.response is not None:  # made for the occasion (the sign-in limit's page)
        return error.response
    message = _message(error)
    if is_api_request():
        response = jsonify(error=message)
    else:
        response = current_app.make_response(
            render_template("error.html", code=error.code, message=message)
        )
    response.status_code = error.code
    passed_on = dict(error.get_headers())
    for name in ("Retry-After", "WWW-Authenticate", "Allow"):
        if name in passed_on:
            response.headers[name] = passed_on[name]
    return response


class InsufficientStorage(HTTPException):
    code = 507
    description = "the server's disk is full"


def _unexpected(error: Exception) -> SansioResponse | HTTPException:
    if isinstance(error, HTTPException):
        return _respond(error)
    damaged = _damaged_database(error)
    if damaged is not None:
        return _respond(ServiceUnavailable(damaged))
    if isinstance(error, IndexRepairing):  # any page that searches: never a 500 for it
        log.error("%s", error)
        return _respond(ServiceUnavailable(error.health.summary()))
    full = full_disk_message(error, settings())
    if full:  # the operator's to fix: say what is full and where, not "internal error"
        log.error("disk full: %s", full)
        return _respond(InsufficientStorage(full))
    log.exception("unhandled error", exc_info=error)
    return _respond(InternalServerError("internal error; the server log has the details"))


def _damaged_database(error: Exception) -> str | None:
    """The public message for a damaged embedded database file (the log has its path)."""
    from sqlalchemy.exc import DatabaseError

    from mammosearch.db.session import damaged_database_message

    if not isinstance(error, DatabaseError):
        return None
    url = settings().database_url
    logged = damaged_database_message(url, error)
    if logged is None:
        return None
    log.error("%s", logged)
    return damaged_database_message(url, error, full_path=False)


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, _respond)
    app.register_error_handler(Exception, _unexpected)
