"""The OpenAPI 3.1 document of the HTTP API, served at ``/openapi.json``.

A test checks that its paths and methods are exactly the Flask routes, and a
property-based fuzz (schemathesis) drives the API from it.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..config import Settings
from .validation import MAX_ID_LENGTH, MAX_LIST

__all__ = ["openapi_document"]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return {"description": description, **_json(_ref("Error"))}


_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}
_ID_LIST = {"type": "array", "items": _ref("Id"), "maxItems": MAX_LIST}
_BEARER = [{"bearer": []}]
_OPEN: list = []


def _path_id(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": _ref("Id")}


def _k(max_k: int) -> dict:
    return {
        "name": "k",
        "in": "query",
        "required": False,
        "description": "How many items to return.",
        "schema": {"type": "integer", "minimum": 1, "maximum": max_k, "default": 10},
    }


def _op(summary: str, responses: dict, **extra: Any) -> dict:
    out = {"summary": summary, **extra}
    out["responses"] = {**responses, "default": _error("An error (see the code)")}
    return out


def openapi_document(settings: Settings | None = None) -> dict[str, Any]:
    """The document for ``settings`` (``k``'s maximum and body limit come from it)."""
    settings = settings or Settings()
    max_k = settings.max_k
    guarded = _BEARER if settings.api_token else _OPEN
    k = _k(max_k)
    ok_rec = {"200": {"description": "Top-k items", **_json(_ref("Recommendations"))}}
    features_ops = {}
    for kind, singular in (("users", "user"), ("items", "item")):
        pid = _path_id(f"{singular}_id")
        note = (
            " An item put with features becomes recommendable within seconds, without "
            "retraining; a deleted item stops being recommended."
            if kind == "items"
            else ""
        )
        features_ops[f"/v1/{kind}/{{{singular}_id}}/features"] = {
            "parameters": [pid],
            "get": _op(
                f"The stored features of a {singular}",
                {"200": {"description": "Features", **_json(_ref("StoredFeatures"))}},
            ),
            "put": _op(
                f"Replace the features of a {singular}.{note}",
                {"200": {"description": "Stored", **_json(_ref("StoredFeatures"))}},
                requestBody={"required": True, **_json(_ref("FeaturesBody"))},
                security=guarded,
            ),
            "delete": _op(
                f"Delete the features of a {singular}.{note}",
                {"204": {"description": "Deleted"}},
                security=guarded,
            ),
        }
    paths: dict[str, Any] = {
        "/v1/users/{user_id}/recommendations": {
            "get": _op(
                "Top-k items for a user, from their stored features and seen items",
                ok_rec,
                parameters=[
                    _path_id("user_id"),
                    k,
                    {
                        "name": "exclude_seen",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "boolean", "default": True},
                    },
                    {
                        "name": "exclude",
                        "in": "query",
                        "required": False,
                        "description": "Comma-separated item ids never to return.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "exact",
                        "in": "query",
                        "required": False,
                        "description": "Score every item exactly (an audit of the index).",
                        "schema": {"type": "boolean", "default": False},
                    },
                ],
            )
        },
        "/v1/recommendations": {
            "post": _op(
                "Top-k items for a user and/or inline features, optionally among candidates",
                ok_rec,
                requestBody={"required": True, **_json(_ref("RecommendationRequest"))},
            )
        },
        "/v1/items/{item_id}/similar": {
            "get": _op(
                "Items nearest to an item in latent space (cosine)",
                {"200": {"description": "Similar items", **_json(_ref("SimilarItems"))}},
                parameters=[_path_id("item_id"), k],
            )
        },
        **features_ops,
        "/v1/interactions": {
            "post": _op(
                "Append interactions to the log and the users' seen items",
                {"202": {"description": "Accepted", **_json(_ref("Accepted"))}},
                requestBody={"required": True, **_json(_ref("InteractionsBody"))},
                security=guarded,
            )
        },
        "/v1/model": {
            "get": _op(
                "The model version served by this worker",
                {"200": {"description": "Model", **_json(_ref("Model"))}},
            )
        },
        "/v1/admin/reload": {
            "post": _op(
                "Check the registry now and load its current version if it is new",
                {"200": {"description": "Reloaded or current", **_json(_ref("Reload"))}},
                parameters=[
                    {
                        "name": "force",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "boolean", "default": False},
                    }
                ],
                security=guarded,
            )
        },
        "/healthz": {
            "get": _op("Liveness", {"200": {"description": "Alive", **_json(_ref("Status"))}})
        },
        "/readyz": {
            "get": _op(
                "Readiness: 503 until a model is loaded",
                {"200": {"description": "Ready", **_json(_ref("Status"))}},
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics (text exposition format)",
                {
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        "/openapi.json": {
            "get": _op(
                "This document",
                {"200": {"description": "OpenAPI document", **_json({"type": "object"})}},
            )
        },
    }
    weight = {"type": "number", "minimum": 0}
    features = {
        "type": "object",
        "description": f"feature name (1..{MAX_ID_LENGTH} characters) -> finite weight >= 0",
        "propertyNames": {"minLength": 1, "maxLength": MAX_ID_LENGTH},
        "additionalProperties": weight,
    }
    scored = {
        "type": "object",
        "required": ["item_id", "score"],
        "properties": {"item_id": _ref("Id"), "score": {"type": "number"}},
    }
    schemas = {
        "Id": _ID,
        "Features": features,
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "RecommendationRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "user_id": {**_ID, "type": ["string", "null"]},
                "features": {**features, "type": ["object", "null"]},
                "k": {"type": "integer", "minimum": 1, "maximum": max_k, "default": 10},
                "exclude": _ID_LIST,
                "exclude_seen": {"type": "boolean", "default": True},
                "items": {**_ID_LIST, "type": ["array", "null"]},
                "exact": {"type": "boolean", "default": False},
            },
        },
        "Recommendations": {
            "type": "object",
            "required": [
                "user_id",
                "model_version",
                "strategy",
                "user_case",
                "items",
                "unscorable",
                "degraded",
                "retrieval",
            ],
            "properties": {
                "user_id": {"type": ["string", "null"]},
                "model_version": {"type": "string"},
                "strategy": {"type": "string", "enum": ["personalized", "baseline"]},
                "user_case": {
                    "type": "string",
                    "enum": ["known_with_features", "known", "new_with_features", "unknown"],
                },
                "items": {"type": "array", "items": scored},
                "unscorable": {"type": "array", "items": {"type": "string"}},
                "degraded": {
                    "type": "boolean",
                    "description": "true when the feature store was unreachable and the "
                    "answer comes from the model alone",
                },
                "retrieval": {
                    "type": "string",
                    "enum": ["exact", "approximate"],
                    "description": "which search answered: every item scored, or the index",
                },
            },
        },  # fmt: skip
        "SimilarItems": {
            "type": "object",
            "required": ["item_id", "model_version", "items"],
            "properties": {
                "item_id": {"type": "string"},
                "model_version": {"type": "string"},
                "items": {"type": "array", "items": scored},
            },
        },
        "FeaturesBody": {
            "type": "object",
            "required": ["features"],
            "additionalProperties": False,
            "properties": {"features": features},
        },
        "StoredFeatures": {
            "type": "object",
            "required": ["features"],
            "properties": {
                "user_id": {"type": "string"},
                "item_id": {"type": "string"},
                "features": {"type": "object", "additionalProperties": {"type": "number"}},
            },
        },
        "InteractionsBody": {
            "type": "object",
            "required": ["interactions"],
            "additionalProperties": False,
            "properties": {
                "interactions": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["user_id", "item_id"],
                        "additionalProperties": False,
                        "properties": {
                            "user_id": _ref("Id"),
                            "item_id": _ref("Id"),
                            "weight": weight,
                            "timestamp": {
                                "description": "unix seconds or ISO-8601 (default: now)",
                                "oneOf": [
                                    {
                                        "type": "integer",
                                        "minimum": -(2**63),
                                        "maximum": 2**63 - 1,
                                    },
                                    {"type": "string", "format": "date-time"},
                                ],
                            },
                        },
                    },
                }
            },
        },
        "Accepted": {
            "type": "object",
            "required": ["accepted"],
            "properties": {"accepted": {"type": "integer"}},
        },
        "Model": {
            "type": "object",
            "required": ["model_version", "items", "snapshot_age_seconds"],
            "properties": {
                "model_version": {"type": "string"},
                "created_at": {"type": ["string", "null"]},
                "loaded_at": {"type": "string"},
                "snapshot_age_seconds": {"type": "number"},
                "items": {"type": "integer"},
                "overlay_items": {"type": "integer"},
                "users": {"type": "integer"},
                "components": {"type": "integer"},
                "sizes": {"type": "object"},
                "metrics": {"type": "object"},
                "store": {"type": "string", "enum": ["ok", "unavailable"]},
                "blas_threads": {"type": ["integer", "null"]},
            },
        },
        "Reload": {
            "type": "object",
            "required": ["model_version", "reloaded"],
            "properties": {
                "model_version": {"type": "string"},
                "reloaded": {"type": "boolean"},
            },
        },
        "Status": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string"},
                "model_version": {"type": "string"},
                "store": {"type": "string"},
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hybridrec",
            "version": __version__,
            "description": "Recommendations from a LightFM hybrid model, for known and new "
            'users and items. Errors are {"error": {"code", "message"}}. Request '
            f"bodies are JSON of at most {settings.max_body_bytes} bytes. Writes and admin "
            "calls need 'Authorization: Bearer <token>' when HYBRIDREC_API_TOKEN is set "
            "(their operations then list the bearer scheme).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
