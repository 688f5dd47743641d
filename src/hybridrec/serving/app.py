"""The Flask application: every endpoint of DESIGN.md's HTTP API.

:func:`create_app` wires the feature store, registry, model store, metrics and the
background :class:`~hybridrec.serving.reloader.Reloader`; nothing is created at import
time. Request handlers read ``state.snapshot`` once and use that snapshot to the end.

Which features a user has at serving time (the 16 cases of DESIGN.md):

- the feature store is the source of truth: a stored user's features are their current
  features; a user without stored features has none (a known user keeps the indicator);
- ``POST /v1/recommendations`` with ``"features"`` replaces them for that request;
- when the store is unreachable the answer is ``"degraded": true``: a known user gets the
  features the model was trained with (indicator included), anyone else the baseline, and
  the items seen in training are excluded instead of the store's seen set.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial, wraps
from typing import Any

import msgspec
import pandas as pd
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from ..config import Settings
from ..errors import HybridrecError, StoreUnavailable
from .answers import MetadataCache, add_metadata, presented, score_type
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .openapi import FORCED_RELOAD_INTERVAL, openapi_document
from .reloader import Reloader, ServingState, log_event
from .security import Interval, TokenCheck
from .snapshot import Recommendation, Snapshot, UnknownItem
from .validation import (
    ApiError,
    FeaturesBody,
    InteractionsBody,
    ItemFeaturesParams,
    ItemMetadataParams,
    MetadataBody,
    NoParams,
    RecommendQuery,
    ReloadParams,
    UserFeaturesParams,
    check_body_size,
    declarations,
    decode_body,
    decode_params,
)

__all__ = ["ServingContext", "create_app"]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class ServingContext:
    """What the app's handlers share; ``app.extensions["hybridrec"]``."""

    def __init__(self, settings: Settings, state: ServingState, reloader: Reloader, **parts):
        self.settings = settings
        self.state = state
        self.reloader = reloader
        self.metrics: Metrics = parts["metrics"]
        self.feature_store = parts["feature_store"]
        self.registry = parts["registry"]
        self.model_store = parts["model_store"]
        self._closers: list[Callable[[], None]] = parts.get("closers", [])
        self.declarations = declarations(settings.max_k)
        self.token = TokenCheck(settings.api_token) if settings.api_token else None
        self.forced_reloads = Interval(FORCED_RELOAD_INTERVAL)
        self.metadata_cache = MetadataCache()

    def close(self) -> None:
        """Stop the background thread and close what :func:`create_app` opened."""
        self.reloader.stop()
        for close in self._closers:
            try:
                close()
            except Exception:  # closing must go on
                pass


class _Connected:
    """A store object built on first use, so that a worker starts while Redis is down.

    Until Redis answers, every attribute access raises
    :class:`~hybridrec.errors.StoreUnavailable`, which the API turns into degraded answers.
    """

    def __init__(self, factory: Callable[[], Any], closers: list[Callable[[], None]]):
        self._factory = factory
        self._closers = closers
        self._target: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        target = self._target
        if target is None:
            with self._lock:
                if self._target is None:
                    self._target = self._factory()
                target = self._target
        return getattr(target, name)


