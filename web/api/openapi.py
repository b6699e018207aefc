"""The OpenAPI 3.1 description of /api/v1, generated from the request and response models.

Served at /api/v1/openapi.json. The search request is mammosearch.search.request's model
(the one the server validates with); the responses are web.api.schemas'. Only what the
models cannot say (paths, media types, status codes) is written here.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import jsonify
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from werkzeug.wrappers import Response

from mammosearch.search.request import SearchRequest
from web.api import bp, schemas

REF = "#/components/schemas/{model}"
ERROR = {"$ref": "#/components/responses/Error"}
UPLOAD_FIELD = {
    "type": "string",
    "contentMediaType": "application/octet-stream",
    "description": "JPEG, PNG or DICOM. With unit=case, 1-4 `image` parts: the views of one "
    "breast (files of both sides are a 400 that says so). With `image_id` (or a case query) "
    "as well the request is a 400: one query at a time.",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): ERROR for code in codes}


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}


def _search_bodies() -> dict[str, Any]:
    """The same request model as JSON (with image_id) and as a form (with the file)."""
    request = _ref(SearchRequest)
    # The form repeats the model's fields beside the file: the model forbids unknown fields
    # (additionalProperties false), so an allOf of it could not add `image`.
    fields = SearchRequest.model_json_schema(ref_template=REF)["properties"]
    return {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {**fields, "image": UPLOAD_FIELD},
                "additionalProperties": False,
            }
        },
        "application/json": {
            "schema": {
                "allOf": [request],
                "type": "object",
                "description": "An archived query: image_id, or with unit=case case_id, or "
                "patient_id (or study_uid) and breast.",
            }
        },
    }


def _paths() -> dict[str, Any]:
    return {
        "/search": {
            "post": {
                "operationId": "search",
                "summary": "Find the k most similar archived images (unit=image) or cases "
                "(unit=case)",
                "requestBody": {"required": True, "content": _search_bodies()},
                "responses": {
                    "200": {
                        "description": "Results in `ranking` order; the body's `unit` says which",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        _ref(schemas.SearchResponse),
                                        _ref(schemas.CaseSearchResponse),
                                    ],
                                    "discriminator": {
                                        "propertyName": "unit",
                                        "mapping": {
                                            "image": REF.format(
                                                model=schemas.SearchResponse.__name__
                                            ),
                                            "case": REF.format(
                                                model=schemas.CaseSearchResponse.__name__
                                            ),
                                        },
                                    },
                                }
                            }
                        },
                    },
                    **_errors(400, 401, 403, 404, 413),
                },
            }
        },
        "/images/{image_id}": {
            "get": {
                "operationId": "getImage",
                "summary": "One archived image's metadata",
                "parameters": [_path_id("image_id")],
                "responses": {
                    "200": _json(schemas.Image, "The image's metadata"),
                    **_errors(400, 401, 403, 404),
                },
            }
        },
        "/images/{image_id}/file": {
            "get": {
                "operationId": "getImageFile",
                "summary": "The image itself (JPEG or PNG)",
                "parameters": [_path_id("image_id")],
                "responses": {
                    "200": {
                        "description": "The pixels",
                        "content": {
                            f"image/{kind}": {"schema": {"type": "string", "format": "binary"}}
                            for kind in ("jpeg", "png")
                        },
                    },
                    **_errors(400, 401, 403, 404),
                },
            }
        },
        "/status": {
            "get": {
                "operationId": "getStatus",
                "summary": "Ingestion status: images per status, lag, failures (admins)",
                "responses": {"200": _json(schemas.Status, "The status"), **_errors(401, 403)},
            }
        },
        "/evaluations": {
            "get": {
                "operationId": "listEvaluations",
                "summary": "The latest evaluation runs with their metrics (admins)",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                    }
                ],
                "responses": {
                    "200": _json(schemas.EvaluationList, "Runs, newest first"),
                    **_errors(401, 403),
                },
            }
        },
        "/evaluations/{run_id}": {
            "get": {
                "operationId": "getEvaluation",
                "summary": "One evaluation run (admins)",
                "parameters": [_path_id("run_id")],
                "responses": {
                    "200": _json(schemas.EvaluationRun, "The run"),
                    **_errors(400, 401, 403, 404),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The whole document; the component schemas come from the models."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (SearchRequest, "validation"),
        *((model, "serialization") for model in schemas.RESPONSE_MODELS),
    ]
    _, definitions = models_json_schema(models, ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Mammosearch API",
            "version": "1",
            "description": "Similar-case search for mammography. Every call needs "
            "`Authorization: Bearer TOKEN` (`mammosearch users token USERNAME`). "
            'Errors are `{"error": "..."}`.',
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearerAuth": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": _json(schemas.Error, "What went wrong, naming the input")},
            "schemas": definitions["$defs"],
        },
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())
