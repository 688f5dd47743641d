"""Hot reload, new items without retraining, failed loads and Redis outages.

All against real Redis servers; requests go through the Flask test client from several
threads while the background thread swaps snapshots underneath.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from hybridrec.model import HybridLightFM
from hybridrec.store.connection import redis_server_binary


def _hammer(app, stop: threading.Event, out: list, paths: list[str]) -> None:
    """GET ``paths`` in turn until ``stop``; append ``(start time, status, json, thread)``."""
    client = app.test_client()
    n = 0
    me = threading.get_ident()
    while not stop.is_set():
        path = paths[n % len(paths)]
        n += 1
        started = time.monotonic()
        response = client.get(path)
        out.append((started, response.status_code, response.get_json(), me))


def _wait(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def test_hot_reload_while_requests_run_fails_no_request(serving_world):
    world = serving_world
    app = world.app()
    stop = threading.Event()
    results: list = []
    paths = [
        "/v1/users/u0/recommendations?k=5",
        "/v1/users/stranger/recommendations",
        "/v1/items/i0/similar?k=3",
        "/readyz",
    ]
    threads = [threading.Thread(target=_hammer, args=(app, stop, results, paths)) for _ in range(4)]
    for t in threads:
        t.start()
    versions = [world.version]
    state = app.extensions["hybridrec"].state
    try:
        data = world.data
        for seed in (1, 2, 3):
            time.sleep(0.3)
            model = HybridLightFM(no_components=8, epochs=3, random_state=seed).fit(
                data.interactions, data.user_features, data.item_features
            )
            versions.append(world.publish(model))
            _wait(lambda v=versions[-1]: state.snapshot.version == v, 5, "reload")
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(results) > 100
    assert {r[1] for r in results} == {200}, "no request may fail"
    assert {r[2]["model_version"] for r in results} == set(versions)
    # within one thread versions only move forward: a whole snapshot, never an older one
    order = {v: n for n, v in enumerate(versions)}
    for thread in {r[3] for r in results}:
        ranks = [order[r[2]["model_version"]] for r in results if r[3] == thread]
        assert ranks == sorted(ranks)
    text = app.test_client().get("/metrics").data.decode()
    assert 'hybridrec_model_reloads_total{result="success"} 4.0' in text


def test_new_item_is_recommendable_on_every_worker_within_5_seconds(serving_world):
    world = serving_world
    writer = world.app().test_client()
    other = world.app()  # another worker: it only learns of the item from the store
    reader = other.test_client()
    features = {"genre:2": 1.0, "tag:4": 1.0}
    assert set(features) <= set(world.model.item_space_.vocabulary.external)
    started = time.monotonic()
    assert (
        writer.put("/v1/items/brand-new/features", json={"features": features}).status_code == 200
    )

    def listed() -> bool:
        out = reader.get("/v1/users/u0/recommendations?k=1000").get_json()
        return "brand-new" in [x["item_id"] for x in out["items"]]

    _wait(listed, 5.0, "the new item on the other worker")
    assert time.monotonic() - started < 5.0
    body = {"user_id": "u0", "items": ["brand-new"], "exclude_seen": False}
    before = reader.post("/v1/recommendations", json=body).get_json()["items"][0]["score"]
    similar = reader.get("/v1/items/brand-new/similar?k=3")
    assert similar.status_code == 200

    # changed features change its score
    writer.put("/v1/items/brand-new/features", json={"features": {"genre:0": 1.0}})
    _wait(
        lambda: (
            reader.post("/v1/recommendations", json=body).get_json()["items"][0]["score"]
            != pytest.approx(before)
        ),
        5.0,
        "a changed score",
    )
    # a known item keeps its indicator when its features change
    known = {"user_id": "u0", "items": ["i2"], "exclude_seen": False}
    old = reader.post("/v1/recommendations", json=known).get_json()["items"][0]["score"]
    writer.put("/v1/items/i2/features", json={"features": {"genre:0": 1.0}})
    _wait(
        lambda: (
            reader.post("/v1/recommendations", json=known).get_json()["items"][0]["score"]
            != pytest.approx(old)
        ),
        5.0,
        "a known item's new score",
    )
    snap = other.extensions["hybridrec"].state.snapshot
    row = snap.model.item_row("i2", {"genre:0": 1.0})
    assert row.has_indicator

    # a deleted item disappears, new or known
    assert writer.delete("/v1/items/brand-new/features").status_code == 204
    assert writer.delete("/v1/items/i2/features").status_code == 204

    def gone() -> bool:
        out = reader.post(
            "/v1/recommendations", json={**body, "items": ["brand-new", "i2"]}
        ).get_json()
        return out["unscorable"] == ["brand-new", "i2"]

    _wait(gone, 5.0, "the deleted items to disappear")
    assert reader.get("/v1/items/brand-new/similar").status_code == 404


def test_a_restarted_worker_keeps_catalog_changes(serving_world):
    """A worker that starts after the changes rebuilds them from the store."""
    world = serving_world
    world.feature_store.put_features("items", "late", {"genre:2": 1.0})
    world.feature_store.delete_features("items", "i4")  # a model item, deleted
    world.feature_store.put_features("items", "i6", {"genre:0": 1.0})  # changed
    snap = world.app().extensions["hybridrec"].state.snapshot
    assert "late" in snap and "i4" not in snap and "i6" in snap
    assert snap.overlay_items == 2


def test_a_failed_load_keeps_the_old_snapshot_and_counts(serving_world, caplog):
    world = serving_world
    app = world.app()
    api = app.test_client()
    # a whole, recorded version whose array file is then damaged on disk
    from hybridrec.modelstore.registry import store_model

    manifest = store_model(world.model_store, world.registry, world.model)
    bad = manifest["version"]
    npz = Path(world.model_store.path(bad)) / "model.npz"
    npz.write_bytes(npz.read_bytes()[:-100])
    with caplog.at_level(logging.ERROR, logger="hybridrec.serving"):
        world.registry.publish(bad)
        response = api.post("/v1/admin/reload")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "reload_failed"
    assert world.version in response.get_json()["error"]["message"]
    assert api.get("/v1/model").get_json()["model_version"] == world.version
    assert api.get("/v1/users/u0/recommendations").status_code == 200
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "hybridrec.serving"]
    failed = [line for line in lines if line["event"] == "model_load_failed"]
    assert len(failed) == 1 and failed[0]["version"] == bad
    assert "model.npz" in failed[0]["error"] and "truncated" in failed[0]["error"]
    text = api.get("/metrics").data.decode()
    assert 'hybridrec_model_reloads_total{result="failure"}' in text
    # a good publish afterwards is picked up
    good = world.publish(
        HybridLightFM(no_components=8, epochs=2, random_state=9).fit(
            world.data.interactions, world.data.user_features, world.data.item_features
        )
    )
    _wait(lambda: api.get("/v1/model").get_json()["model_version"] == good, 5, "reload")


def test_regression_a_corrupt_current_version_at_start_serves_the_newest_healthy_one(
    serving_world, caplog
):
    """Regression (issue 9, item 5): a worker starting while the current version failed
    verification answered 503 to everything although healthy versions existed."""
    world = serving_world
    older = world.publish(world.model)
    newest_good = world.publish(world.model)
    refused = world.publish(world.model)
    world.registry.record(refused, {"status": "refused"})  # published, then an operator's call
    bad = world.publish(world.model)
    npz = Path(world.model_store.path(bad)) / "model.npz"
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, wrong checksum
    npz.write_bytes(bytes(data))
    assert world.registry.current() == bad and older != newest_good
    with caplog.at_level(logging.INFO, logger="hybridrec.serving"):
        api = world.app().test_client()
    # the newest published version that loads; the refused one is skipped
    assert api.get("/v1/users/u0/recommendations").get_json()["model_version"] == newest_good
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["model_version"] == newest_good
    fallback = ready.get_json()["fallback"]
    assert fallback["registry_version"] == bad and "ArtifactError" in fallback["reason"]
    assert api.get("/v1/model").get_json()["fallback"] == fallback
    assert "hybridrec_model_fallback 1.0" in api.get("/metrics").data.decode()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "hybridrec.serving"]
    events = [line for line in lines if line["event"] == "model_fallback"]
    assert events[-1]["registry_version"] == bad and events[-1]["serving"] == newest_good
    # it keeps watching the registry: a good publish ends the fallback
    good = world.publish(world.model)
    _wait(lambda: api.get("/readyz").get_json()["model_version"] == good, 5, "reload")
    assert api.get("/readyz").get_json()["fallback"] is None
    assert "hybridrec_model_fallback 0.0" in api.get("/metrics").data.decode()


def test_no_model_published_is_503_until_one_is(serving_world):
    world = serving_world
    from hybridrec.modelstore.registry import Registry
    from hybridrec.serving import create_app
    from hybridrec.store.features import FeatureStore

    prefix = world.settings.key_prefix + "x"
    empty = create_app(
        replace(world.settings, key_prefix=prefix),
        feature_store=FeatureStore(world.redis, prefix),
        registry=Registry(world.redis, prefix),
        model_store=world.model_store,
    )
    world.apps.append(empty)
    api = empty.test_client()
    time.sleep(0.3)
    for path in ("/readyz", "/v1/users/u0/recommendations", "/v1/model", "/v1/items/i0/similar"):
        response = api.get(path)
        assert response.status_code == 503, path
        assert response.get_json()["error"]["code"] == "no_model"
    assert api.get("/healthz").status_code == 200
    assert api.post("/v1/admin/reload").status_code == 503
    Registry(world.redis, prefix).publish(world.version)
    _wait(lambda: api.get("/readyz").status_code == 200, 5, "ready")


class _Redis:
    """A redis-server on a fixed port with an append-only file, to stop and restart."""

    def __init__(self, directory: Path, port: int):
        self.directory, self.port = directory, port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--logfile",
                str(self.directory / "redis.log"),
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        _wait(lambda: _pings(client), 10, "redis-server start")
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def restartable_world(tmp_path, serving_model):
    from .conftest import _free_port, _serving_world

    server = _Redis(tmp_path, _free_port())
    server.start()
    from hybridrec.config import Settings

    settings = Settings(
        redis_url=f"redis://127.0.0.1:{server.port}/0",
        key_prefix="restart",
        data_dir=tmp_path / ".hybridrec",
        model_store=str(tmp_path / "models"),
    )
    gen = _serving_world(settings, serving_model)
    world = next(gen)
    world.server = server
    yield world
    server.stop()
    try:
        next(gen)
    except StopIteration:
        pass


def test_redis_stopped_and_restarted_mid_run(restartable_world):
    world = restartable_world
    from hybridrec.serving import create_app

    app = create_app(world.settings)  # production wiring: its own clients and timeouts
    world.apps.append(app)
    assert app.extensions["hybridrec"].reloader.wait_ready(10)
    stop = threading.Event()
    results: list = []
    paths = ["/v1/users/u0/recommendations?k=5", "/v1/users/stranger/recommendations?k=5"]
    threads = [threading.Thread(target=_hammer, args=(app, stop, results, paths)) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        world.server.stop()
        down_at = time.monotonic()
        time.sleep(1.5)
        api = app.test_client()
        put = api.put("/v1/items/x/features", json={"features": {"genre:1": 1}})
        assert put.status_code == 503 and put.get_json()["error"]["code"] == "store_unavailable"
        assert api.get("/readyz").get_json()["store"] == "unavailable"
        restart_at = time.monotonic()  # Redis may answer before start() returns
        world.server.start()
        up_at = time.monotonic()
        _wait(
            lambda: results and results[-1][2].get("degraded") is False and results[-1][0] > up_at,
            10,
            "recovery",
        )
        recovered_at = time.monotonic()
        assert recovered_at - up_at < 5.0
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert {r[1] for r in results} == {200}, "no request may fail"
    # Regression (flaky before): requests that started while start() waited for Redis to
    # answer could already see it back; only requests started before the restart count.
    during = [body for at, _, body, _ in results if down_at + 0.6 < at < restart_at]
    assert during and all(body["degraded"] for body in during)
    known = [b for b in during if b["user_id"] == "u0"]
    assert known and all(b["strategy"] == "personalized" for b in known)
    assert all(b["strategy"] == "baseline" for b in during if b["user_id"] == "stranger")
    after = [body for at, _, body, _ in results if at > recovered_at]
    assert after and not any(body["degraded"] for body in after)
    text = app.test_client().get("/metrics").data.decode()
    assert 'hybridrec_recommendations_total{degraded="true"' in text
    assert "hybridrec_store_degraded 0.0" in text


def test_an_item_put_through_another_worker_is_found_at_once(serving_world):
    """Read-your-writes for item lookups: the worker catches up with the change feed."""
    world = serving_world
    writer, reader = world.app().test_client(), world.app().test_client()
    for n in range(5):
        item = f"just-put-{n}"
        put = writer.put(f"/v1/items/{item}/features", json={"features": {"genre:2": 1.0}})
        assert put.status_code == 200
        assert reader.get(f"/v1/items/{item}/similar?k=3").status_code == 200
    assert reader.get("/v1/items/never-put/similar").status_code == 404


def test_regression_deleted_model_item_stays_deleted_after_the_feed_is_trimmed(serving_world):
    # A worker starting after the delete had left the capped change feed used to serve the
    # model item again; the store's tombstones keep it retired until it is put again.
    world = serving_world
    store = world.feature_store
    assert store.delete_features("items", "i0")
    assert "i0" in store.deleted_item_ids()
    world.redis.delete(store.changes_key)  # as if capping had trimmed the delete away
    api = world.app().test_client()
    assert api.get("/v1/items/i0/similar?k=3").status_code == 404
    ranked = api.post("/v1/recommendations", json={"user_id": "u0", "k": 1000}).get_json()
    assert "i0" not in {i["item_id"] for i in ranked["items"]}
    store.put_features("items", "i0", world.data.item_features.get("i0", {}))
    assert "i0" not in store.deleted_item_ids()
    fresh = world.app().test_client()
    assert fresh.get("/v1/items/i0/similar?k=3").status_code == 200


def test_a_worker_reconciles_with_a_store_changed_behind_its_back(serving_world):
    """Item 2 of issue 9: whatever makes a worker diverge from the store (here item keys
    written without their feed entries, as a lost feed or a restored backup would), the
    periodic check finds it and the worker heals within seconds."""
    world = serving_world
    store = world.feature_store
    app = world.app()
    api = app.test_client()
    assert api.get("/v1/items/i2/similar?k=3").status_code == 200
    assert "ghost" not in world.model.item_space_.entities
    r = world.redis
    r.hdel(store.live_key, "i2")  # gone from the store, no tombstone and no feed entry
    r.delete(store.key("items", "i2"))
    r.hset(store.key("items", "ghost"), mapping={"genre:2": 1.0})  # and one appeared
    r.hset(store.live_key, "ghost", r.incr(store.clock_key))
    assert store.get_features("items", "i2") is None
    took = _wait(
        lambda: (
            api.get("/v1/items/i2/similar?k=3").status_code == 404
            and api.get("/v1/items/ghost/similar?k=3").status_code == 200
        ),
        5,
        "reconciliation",
    )
    assert took < 3.0
    text = api.get("/metrics").data.decode()
    assert 'hybridrec_item_updates_total{op="reconcile"} 2.0' in text
    # same clock, same catalog size, other features: the digest tells
    before = app.extensions["hybridrec"].state.snapshot.item_vector("i4")
    assert store.get_features("items", "i4") != {"genre:2": 1.0}
    r.delete(store.key("items", "i4"))
    r.hset(store.key("items", "i4"), mapping={"genre:2": 1.0})
    r.hset(store.live_key, "i4", r.get(store.clock_key))
    _wait(
        lambda: (app.extensions["hybridrec"].state.snapshot.item_vector("i4") != before).any(),
        5,
        "reconciliation by digest",
    )


def test_workers_keep_the_tombstones_of_model_items_past_the_cap(serving_world):
    """Item 9 of issue 9: tombstones are capped, except those of items a served model
    knows, which workers retire (keep) when they apply the delete or load a model."""
    world = serving_world
    store, r = world.feature_store, world.redis
    api = world.app().test_client()
    assert (
        api.put("/v1/items/store-only/features", json={"features": {"genre:2": 1}}).status_code
        == 200
    )
    assert api.delete("/v1/items/store-only/features").status_code == 204
    assert api.delete("/v1/items/i0/features").status_code == 204
    _wait(lambda: r.zscore(store.retired_key, "i0") is not None, 5, "retiring i0")
    assert r.zscore(store.retired_key, "store-only") is None
    assert r.zscore(store.deleted_key, "store-only") is not None
    r.zadd(store.deleted_key, {"i5": 1})  # a model item's tombstone no worker retired yet
    world.app()  # a worker loading the model retires it
    assert r.zscore(store.retired_key, "i5") is not None