def _default_parts(settings: Settings, feature_store, registry, model_store):
    """Connect what the caller did not pass (production wiring).

    Requests get their own Redis client that waits at most ``serve_redis_timeout`` and
    does not retry after a timeout: a slow or absent Redis turns into a degraded answer,
    not a slow one.
    The reloader's registry and catalog reads use an ordinary client.
    """
    closers: list[Callable[[], None]] = []
    background_store = feature_store

    def client(timeout: float | None = None):
        from ..store.connection import connect

        if timeout is None:
            c = connect(settings)
        else:
            from redis import ConnectionError as RedisConnectionError
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            c = connect(replace(settings, redis_timeout=min(timeout, settings.redis_timeout)))
            # one immediate retry on a new connection (a pooled one may predate a Redis
            # restart), none after a timeout: a slow Redis must not double the wait
            c.set_retry(Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
        closers.append(c.close)
        return c

    def store(timeout: float | None = None):
        from ..store.features import FeatureStore

        return FeatureStore(client(timeout), settings.key_prefix, settings.interaction_log_maxlen)

    if feature_store is None:
        feature_store = _Connected(lambda: store(settings.serve_redis_timeout), closers)
        background_store = _Connected(store, closers)
    if registry is None:
        from ..modelstore.registry import Registry

        registry = _Connected(lambda: Registry(client(), settings.key_prefix), closers)
    if model_store is None:
        from ..modelstore.store import ModelStore

        model_store = ModelStore(settings.model_store)
    return feature_store, background_store, registry, model_store, closers


def create_app(
    settings: Settings | None = None,
    *,
    feature_store: Any = None,
    registry: Any = None,
    model_store: Any = None,
    start_reloader: bool = True,
    wait_ready: float = 0.0,
) -> Flask:
    """The API as a Flask app.

    Parts not passed are built from ``settings`` (default: the environment); the reloader
    thread starts at once and loads the registry's current version in the background
    (``/readyz`` answers 503 until then). ``app.extensions["hybridrec"].close()`` stops it.

    ``wait_ready`` > 0: return only after the reloader's first registry check has ended
    (the published version loaded, nothing published, or the load failed), waiting at most
    that many seconds. A server worker does so before it takes requests, so that a
    replacement worker never answers 503 while another worker has a model.
    """
    settings = settings or Settings.from_env()
    if settings.redis_url is not None:  # a malformed URL stops the start, on one line
        from ..store.connection import parse_redis_url

        parse_redis_url(settings.redis_url)
    feature_store, background_store, registry, model_store, closers = _default_parts(
        settings, feature_store, registry, model_store
    )
    metrics = Metrics()
    state = ServingState()
    reloader = Reloader(
        state,
        registry=registry,
        model_store=model_store,
        feature_store=background_store,
        metrics=metrics,
        reload_interval=settings.reload_interval,
        snapshot_options={
            "approximate": True,
            "min_recall": settings.min_recall,
            "ann_min_items": settings.ann_min_items,
        },
    )
    ctx = ServingContext(
        settings,
        state,
        reloader,
        metrics=metrics,
        feature_store=feature_store,
        registry=registry,
        model_store=model_store,
        closers=closers,
    )
    app = Flask("hybridrec")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.extensions["hybridrec"] = ctx
    _install_hooks(app, ctx)
    _install_routes(app, ctx)
    if start_reloader:
        reloader.start()
        if wait_ready > 0:
            started = time.monotonic()
            result = reloader.reload_now(timeout=wait_ready)
            log_event(
                logging.INFO,
                "worker_ready",
                version=result.version,
                waited_seconds=round(time.monotonic() - started, 3),
                error=result.error,
            )
    return app


# -- plumbing ----------------------------------------------------------------------------------


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    """A compact JSON response without Flask's provider machinery (the hot path).

    Scores are finite by construction (top-k drops non-finite ones), so NaN never leaks.
    """
    return Response(msgspec.json.encode(payload), status=status, mimetype="application/json")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        msgspec.json.encode({"error": {"code": code, "message": message}}),
        status=status,
        mimetype="application/json",
        headers=headers,
    )


