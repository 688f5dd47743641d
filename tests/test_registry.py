"""The registry against real Redis (server and cluster), and the publish ordering."""

from __future__ import annotations

import threading

import pytest

from hybridrec.modelstore.artifact import ArtifactError
from hybridrec.modelstore.registry import (
    Registry,
    RegistryError,
    promote_model,
    publish_model,
    rollback_model,
    store_model,
)
from hybridrec.modelstore.store import ModelStore

from .synthetic import make_synthetic


@pytest.fixture
def registry(any_redis_client) -> Registry:
    return Registry(any_redis_client, "hr")


@pytest.fixture(scope="module")
def model():
    from hybridrec.model.hybrid import HybridLightFM

    data = make_synthetic(n_users=30, n_items=20, per_user=5, seed=2)
    return HybridLightFM(no_components=4, epochs=1, random_state=0).fit(
        data.interactions, data.user_features, data.item_features
    )


def test_empty_registry(registry):
    assert registry.current() is None
    assert registry.generation() == 0
    assert registry.history() == [] and registry.versions() == []
    assert registry.info("v1") is None and registry.rollback_target() is None
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()


def test_publish_promote_rollback(registry):
    assert registry.publish("v1", {"metrics": {"ndcg": 0.1}}) == 1
    assert registry.publish("v2", {"metrics": {"ndcg": 0.2}, "status": "published"}) == 2
    assert registry.publish("v2") == 2  # same version: no move, no new generation
    registry.record("v3", {"status": "refused", "metrics": {"ndcg": 0.0}, "reasons": ["worse"]})
    registry.record("v4", {"status": "candidate"})
    assert (registry.current(), registry.history()) == ("v2", ["v1", "v2"])

    with pytest.raises(RegistryError, match="refused"):
        registry.promote("v3")
    with pytest.raises(RegistryError, match="not in the registry"):
        registry.promote("v9")
    assert registry.promote("v4") == 3
    assert registry.promote("v1") == 4
    assert registry.history() == ["v1", "v2", "v4", "v1"]

    assert registry.rollback() == "v4"  # walks back one pointer move at a time
    assert registry.rollback() == "v2"
    assert registry.info("v4")["status"] == "rolled_back"
    assert registry.rollback() == "v1"
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()
    assert registry.promote("v3", force=True) == 8
    assert registry.current() == "v3" and registry.generation() == 8

    info = registry.info("v3")
    assert info["status"] == "published" and info["current"] is True
    assert info["reasons"] == ["worse"] and info["metrics"] == {"ndcg": 0.0}
    listed = registry.versions()
    assert [v["version"] for v in listed] == ["v1", "v2", "v3", "v4"]
    assert [v["current"] for v in listed] == [False, False, True, False]
    assert listed[0]["metrics"] == {"ndcg": 0.1} and "published_at" in listed[0]


def test_record_merges_and_checks_status(registry):
    registry.record("v1", {"metrics": {"a": 1}, "status": "candidate"})
    registry.record("v1", {"reasons": ["x"], "version": "ignored"})
    info = registry.info("v1")
    assert info["metrics"] == {"a": 1} and info["reasons"] == ["x"] and info["version"] == "v1"
    with pytest.raises(ValueError, match="status"):
        registry.record("v1", {"status": "great"})


def test_rollback_refuses_a_stale_expectation(registry):
    registry.publish("v1")
    registry.publish("v2")
    with pytest.raises(RegistryError, match="changed meanwhile"):
        registry.rollback(expect="v0")
    assert registry.current() == "v2"


def test_pointer_moves_are_announced(registry, any_redis_client):
    pubsub = any_redis_client.pubsub()
    pubsub.subscribe(registry.channel)
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    registry.publish("v1")
    message = None
    for _ in range(20):
        message = pubsub.get_message(timeout=0.1)
        if message and message["type"] == "message":
            break
    pubsub.close()
    assert message is not None and message["data"] == "1 v1"


def test_racing_publishers_keep_history_whole(registry):
    """Eight threads publishing at once: every move lands once, in generation order."""
    threads, per_thread = 8, 25
    barrier = threading.Barrier(threads)
    generations: dict[str, int] = {}

    def publisher(t: int):
        barrier.wait()
        for n in range(per_thread):
            version = f"t{t}-{n}"
            generations[version] = registry.publish(version, {"by": t})

    workers = [threading.Thread(target=publisher, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    history = registry.history()
    total = threads * per_thread
    assert len(history) == total and len(set(history)) == total
    assert registry.generation() == total
    assert sorted(generations.values()) == list(range(1, total + 1))
    assert history == sorted(generations, key=generations.get)  # history order = move order
    assert registry.current() == history[-1]


# -- service functions: ordering and crashes ------------------------------------------------


def test_publish_model_then_promote_and_rollback(registry, model, tmp_path):
    store = ModelStore(tmp_path / "models")
    v1 = publish_model(store, registry, model, {"ndcg": 0.1}, version="v1")["version"]
    v2 = publish_model(store, registry, model, {"ndcg": 0.2}, version="v2")["version"]
    assert (v1, v2, registry.current()) == ("v1", "v2", "v2")
    assert registry.info("v2")["metrics"] == {"ndcg": 0.2}
    store_model(store, registry, model, {"ndcg": 0.0}, version="v3", status="refused")
    assert registry.current() == "v2" and registry.info("v3")["status"] == "refused"
    assert rollback_model(store, registry) == "v1"
    assert promote_model(store, registry, "v2") == 4
    with pytest.raises(RegistryError, match="refused"):
        promote_model(store, registry, "v3")


def test_a_crash_between_write_and_pointer_move_keeps_the_old_version(registry, model, tmp_path):
    class CrashBeforeMove(Registry):
        def publish(self, version, info=None):
            raise KeyboardInterrupt("power cut")

    store = ModelStore(tmp_path / "models")
    publish_model(store, registry, model, version="v1")
    with pytest.raises(KeyboardInterrupt):
        publish_model(store, CrashBeforeMove(registry.client, "hr"), model, version="v2")
    assert registry.current() == "v1"
    assert store.load(registry.current()) is not None
    assert registry.info("v2")["status"] == "candidate"  # written and recorded, not live
    assert promote_model(store, registry, "v2") == 2  # an operator can still promote it


def test_a_crash_before_recording_leaves_an_orphan_that_can_be_promoted(registry, model, tmp_path):
    class CrashBeforeRecord(Registry):
        def record(self, version, info):
            raise KeyboardInterrupt("power cut")

    store = ModelStore(tmp_path / "models")
    publish_model(store, registry, model, version="v1")
    with pytest.raises(KeyboardInterrupt):
        publish_model(store, CrashBeforeRecord(registry.client, "hr"), model, version="v2")
    assert registry.current() == "v1" and registry.info("v2") is None
    assert store.exists("v2")
    promote_model(store, registry, "v2")
    assert registry.current() == "v2" and registry.info("v2")["sizes"]["n_users"] == 30


def test_promote_and_rollback_refuse_missing_or_corrupt_artifacts(registry, model, tmp_path):
    store = ModelStore(tmp_path / "models")
    publish_model(store, registry, model, version="v1")
    publish_model(store, registry, model, version="v2")
    registry.record("ghost", {"status": "candidate"})
    with pytest.raises(ArtifactError, match="no model version 'ghost'"):
        promote_model(store, registry, "ghost")
    path = tmp_path / "models" / "v1" / "model.npz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="truncated"):
        rollback_model(store, registry)
    assert registry.current() == "v2"
