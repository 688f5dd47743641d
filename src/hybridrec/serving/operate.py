"""The operator's routes: the registry's versions and reports, promote and roll back, a
user's seen items, the model's feature vocabulary, item search and status, and recent
traffic. The web console (:mod:`.console`) shows nothing else than these and the
recommendation API; every route is declared in :mod:`.validation` and listed in the
OpenAPI document (:mod:`.openapi`).

Token rules (:mod:`.security`): promote and rollback are admin calls and a user's seen
items are their data, so these need the bearer token when one is set; the rest is public
like item features.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Any

import msgspec
from flask import Flask, Response

from ..errors import HybridrecError
from ..modelstore.artifact import ArtifactError
from ..modelstore.registry import RegistryError, promote_model
from . import validation as v
from .answers import presented
from .app import ServingContext, _add_metadata, _params, _snapshot, _store_call
from .reloader import log_event
from .traffic import TrafficSampler, read_sample, traffic_points
from .validation import ApiError

__all__ = ["install_operator_routes"]

SAMPLE_INTERVAL = 5.0  # seconds between traffic samples
TITLES_TTL = 30.0  # seconds a worker searches titles it read before
_REPORT_TYPES = {
    ".json": "application/json",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}
_REPORT_HEADERS = {
    # a report is shown, never run: no script, no plugin, even if someone wrote HTML there
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; sandbox",
    "X-Content-Type-Options": "nosniff",
}


def _encode(struct: msgspec.Struct, status: int = 200) -> Response:
    return Response(msgspec.json.encode(struct), status=status, mimetype="application/json")


def install_operator_routes(app: Flask, ctx: ServingContext, protected) -> None:
    """Add the operator's routes to ``app``; start the traffic sampler (stopped by
    ``ctx.close()``)."""
    sampler = TrafficSampler(ctx.metrics, SAMPLE_INTERVAL).start()
    ctx._closers.append(sampler.stop)
    titles = _Titles()

    @app.get("/v1/models")
    def list_models():
        limit = _params(v.ModelsParams).limit
        versions, current, target = _store_call(ctx, "registry", lambda: _registry_view(ctx))
        newest = versions[::-1][:limit]
        snap = ctx.state.snapshot
        return _encode(
            v.ModelVersions(
                current=current,
                serving=None if snap is None else snap.version,
                rollback_target=target,
                total=len(versions),
                versions=[_version(ctx, info) for info in newest],
            )
        )

    @app.get("/v1/models/<version>/reports")
    def list_reports(version: str):
        version = _params(v.ReportsParams, version=version).version
        return _encode(v.Reports(version=version, reports=_reports(ctx, version, strict=True)))

    @app.get("/v1/models/<version>/reports/<name>")
    def read_report(version: str, name: str):
        p = _params(v.ReportParams, version=version, name=name)
        try:
            data = ctx.model_store.read_report(p.version, p.name)
        except (ArtifactError, OSError):
            raise ApiError(
                404, "not_found", f"model version {p.version!r} has no report {p.name!r}"
            ) from None
        suffix = os.path.splitext(p.name)[1].lower()
        mimetype = _REPORT_TYPES.get(suffix, "application/octet-stream")
        response = Response(data, mimetype=mimetype, headers=_REPORT_HEADERS)
        if suffix not in _REPORT_TYPES:
            response.headers["Content-Disposition"] = "attachment"
        return response

    @app.post("/v1/admin/models/<version>/promote")
    @protected
    def promote(version: str):
        p = _params(v.PromoteParams, version=version)

        def move() -> str | None:
            if not ctx.model_store.exists(p.version):
                raise ApiError(
                    404, "not_found", f"no model version {p.version!r} in the model store"
                )
            info = ctx.registry.info(p.version) or {}
            if info.get("status") == "refused" and not p.force:
                raise ApiError(
                    409,
                    "refused",
                    f"model version {p.version!r} was refused by the quality gate; promote "
                    "it anyway with force=true",
                )
            previous = ctx.registry.current()
            promote_model(ctx.model_store, ctx.registry, p.version, force=p.force)
            return previous

        previous = _registry_call(ctx, move)
        return _encode(_moved(ctx, p.version, previous))

    @app.post("/v1/admin/rollback")
    @protected
    def rollback():
        expect = _params(v.RollbackParams).expect

        def move() -> tuple[str, str | None]:
            previous = ctx.registry.current()
            target = ctx.registry.rollback_target()
            if target is None:
                raise RegistryError(
                    "nothing to roll back to: the history has no version before the current one"
                )
            if expect is not None and target != expect:
                raise RegistryError(
                    f"the registry changed meanwhile (rollback would now go to {target!r}, "
                    f"not {expect!r}); reload the list and retry"
                )
            ctx.model_store.verify(target)  # a corrupt artifact is never made current
            return ctx.registry.rollback(expect=target), previous

        target, previous = _registry_call(ctx, move)
        return _encode(_moved(ctx, target, previous))

    @app.get("/v1/users/<user_id>/seen")
    @protected
    def seen_items(user_id: str):
        p = _params(v.SeenParams, user_id=user_id)
        seen = _store_call(ctx, "seen", lambda: ctx.feature_store.get_seen(p.user_id))
        items = [{"item_id": i} for i in sorted(seen)[: p.limit]]
        _add_metadata(ctx, items)
        listed = [v.SeenItem(**item) for item in items]
        return _encode(v.SeenItems(user_id=p.user_id, count=len(seen), items=listed))

    @app.get("/v1/model/features")
    def vocabulary():
        p = _params(v.VocabularyParams)
        snap = _snapshot(ctx)
        space = snap.model.user_space_ if p.side == "user" else snap.model.item_space_
        names = space.vocabulary.external
        query = p.q.casefold()
        matched = sorted(n for n in names if query in n.casefold()) if query else sorted(names)
        return _encode(
            v.Vocabulary(
                model_version=snap.version,
                side=p.side,
                total=len(names),
                matched=len(matched),
                features=matched[: p.limit],
            )
        )

    @app.get("/v1/items")
    def search_items():
        p = _params(v.ItemSearchParams)
        snap = _snapshot(ctx)
        found, truncated = _search(ctx, snap, titles, p.q, p.limit)
        known = snap.model.item_space_.entities
        items = [{"item_id": i} for i in found]
        _add_metadata(ctx, items)
        summaries = [
            v.ItemSummary(
                item_id=item["item_id"],
                in_model=item["item_id"] in known,
                recommendable=item["item_id"] in snap,
                **({"title": item["title"]} if "title" in item else {}),
            )
            for item in items
        ]
        return _encode(v.ItemSearch(query=p.q, items=summaries, truncated=truncated))

    @app.get("/v1/items/<item_id>")
    def item_status(item_id: str):
        item_id = _params(v.ItemFeaturesParams, item_id=item_id).item_id
        snap = _snapshot(ctx)
        fs = ctx.feature_store
        stored = _store_call(ctx, "features", lambda: fs.get_features("items", item_id))
        if stored is not None and item_id not in snap and ctx.reloader.catch_up():
            snap = _snapshot(ctx)  # put through another worker a moment ago
        vocabulary = snap.model.item_space_.vocabulary
        known = sum(1 for name in stored or () if name in vocabulary)
        (meta,) = _add_metadata(ctx, [], item_id)
        return _encode(
            v.ItemStatus(
                item_id=item_id,
                model_version=snap.version,
                in_model=item_id in snap.model.item_space_.entities,
                in_catalog=stored is not None,
                recommendable=item_id in snap,
                features=stored,
                known_features=known,
                unknown_features=len(stored or ()) - known,
                **presented(meta),
            )
        )

    @app.get("/v1/stats")
    def stats():
        minutes = _params(v.StatsParams).minutes
        samples = sampler.recent(minutes * 60)  # whole intervals only: steady rates
        latest = read_sample(ctx.metrics)  # totals as of now
        snap = ctx.state.snapshot
        try:
            registry_version = ctx.registry.current()
        except HybridrecError:
            registry_version = None
        return _encode(
            v.Stats(
                model_version=None if snap is None else snap.version,
                registry_version=registry_version,
                store="ok" if ctx.state.store_ok else "unavailable",
                degraded=not ctx.state.store_ok,
                reload_failures=int(latest.reloads.get("failure", 0)),
                reloads=int(latest.reloads.get("success", 0)),
                interval_seconds=SAMPLE_INTERVAL,
                catalog=None if snap is None else _catalog(snap, latest.item_updates),
                workers=[_worker(w) for w in latest.workers],
                traffic=[msgspec.convert(p, v.TrafficPoint) for p in traffic_points(samples)],
            )
        )


# -- helpers -----------------------------------------------------------------------------------


def _registry_view(ctx: ServingContext) -> tuple[list[dict], str | None, str | None]:
    registry = ctx.registry
    return registry.versions(), registry.current(), registry.rollback_target()


def _registry_call(ctx: ServingContext, call):
    """A pointer move: the registry's refusals are 409 in its words, an artifact that
    fails verification 409 too (the pointer does not move); Redis down is 503."""

    def move():
        try:
            return call()
        except RegistryError as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        except ArtifactError as exc:  # its message names files: the log has it
            log_event(logging.ERROR, "pointer_move_refused", error=str(exc))
            raise ApiError(
                409,
                "invalid_artifact",
                "the artifact failed verification, so the pointer did not move; the server "
                "log says which file",
            ) from None

    return _store_call(ctx, "registry", move)


def _moved(ctx: ServingContext, target: str, previous: str | None) -> v.PointerMove:
    """This worker loads ``target`` now (the others follow by themselves)."""
    result = ctx.reloader.reload_now(timeout=20.0)
    return v.PointerMove(
        model_version=target, previous=previous, serving=result.version, reload_error=result.error
    )


def _reports(ctx: ServingContext, version: str, strict: bool = False) -> list[str]:
    try:
        return ctx.model_store.reports(version)
    except (ArtifactError, OSError):
        if strict:
            raise ApiError(
                404, "not_found", f"no model version {version!r} in the model store"
            ) from None
        return []


def _version(ctx: ServingContext, info: dict[str, Any]) -> v.ModelVersion:
    version = info["version"]
    try:
        manifest = ctx.model_store.manifest(version)
        artifact = "ok"
    except (ArtifactError, OSError, ValueError):
        manifest, artifact = {}, "missing"
    data = (manifest.get("extra") or {}).get("data")
    return v.ModelVersion(
        version=version,
        status=info.get("status", "candidate"),
        current=bool(info.get("current")),
        recorded_at=float(info.get("recorded_at", 0.0)),
        created_at=info.get("created_at") or manifest.get("created_at"),
        published_at=info.get("published_at"),
        metrics=info.get("metrics") or manifest.get("metrics") or {},
        sizes=info.get("sizes") or manifest.get("sizes") or {},
        hyperparameters=info.get("hyperparameters") or manifest.get("hyperparameters") or {},
        training_data=data if isinstance(data, dict) else None,
        reasons=[str(r) for r in info.get("reasons") or ()],
        reports=_reports(ctx, version) if artifact == "ok" else [],
        artifact=artifact,
    )


def _search(
    ctx: ServingContext, snap, titles: _Titles, query: str, limit: int
) -> tuple[list[str], bool]:
    """Ids whose id or title contains ``query`` (casefolded): the exact id first, then
    prefixes, then the rest, shorter ids first; ``(ids, more matched than limit)``.

    Scans the ids this worker can recommend (in memory) and the stored titles; an item
    in the catalog that cannot be recommended (no feature the model knows) is found by its
    exact id.
    """
    q = query.casefold()
    matches = {i for i in snap.item_ids() if q in i.casefold()}
    if ctx.state.store_ok:
        try:
            matches.update(i for i, title in titles.read(ctx.feature_store) if q in title)
        except (HybridrecError, ValueError) as exc:
            ctx.reloader.store_failed("metadata", exc)
    if query not in matches:
        try:
            if ctx.feature_store.get_features("items", query) is not None:
                matches.add(query)
        except (HybridrecError, ValueError):
            pass  # the store is down: what this worker knows is the answer

    def rank(item_id: str) -> tuple[int, int, str]:
        folded = item_id.casefold()
        place = 0 if item_id == query else 1 if folded == q else 2 if folded.startswith(q) else 3
        return place, len(item_id), item_id

    ordered = sorted(matches, key=rank)
    return ordered[:limit], len(ordered) > limit


class _Titles:
    """Every item's title, casefolded, for search: read whole (HSCAN) at most every
    ``TITLES_TTL`` seconds, or when the number of items with metadata changes (one HLEN
    per search), so a new item's title is found at once and an edited one within the TTL."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_at = -math.inf
        self._count = -1
        self._titles: list[tuple[str, str]] = []

    def read(self, feature_store) -> list[tuple[str, str]]:
        count = feature_store.metadata_count()
        with self._lock:
            if count != self._count or time.monotonic() - self._read_at > TITLES_TTL:
                self._titles = [
                    (item_id, str(meta.get("title", "")).casefold())
                    for item_id, meta in feature_store.iter_metadata()
                    if meta.get("title")
                ]
                self._count, self._read_at = count, time.monotonic()
            return self._titles


def _catalog(snap, updates: dict[str, float]) -> v.CatalogChanges:
    model_items = len(snap.model.item_space_.entities)
    added = len(snap.store_only_ids())
    live_model_items = snap.n_items - added
    return v.CatalogChanges(
        model_items=model_items,
        recommendable=snap.n_items,
        added=added,
        changed=max(0, snap.overlay_items - added),
        unavailable=max(0, model_items - live_model_items),
        updates={op: int(n) for op, n in sorted(updates.items())},
    )


def _worker(gauges: dict[str, Any]) -> v.WorkerState:
    age = gauges.get("snapshot_age_seconds")
    items = gauges.get("catalog_items")
    return v.WorkerState(
        pid=gauges.get("pid"),
        model_version=gauges.get("model_version"),
        catalog_items=None if items is None else int(items),
        snapshot_age_seconds=None if age is None else round(float(age), 3),
        degraded=bool(gauges.get("degraded")),
    )