def _install_hooks(app: Flask, ctx: ServingContext) -> None:
    metrics = ctx.metrics

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        started = g.get("started")
        elapsed = time.perf_counter() - started if started is not None else 0.0
        metrics.observe_request(rule, request.method, response.status_code, elapsed)
        return response

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return _refuse(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = exc.description or exc.name
        if status == 404:
            message = f"no route {request.method} {request.path}; see /openapi.json"
        response = _refuse(status, code, message)
        if status == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        metrics.errors.labels("internal").inc()
        log_event(
            logging.ERROR,
            "request_failed",
            method=request.method,
            path=request.path,
            error=f"{type(exc).__name__}: {exc}",
        )
        logging.getLogger("hybridrec.serving").debug("traceback", exc_info=exc)
        return _error(500, "internal", "internal error; the server log has the details")

    def _refuse(
        status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        metrics.errors.labels(code).inc()
        log_event(
            logging.INFO if status < 500 else logging.WARNING,
            "request_refused",
            status=status,
            code=code,
            method=request.method,
            path=request.path[:300],
            message=message[:300],
        )
        return _error(status, code, message, headers)


def _authorized(ctx: ServingContext) -> None:
    if ctx.token is None:
        return
    header = request.headers.get("Authorization", "")
    if not ctx.token.matches(header):
        raise ApiError(
            401,
            "unauthorized",
            "this call needs 'Authorization: Bearer <HYBRIDREC_API_TOKEN>'"
            if not header
            else "wrong token or authorization scheme (expected 'Bearer <token>')",
        )


def _protected(ctx: ServingContext):
    """Writes, admin calls and reads of a user's data need the bearer token when one is
    configured (the operations marked ``guarded`` in :func:`.openapi.operations`)."""

    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            _authorized(ctx)
            return view(*args, **kwargs)

        return wrapper

    return decorate


def _body(ctx: ServingContext, tp: Any) -> Any:
    """The JSON body as ``tp`` (a Struct type or a Decoder of one)."""
    limit = ctx.settings.max_body_bytes
    check_body_size(request.content_length, limit)
    return decode_body(tp, request.content_type, request.get_data(cache=False), limit)


def _params(tp: Any, **path: str) -> Any:
    """The path and query parameters as ``tp``."""
    return decode_params(tp, path, request.args)


def _snapshot(ctx: ServingContext) -> Snapshot:
    snap = ctx.state.snapshot
    if snap is None:
        raise ApiError(
            503,
            "no_model",
            "no model is loaded yet: publish one with 'hybridrec train --publish' "
            "(this server picks it up by itself)",
        )
    return snap


def _store_call(ctx: ServingContext, where: str, call: Callable[[], Any]) -> Any:
    """A feature-store call for a write or a lookup with no fallback: 503 when down.

    The details (which may name the store's address) go to the log, never to the client.
    """
    try:
        return call()
    except StoreUnavailable as exc:
        ctx.reloader.store_failed(where, exc)
        raise ApiError(
            503,
            "store_unavailable",
            "the feature store (Redis) is unavailable; retry later (the server log says why)",
        ) from None
    except HybridrecError as exc:
        ctx.reloader.store_failed(where, exc)
        raise ApiError(
            503, "store_error", "the feature store (Redis) refused a command; see the server log"
        ) from None


# -- recommendations ---------------------------------------------------------------------------


def _recommend(ctx: ServingContext, query: RecommendQuery) -> dict[str, Any]:
    snap = _snapshot(ctx)
    uid, inline = query.user_id, query.features
    stored, seen, degraded, generation = None, (), False, None
    if uid is not None and (inline is None or query.exclude_seen):
        stored, seen, degraded, generation = _user_context(ctx, uid)
    if inline is not None:
        features = inline
    elif degraded:
        features = None  # what the snapshot knows: a known user's training features
    else:
        features = stored or {}  # the store is the truth: nothing stored, no features
    # without the store, a known user's history is what the model was trained on
    history = snap.training_seen(uid) if degraded else seen
    exclude = list(query.exclude)
    if query.exclude_seen:
        exclude.extend(history)
    rec = snap.recommend(
        uid, features, query.k, exclude=exclude, items=query.items, history=history,
        exact=query.exact,
    )  # fmt: skip
    _count(ctx, rec, degraded)
    items = [{"item_id": i, "score": s} for i, s in rec.items]
    if not degraded:
        _add_metadata(ctx, items, generation=generation)
    return {
        "user_id": uid,
        "model_version": snap.version,
        "strategy": rec.strategy,
        "score_type": score_type(rec, snap),
        "user_case": rec.user_case,
        "retrieval": rec.retrieval,
        "items": items,
        "unscorable": rec.unscorable,
        "degraded": degraded,
    }


def _add_metadata(
    ctx: ServingContext, items: list[dict[str, Any]], *more: str, generation: int | None = None
) -> list:
    """:func:`~hybridrec.serving.answers.add_metadata` from the store (one HMGET; none
    when the worker's cache holds every item for the metadata ``generation`` read with
    the user's features); without the store the answer goes out without metadata."""
    if not ctx.state.store_ok:
        return [None] * len(more)
    try:
        fetch = ctx.feature_store.metadata_of
        if generation is not None:
            fetch = partial(ctx.metadata_cache.lookup, generation=generation, fetch=fetch)
        return add_metadata(items, fetch, more)
    except (HybridrecError, ValueError) as exc:
        ctx.reloader.store_failed("metadata", exc)
        return [None] * len(more)


def _user_context(ctx: ServingContext, user_id: str):
    """``(stored features or None, seen ids, degraded, metadata generation or None)``:
    one store round trip."""
    if not ctx.state.store_ok:
        return None, set(), True, None
    try:
        features, seen, gen = ctx.feature_store.user_context_and_generation(user_id)
    except (HybridrecError, ValueError) as exc:  # unreachable, or unreadable data
        ctx.reloader.store_failed("user_context", exc)
        return None, set(), True, None
    return features, seen, False, gen


def _count(ctx: ServingContext, rec: Recommendation, degraded: bool) -> None:
    m = ctx.metrics
    m.count_recommendation(rec.strategy, rec.user_case, degraded)
    m.count_retrieval(rec.retrieval)
    if rec.unknown_user_features:
        m.unknown_features.labels("user").inc(rec.unknown_user_features)


# -- routes ------------------------------------------------------------------------------------


def _install_routes(app: Flask, ctx: ServingContext) -> None:
    protected = _protected(ctx)
    decl = ctx.declarations

    @app.get("/v1/users/<user_id>/recommendations")
    def user_recommendations(user_id: str):
        p = _params(decl.UserRecommendationParams, user_id=user_id)
        query = RecommendQuery(
            user_id=p.user_id, k=p.k, exclude=p.exclude, exclude_seen=p.exclude_seen, exact=p.exact
        )
        return _json(_recommend(ctx, query))

    @app.post("/v1/recommendations")
    def recommendations():
        _params(NoParams)
        return _json(_recommend(ctx, _body(ctx, decl.recommendation_request)))

    @app.get("/v1/items/<item_id>/similar")
    def similar_items(item_id: str):
        p = _params(decl.SimilarParams, item_id=item_id)
        item_id = p.item_id
        snap = _snapshot(ctx)
        if item_id not in snap and ctx.state.store_ok and ctx.reloader.catch_up():
            snap = _snapshot(ctx)  # it may have been put through another worker just now
        try:
            items = snap.similar(item_id, p.k)
        except UnknownItem:
            raise _not_similar(ctx, snap, item_id) from None
        neighbours = [{"item_id": i, "score": s} for i, s in items]
        (own,) = _add_metadata(ctx, neighbours, item_id)
        return _json(
            {
                "item_id": item_id,
                **presented(own),
                "model_version": snap.version,
                "score_type": "cosine",
                "items": neighbours,
            }
        )

    for kind, singular, params in (
        ("users", "user", UserFeaturesParams),
        ("items", "item", ItemFeaturesParams),
    ):
        _feature_routes(app, ctx, protected, kind, singular, params)

    @app.get("/v1/items/<item_id>/metadata")
    def get_item_metadata(item_id: str):
        item_id = _params(ItemMetadataParams, item_id=item_id).item_id
        found = _store_call(ctx, "metadata", lambda: ctx.feature_store.get_metadata(item_id))
        if found is None:
            raise ApiError(404, "not_found", f"no metadata for item {item_id!r}")
        return jsonify({"item_id": item_id, "metadata": found})

    @app.put("/v1/items/<item_id>/metadata")
    @protected
    def put_item_metadata(item_id: str):
        item_id = _params(ItemMetadataParams, item_id=item_id).item_id
        metadata = _body(ctx, MetadataBody).metadata
        fs = ctx.feature_store
        _store_call(ctx, "metadata", lambda: fs.put_metadata(item_id, metadata))
        return jsonify({"item_id": item_id, "metadata": metadata})

    @app.post("/v1/interactions")
    @protected
    def interactions():
        _params(NoParams)
        body = _body(ctx, InteractionsBody)
        now = int(time.time())
        rows = [i.row(now) for i in body.interactions]
        frame = pd.DataFrame(rows, columns=["user_id", "item_id", "weight", "timestamp"])
        n = _store_call(ctx, "interactions", lambda: ctx.feature_store.add_interactions(frame))
        return _json({"accepted": int(n)}, 202)

    @app.get("/v1/model")
    def model_info():
        _params(NoParams)
        snap = _snapshot(ctx)
        manifest = snap.manifest or {}
        sizes = manifest.get("sizes", {})
        return jsonify(
            {
                "model_version": snap.version,
                "created_at": manifest.get("created_at"),
                "loaded_at": _iso(snap.loaded_at),
                "snapshot_age_seconds": round(time.time() - snap.loaded_at, 3),
                "items": snap.n_items,
                "overlay_items": snap.overlay_items,
                "users": len(snap.model.user_space_.entities),
                "components": int(snap.model.no_components),
                "sizes": sizes,
                "metrics": manifest.get("metrics", {}),
                "store": "ok" if ctx.state.store_ok else "unavailable",
                "blas_threads": _blas_threads(),
                "fallback": ctx.state.fallback,
                "retrieval": snap.retrieval.as_dict(),
                "blend": manifest.get("blend") if getattr(snap.model, "blend_", None) else None,
            }
        )

    @app.post("/v1/admin/reload")
    @protected
    def admin_reload():
        force = _params(ReloadParams).force
        if force:
            left = ctx.forced_reloads.take()
            if left > 0:
                wait = math.ceil(left)
                raise ApiError(
                    429,
                    "rate_limited",
                    f"a forced reload rebuilds the whole snapshot, so each worker runs at most "
                    f"one every {FORCED_RELOAD_INTERVAL:.0f} s; retry in {wait} s (a reload "
                    "without force=true loads any new version at once)",
                    headers={"Retry-After": str(wait)},
                )
        # below gunicorn's 30 s worker timeout; the load goes on in the background
        result = ctx.reloader.reload_now(timeout=20.0, force=force)
        if result.error is not None:
            if result.version is None:
                raise ApiError(503, "no_model", f"nothing to serve: {result.error}")
            raise ApiError(503, "reload_failed", f"{result.error}; still serving {result.version}")
        return jsonify({"model_version": result.version, "reloaded": result.changed})

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        snap = ctx.state.snapshot
        if snap is None:  # polled while starting: not an error worth a log line
            return _error(503, "no_model", "no model is loaded yet")
        return jsonify(
            {
                "status": "ready",
                "model_version": snap.version,
                "store": "ok" if ctx.state.store_ok else "unavailable",
                # not None: the registry's current version fails to load; an older one serves
                "fallback": ctx.state.fallback,
            }
        )

    @app.get("/metrics")
    def metrics():
        snap = ctx.state.snapshot
        if snap is not None:
            ctx.metrics.snapshot_age.set(time.time() - snap.loaded_at)
        return Response(ctx.metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)

    document = openapi_document(ctx.settings)

    @app.get("/openapi.json")
    def openapi():
        return jsonify(document)

    # the operator's routes and the web console (issue 13): serving/operate.py, console/
    from .console import install_console
    from .operate import install_operator_routes

    install_operator_routes(app, ctx, protected)
    install_console(app)


def _not_similar(ctx: ServingContext, snap: Snapshot, item_id: str) -> ApiError:
    """Why ``item_id`` has no neighbours: unknown, deleted, or no feature the model knows."""
    try:
        stored = ctx.feature_store.get_features("items", item_id)
    except (HybridrecError, ValueError):
        stored = None  # the store is down: say what this worker knows
    if stored:
        vocabulary = snap.model.item_space_.vocabulary
        known = sum(1 for name in stored if name in vocabulary)
        if known == 0:
            return ApiError(
                404,
                "unscorable",
                f"item {item_id!r} has {len(stored)} features in the store, but model "
                f"{snap.version} knows none of them, so it cannot represent the item; it "
                "becomes similar-able once it has a feature the model was trained with, or "
                "after a retrain that includes its features",
            )
        return ApiError(
            404,
            "not_found",
            f"item {item_id!r} was put a moment ago and this worker has not loaded it yet; "
            "retry in a second",
        )
    return ApiError(
        404,
        "not_found",
        f"item {item_id!r} is unknown to model {snap.version} and has no features in the "
        "store (or it was deleted)",
    )


def _feature_routes(
    app: Flask, ctx: ServingContext, protected, kind: str, singular: str, params: type
):
    key = f"{singular}_id"
    path = f"/v1/{kind}/<{key}>/features"
    fs = ctx.feature_store

    def get_features(**view_args: str):
        entity_id = getattr(_params(params, **view_args), key)
        found = _store_call(ctx, "features", lambda: fs.get_features(kind, entity_id))
        if found is None:
            raise ApiError(404, "not_found", f"no {singular} {entity_id!r} in the feature store")
        return jsonify({key: entity_id, "features": found})

    def put_features(**view_args: str):
        entity_id = getattr(_params(params, **view_args), key)
        features = _body(ctx, FeaturesBody).features
        _store_call(ctx, "features", lambda: fs.put_features(kind, entity_id, features))
        out: dict[str, Any] = {key: entity_id, "features": features}
        if kind == "items":
            ctx.reloader.wake()
        snap = ctx.state.snapshot
        if snap is not None:  # names the model cannot use: counted and told, never an error
            space = snap.model.item_space_ if kind == "items" else snap.model.user_space_
            unknown = sum(1 for name in features if name not in space.vocabulary)
            out["unknown_features"] = unknown
            if unknown:
                ctx.metrics.unknown_features.labels(singular).inc(unknown)
        return jsonify(out)

    def delete_features(**view_args: str):
        entity_id = getattr(_params(params, **view_args), key)
        existed = _store_call(ctx, "features", lambda: fs.delete_features(kind, entity_id))
        if not existed:
            raise ApiError(404, "not_found", f"no {singular} {entity_id!r} in the feature store")
        if kind == "items":
            ctx.reloader.wake()
        return "", 204

    get_view = protected(get_features) if kind == "users" else get_features  # a user's data
    app.add_url_rule(path, f"get_{singular}_features", get_view, methods=["GET"])
    app.add_url_rule(path, f"put_{singular}_features", protected(put_features), methods=["PUT"])
    app.add_url_rule(
        path, f"delete_{singular}_features", protected(delete_features), methods=["DELETE"]
    )


@functools.cache
def _blas_threads() -> int | None:
    """Threads of the BLAS numpy uses in this process (1 under ``hybridrec serve``)."""
    from threadpoolctl import threadpool_info

    counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(counts) if counts else None


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
