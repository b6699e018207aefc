"""The OpenAPI 3.1 description of /api/v1, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from flask import jsonify
from werkzeug.wrappers import Response

from web.api import bp

_ERROR = {"$ref": "#/components/responses/Error"}
_ID_PARAM = {"name": "image_id", "in": "path", "required": True, "schema": {"type": "integer"}}

_FILTER_PROPERTIES: dict[str, Any] = {
    "k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
    "metric": {"type": "string", "description": "An indexed metric, e.g. cosine or l2."},
    "side": {"type": "string", "enum": ["L", "R"]},
    "view": {
        "type": "string",
        "examples": ["CC", "MLO"],
        "description": "A mammography view code (any case); another value is a 400 that lists "
        "the known ones.",
    },
    "modality": {
        "type": "string",
        "examples": ["subtracted", "low-energy", "MG"],
        "description": "A modality the archive holds (any case); another value is a 400 that "
        "lists the archive's.",
    },
    "birads_min": {"type": "integer", "minimum": 0, "maximum": 6},
    "birads_max": {"type": "integer", "minimum": 0, "maximum": 6},
    "pathology": {
        "type": "string",
        "examples": ["Benign", "Malignant", "Normal"],
        "description": "Normal, Benign, Malignant or another the archive holds (any case); "
        "another value is a 400 that lists them.",
    },
    "exclude_same_patient": {
        "type": "boolean",
        "description": "With image_id: leave out the query patient's own images.",
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Mammosearch API",
        "version": "1",
        "description": "Similar-case search for mammography. Every call needs "
        "`Authorization: Bearer TOKEN` (`mammosearch users token USERNAME`). "
        "Errors are `{\"error\": \"...\"}`.",
    },
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearerAuth": []}],
    "paths": {
        "/search": {
            "post": {
                "operationId": "search",
                "summary": "Find the k most similar archived images",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["image"],
                                "properties": {
                                    "image": {
                                        "type": "string",
                                        "contentMediaType": "application/octet-stream",
                                        "description": "JPEG, PNG or DICOM. With `image_id` "
                                        "as well the request is a 400: one query at a time.",
                                    },
                                    **_FILTER_PROPERTIES,
                                },
                            }
                        },
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["image_id"],
                                "properties": {
                                    "image_id": {"type": "integer"},
                                    **_FILTER_PROPERTIES,
                                },
                            }
                        },
                    },
                },
                "responses": {
                    "200": {
                        "description": "Results, nearest first",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/SearchResponse"}
                            }
                        },
                    },
                    "400": _ERROR,
                    "401": _ERROR,
                    "403": _ERROR,
                    "404": _ERROR,
                    "413": _ERROR,
                },
            }
        },
        "/images/{image_id}": {
            "get": {
                "operationId": "getImage",
                "summary": "One archived image's metadata",
                "parameters": [_ID_PARAM],
                "responses": {
                    "200": {
                        "description": "The image's metadata",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Image"}}
                        },
                    },
                    "401": _ERROR,
                    "403": _ERROR,
                    "404": _ERROR,
                },
            }
        },
        "/images/{image_id}/file": {
            "get": {
                "operationId": "getImageFile",
                "summary": "The image itself (JPEG or PNG)",
                "parameters": [_ID_PARAM],
                "responses": {
                    "200": {
                        "description": "The pixels",
                        "content": {
                            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                            "image/png": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "401": _ERROR,
                    "403": _ERROR,
                    "404": _ERROR,
                },
            }
        },
        "/status": {
            "get": {
                "operationId": "getStatus",
                "summary": "Ingestion status: images per status, lag, failures (admins)",
                "responses": {
                    "200": {
                        "description": "The status",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "401": _ERROR,
                    "403": _ERROR,
                },
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
                    "200": {
                        "description": "Runs, newest first",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "evaluations": {
                                            "type": "array",
                                            "items": {
                                                "$ref": "#/components/schemas/EvaluationRun"
                                            },
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "401": _ERROR,
                    "403": _ERROR,
                },
            }
        },
        "/evaluations/{run_id}": {
            "get": {
                "operationId": "getEvaluation",
                "summary": "One evaluation run (admins)",
                "parameters": [
                    {
                        "name": "run_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The run",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/EvaluationRun"}
                            }
                        },
                    },
                    "401": _ERROR,
                    "403": _ERROR,
                    "404": _ERROR,
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
    },
    "components": {
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        "responses": {
            "Error": {
                "description": "What went wrong, naming the input",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["error"],
                            "properties": {"error": {"type": "string"}},
                        }
                    }
                },
            }
        },
        "schemas": {
            "Hit": {
                "type": "object",
                "required": ["image_id", "patient_id", "distance", "similarity"],
                "properties": {
                    "rank": {"type": "integer"},
                    "image_id": {"type": "integer"},
                    "patient_id": {"type": "string", "description": "The source's patient id."},
                    "distance": {"type": "number"},
                    "similarity": {"type": "number"},
                    "birads": {"type": ["integer", "null"]},
                    "birads_raw": {"type": ["string", "null"]},
                    "pathology": {"type": ["string", "null"]},
                    "side": {"type": ["string", "null"]},
                    "view": {"type": ["string", "null"]},
                    "modality": {"type": ["string", "null"]},
                    "findings": {"type": ["string", "null"]},
                    "report_excerpt": {"type": ["string", "null"]},
                    "image_url": {"type": "string"},
                    "case_url": {"type": "string"},
                },
            },
            "SearchResponse": {
                "type": "object",
                "required": ["results", "suggested_birads", "timing_ms", "embedding_space"],
                "properties": {
                    "results": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}},
                    "suggested_birads": {
                        "type": "object",
                        "properties": {
                            "birads": {"type": ["integer", "null"]},
                            "distribution": {
                                "type": "object",
                                "additionalProperties": {"type": "number"},
                            },
                            "votes": {"type": "object"},
                            "confidence": {"type": "number"},
                            "neighbours": {"type": "integer"},
                            "rule": {"type": "string"},
                            "note": {
                                "type": "string",
                                "description": "Decision support, not a diagnosis.",
                            },
                            "measured": {
                                "type": "object",
                                "description": "The vote's cross-validated accuracy in this "
                                "space (accuracy, balanced_accuracy, per_class_recall, source); "
                                "empty when not measured.",
                            },
                            "measured_recall_of_this_class": {"type": ["number", "null"]},
                        },
                    },
                    "timing_ms": {
                        "type": "object",
                        "properties": {
                            stage: {"type": "number"}
                            for stage in ("embed", "index", "join", "total")
                        },
                    },
                    "embedding_space": {
                        "type": "object",
                        "description": "Backbone, weights and whether they are pretrained; "
                        "`untrained: true` means results are not clinically meaningful.",
                    },
                },
            },
            "Image": {
                "type": "object",
                "properties": {
                    "image_id": {"type": "integer"},
                    "patient_id": {"type": "string"},
                    "side": {"type": ["string", "null"]},
                    "view": {"type": ["string", "null"]},
                    "modality": {"type": "string"},
                    "width": {"type": "integer"},
                    "height": {"type": "integer"},
                    "birads": {"type": ["integer", "null"]},
                    "pathology": {"type": ["string", "null"]},
                    "findings": {"type": ["string", "null"]},
                    "status": {"type": "string"},
                    "segmentations": {"type": "array", "items": {"type": "object"}},
                },
            },
            "EvaluationRun": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "status": {"type": "string"},
                    "protocol": {"type": "string"},
                    "label": {"type": "string"},
                    "metric": {"type": "string"},
                    "metrics": {"type": "object"},
                    "per_class": {"type": "object"},
                    "started_at": {"type": "string", "format": "date-time"},
                    "finished_at": {"type": ["string", "null"], "format": "date-time"},
                },
            },
        },
    },
}


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(OPENAPI)
