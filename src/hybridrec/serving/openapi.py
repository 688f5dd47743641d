"""The OpenAPI 3.1 document of the HTTP API, derived from :mod:`.validation`'s declarations.

:func:`operations` lists every route once (method, path, parameters, body, responses, token
rule); :func:`openapi_document` turns the msgspec declarations into JSON Schema, so the
schemas the document shows are the ones requests are validated against. A test checks that
the document's paths and methods are exactly the Flask routes (both ways), that its token
rules are the server's, and fuzzes the real server from it (schemathesis).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .. import __version__
from ..config import Settings
from . import validation as v

__all__ = ["FORCED_RELOAD_INTERVAL", "Operation", "openapi_document", "operations"]

FORCED_RELOAD_INTERVAL = 10.0  # seconds between forced reloads in one worker

_ERRORS = {
    400: "Bad parameters or a body that is not JSON (invalid_parameter, invalid_json)",
    401: "Missing or wrong token (unauthorized)",
    404: "Unknown id (not_found), or an item the model cannot represent (unscorable)",
    413: "Body over the size limit (body_too_large)",
    414: "Request line over 4094 bytes, refused by the HTTP server (gunicorn) before the API "
    "sees it, so not JSON: send long exclude lists with POST /v1/recommendations",
    415: "Body not sent as application/json (unsupported_media_type)",
    422: "Body breaks a rule; the message names the field and what it allows (invalid_body)",
    429: "Too many forced reloads (rate_limited); see the Retry-After header",
    409: "The registry did not move (conflict, refused, invalid_artifact); the message says why",
    503: "No model loaded yet (no_model), or the feature store is unavailable (store_unavailable)",
}


@dataclass(frozen=True)
class Operation:
    """One route of the API as the document describes it."""

    method: str
    path: str
    summary: str
    responses: dict[int, tuple[str, Any]]  # status -> (description, Struct type or None)
    params: Any = None  # a Struct of the path and query parameters
    body: Any = None  # a Struct of the JSON body
    guarded: bool = False  # needs the bearer token when HYBRIDREC_API_TOKEN is set
    errors: tuple[int, ...] = ()  # besides 400 (any /v1/ route), 401, 413, 415 and 422
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def operations(settings: Settings) -> list[Operation]:
    """Every operation of the API; ``settings.max_k`` bounds ``k``."""
    d = v.declarations(settings.max_k)
    ops = [
        Operation(
            "get",
            "/v1/users/{user_id}/recommendations",
            "Top-k items for a user, from their stored features and seen items",
            {200: ("Top-k items", v.Recommendations)},
            params=d.UserRecommendationParams,
            errors=(414, 503),
        ),
        Operation(
            "post",
            "/v1/recommendations",
            "Top-k items for a user and/or inline features, optionally among candidates",
            {200: ("Top-k items", v.Recommendations)},
            body=d.RecommendationRequest,
            errors=(503,),
        ),
        Operation(
            "get",
            "/v1/items/{item_id}/similar",
            "Items nearest to an item in latent space (cosine)",
            {200: ("Similar items", v.SimilarItems)},
            params=d.SimilarParams,
            errors=(404, 503),
        ),
    ]
    for kind, singular, params, stored in (
        ("users", "user", v.UserFeaturesParams, v.UserFeatures),
        ("items", "item", v.ItemFeaturesParams, v.ItemFeatures),
    ):
        path = f"/v1/{kind}/{{{singular}_id}}/features"
        note = (
            " An item put with features becomes recommendable within seconds, without "
            "retraining; a deleted item stops being recommended."
            if kind == "items"
            else ""
        )
        reads = (
            "Item features are public."
            if kind == "items"
            else "A user's data: needs the token when one is set."
        )
        ops += [
            Operation(
                "get",
                path,
                f"The stored features of a {singular}",
                {200: ("Features", stored)},
                params=params,
                guarded=kind == "users",
                errors=(404, 503),
                description=reads,
            ),
            Operation(
                "put",
                path,
                f"Replace the features of a {singular}",
                {200: ("Stored; unknown_features counts names the model ignores", stored)},
                params=params,
                body=v.FeaturesBody,
                guarded=True,
                errors=(503,),
                description=note.strip(),
            ),
            Operation(
                "delete",
                path,
                f"Delete the features of a {singular}",
                {204: ("Deleted", None)},
                params=params,
                guarded=True,
                errors=(404, 503),
                description=note.strip(),
            ),
        ]
    ops += [
        Operation(
            "get",
            "/v1/items/{item_id}/metadata",
            "What a person reads about an item (title, ...); never used for scoring",
            {200: ("Metadata", v.StoredMetadata)},
            params=v.ItemMetadataParams,
            errors=(404, 503),
            description="Item metadata is public.",
        ),
        Operation(
            "put",
            "/v1/items/{item_id}/metadata",
            "Replace the metadata of an item ({} removes it); recommendations and similar "
            "items carry it from the next request",
            {200: ("Stored", v.StoredMetadata)},
            params=v.ItemMetadataParams,
            body=v.MetadataBody,
            guarded=True,
            errors=(503,),
        ),
        Operation(
            "post",
            "/v1/interactions",
            "Append interactions to the log and the users' seen items",
            {202: ("Accepted", v.Accepted)},
            body=v.InteractionsBody,
            guarded=True,
            errors=(503,),
        ),
        Operation(
            "get",
            "/v1/model",
            "The model version served by this worker",
            {200: ("Model", v.ModelInfo)},
            errors=(503,),
        ),
        Operation(
            "post",
            "/v1/admin/reload",
            "Check the registry now and load its current version if it is new",
            {200: ("Reloaded or current", v.Reload)},
            params=v.ReloadParams,
            guarded=True,
            errors=(429, 503),
            description="A forced reload reads the artifact and the whole catalog again "
            "(about 2 s for 9,000 items): each worker runs at most one per "
            f"{FORCED_RELOAD_INTERVAL:.0f} s and answers 429 with Retry-After otherwise.",
        ),
        Operation("get", "/healthz", "Liveness", {200: ("Alive", v.Status)}),
        Operation(
            "get",
            "/readyz",
            "Readiness: 503 until a model is loaded",
            {200: ("Ready", v.Status)},
            errors=(503,),
        ),
        Operation(
            "get",
            "/metrics",
            "Prometheus metrics (text exposition format)",
            {200: ("Metrics", None)},
            extra={"content": {"text/plain": {"schema": {"type": "string"}}}},
        ),
        Operation(
            "get",
            "/openapi.json",
            "This document",
            {200: ("OpenAPI document", None)},
            extra={"content": {"application/json": {"schema": {"type": "object"}}}},
        ),
    ]
    return ops + _operator_operations()


# -- the operator's routes and the web console (serving/operate.py, serving/console/) --------


def _operator_operations() -> list[Operation]:
    binary = {"schema": {"type": "string", "format": "binary"}}
    return [
        Operation(
            "get",
            "/v1/models",
            "The registry's versions, newest first: status, metrics, training data, reports",
            {200: ("Versions", v.ModelVersions)},
            params=v.ModelsParams,
            errors=(503,),
        ),
        Operation(
            "get",
            "/v1/models/{version}/reports",
            "Names of the reports written beside a version",
            {200: ("Reports", v.Reports)},
            params=v.ReportsParams,
            errors=(404,),
        ),
        Operation(
            "get",
            "/v1/models/{version}/reports/{name}",
            "One report: JSON, a PNG chart, text, or other bytes (as an attachment)",
            {200: ("The report", None)},
            params=v.ReportParams,
            errors=(404,),
            extra={
                "content": {
                    "application/json": {"schema": {}},
                    "image/png": binary,
                    "text/plain": {"schema": {"type": "string"}},
                    "application/octet-stream": binary,
                }
            },
        ),
        Operation(
            "post",
            "/v1/admin/models/{version}/promote",
            "Make a stored version current (its artifact is verified first)",
            {200: ("The pointer moved; this worker serves the version", v.PointerMove)},
            params=v.PromoteParams,
            guarded=True,
            errors=(404, 409, 503),
            description="Every worker loads it within HYBRIDREC_RELOAD_INTERVAL seconds. A "
            "version the quality gate refused needs force=true.",
        ),
        Operation(
            "post",
            "/v1/admin/rollback",
            "Move the pointer back to the previous version in the history",
            {200: ("The pointer moved back", v.PointerMove)},
            params=v.RollbackParams,
            guarded=True,
            errors=(409, 503),
            description="The version rolled back from is marked rolled_back.",
        ),
        Operation(
            "get",
            "/v1/users/{user_id}/seen",
            "The items a user interacted with (sorted by id)",
            {200: ("Seen items", v.SeenItems)},
            params=v.SeenParams,
            guarded=True,
            errors=(503,),
            description="A user's data: needs the token when one is set.",
        ),
        Operation(
            "get",
            "/v1/model/features",
            "Feature names the served model knows (to describe a new visitor or item)",
            {200: ("Vocabulary", v.Vocabulary)},
            params=v.VocabularyParams,
            errors=(503,),
        ),
        Operation(
            "get",
            "/v1/items",
            "Search items by id or title",
            {200: ("Items found", v.ItemSearch)},
            params=v.ItemSearchParams,
            errors=(503,),
            description="Scans, in the worker's memory, the ids it can recommend and every "
            "stored title (titles are re-read when their count changes, else at most every "
            "30 s); an item that cannot be recommended is found by its exact id. An operator's "
            "tool: on the 9,125-item sample a search costs 3-12 times a recommendation.",
        ),
        Operation(
            "get",
            "/v1/items/{item_id}",
            "An item's status: in the model, in the catalog, recommendable, usable features",
            {200: ("Status", v.ItemStatus)},
            params=v.ItemFeaturesParams,
            errors=(503,),
            description="Item data is public.",
        ),
        Operation(
            "get",
            "/v1/stats",
            "The service at a glance: model, store, reloads, catalog changes, recent traffic",
            {200: ("Stats", v.Stats)},
            params=v.StatsParams,
        ),
        Operation(
            "get",
            "/",
            "The web console (HTML)",
            {200: ("The console", None)},
            extra={"content": {"text/html": {"schema": {"type": "string"}}}},
        ),
        Operation(
            "get",
            "/console/{name}",
            "A file of the web console (app.js, style.css, favicon.svg)",
            {200: ("The file", None)},
            params=v.ConsoleAssetParams,
            errors=(400, 404),
            extra={
                "content": {
                    "text/javascript": {"schema": {"type": "string"}},
                    "text/css": {"schema": {"type": "string"}},
                    "image/svg+xml": {"schema": {"type": "string"}},
                }
            },
        ),
    ]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _clean(node: Any) -> Any:
    """Docstrings as plain text: dedented, reST literals as Markdown code."""
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(val).replace("``", "`")
            if k == "description" and isinstance(val, str)
            else _clean(val)
            for k, val in node.items()
        }
    if isinstance(node, list):
        return [_clean(x) for x in node]
    return node


def _parameters(op: Operation, schema: dict) -> list[dict]:
    """OpenAPI parameters from the component schema of ``op.params``."""
    out = []
    required = set(schema.get("required", ()))
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        in_path = f"{{{name}}}" in op.path
        param = {"name": name, "in": "path" if in_path else "query", "required": in_path}
        if not in_path and name in required:
            param["required"] = True
        description = prop.pop("description", None)
        if description:
            param["description"] = description
        if prop.get("type") == "array":
            param.update(style="form", explode=False)  # exclude=a,b,c
        param["schema"] = prop
        out.append(param)
    return out


def openapi_document(settings: Settings | None = None) -> dict[str, Any]:
    """The document for ``settings`` (``k``'s maximum, the body limit and whether a token
    is set come from it)."""
    settings = settings or Settings()
    ops = operations(settings)
    models = {t for op in ops for t in (op.body, *(r[1] for r in op.responses.values())) if t}
    models.add(v.Error)
    _, schemas = msgspec.json.schema_components(
        sorted(models, key=lambda t: t.__name__), ref_template="#/components/schemas/{name}"
    )
    params = [op.params for op in ops if op.params is not None]
    _, param_schemas = msgspec.json.schema_components(params)
    token = bool(settings.api_token)
    paths: dict[str, dict] = {}
    for op in ops:
        responses: dict[str, Any] = {}
        for status, (description, model) in op.responses.items():
            responses[str(status)] = {"description": description}
            if model is not None:
                responses[str(status)].update(_json(_ref(model.__name__)))
            responses[str(status)].update(op.extra)
        errors = set(op.errors) | ({401} if op.guarded and token else set())
        if op.path.startswith("/v1/"):  # a bad or unknown query parameter
            errors.add(400)
        if op.body is not None:
            errors |= {400, 413, 415, 422}
        for status in sorted(errors):
            responses[str(status)] = {"description": _ERRORS[status]}
            if status != 414:
                responses[str(status)].update(_json(_ref("Error")))
            if status == 429:
                responses["429"]["headers"] = {
                    "Retry-After": {
                        "description": "seconds until the next forced reload is allowed",
                        "schema": {"type": "integer"},
                    }
                }
        responses["default"] = {"description": "An error (see its code)", **_json(_ref("Error"))}
        item: dict[str, Any] = {"summary": op.summary}
        if op.description:
            item["description"] = op.description
        if op.params is not None:
            item["parameters"] = _parameters(op, param_schemas[op.params.__name__])
        if op.body is not None:
            item["requestBody"] = {"required": True, **_json(_ref(op.body.__name__))}
        item["responses"] = responses
        if op.guarded and token:
            item["security"] = [{"bearer": []}]
        paths.setdefault(op.path, {})[op.method] = item
    return _clean(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "hybridrec",
                "version": __version__,
                "description": _INFO.format(max_bytes=settings.max_body_bytes),
            },
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
        }
    )


_INFO = """Recommendations from a LightFM hybrid model, for known and new users and items.

Errors are `{{"error": {{"code", "message"}}}}`; the message names the field and what it
allows. Request bodies are JSON of at most {max_bytes} bytes; unknown fields and unknown
query parameters are refused.

When HYBRIDREC_API_TOKEN is set, writes, admin calls and reads of a user's data (their
stored features) need `Authorization: Bearer <token>` (UTF-8 for non-ASCII tokens); those
operations then list the bearer scheme. Recommendations, similar items, item features and
item metadata stay public."""
