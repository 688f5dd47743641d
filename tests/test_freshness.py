"""Keeping models fresh: quality gate, retrain cycles, warm start, the loop (issue 5).

Cycles run against a real Redis (the ``settings`` fixture), never a mock.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import numpy as np
import pandas as pd
import pytest

from hybridrec.cli._env import Env
from hybridrec.model.hybrid import HybridLightFM
from hybridrec.store.connection import redis_server_binary
from hybridrec.training.gate import quality_gate
from hybridrec.training.retrain import parse_interval, retrain_once, run_loop

from .synthetic import long_features, make_synthetic

# LightFM alone: these cycles judge LightFM settings (10 vs 30 epochs, a learning rate of
# 1e-5), whose differences the blend's item-item part dilutes below the gate's noise on
# 160 users; the blend's own cycle is tested in test_quality_pipeline.py
SMALL = {"no_components": 8, "epochs": 10, "item_item_weight": 0.0}


def _metrics(all_p, all_auc, cold_p=0.3, cold_auc=0.8, cold_users=5):
    seg = lambda p, a, u: {"users": u, "precision": p, "recall": 0, "ndcg": 0, "auc": a}  # noqa: E731
    return {
        "segments": {
            "all": seg(all_p, all_auc, 10),
            "cold_users": seg(cold_p, cold_auc, cold_users),
        }
    }


def test_gate_accepts_within_tolerance_and_refuses_beyond():
    champion = _metrics(0.20, 0.80)
    assert quality_gate(_metrics(0.25, 0.85), champion).passed
    assert quality_gate(_metrics(0.197, 0.79), champion, tolerance=0.02).passed  # -1.5%
    worse = quality_gate(_metrics(0.19, 0.80), champion, tolerance=0.02)  # -5% precision
    assert not worse.passed
    assert worse.reasons == ["all precision: challenger 0.1900 < champion 0.2000 - 2% = 0.1960"]
    cold_worse = quality_gate(_metrics(0.2, 0.8, cold_auc=0.5), champion)
    assert [c["segment"] for c in cold_worse.checks if not c["passed"]] == ["cold_users"]
    assert quality_gate(_metrics(0.1, 0.1), None).passed  # first model: nothing to beat
    # a segment without users on either side is not judged
    assert quality_gate(_metrics(0.2, 0.8, cold_p=0.0, cold_users=0), champion).passed


@pytest.mark.parametrize(
    "text, seconds", [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1.5m", 90)]
)
def test_parse_interval(text, seconds):
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "15x", "-1m", "0s"])
def test_parse_interval_refuses(text):
    with pytest.raises(ValueError):
        parse_interval(text)


@pytest.fixture
def env(settings):
    e = Env(settings)
    data = make_synthetic(n_users=160, n_items=80, seed=5)
    df = data.interactions.sort_values("timestamp")
    e.later = [df.iloc[int(len(df) * a) : int(len(df) * b)] for a, b in ((0.6, 0.8), (0.8, 1))]
    e.feature_store.add_interactions(df.iloc[: int(len(df) * 0.6)])
    e.feature_store.load_features("users", long_features(data.user_features))
    e.feature_store.load_features("items", long_features(data.item_features))
    yield e
    e.close()


def test_gate_publishes_a_better_challenger_and_refuses_a_worse_one(env):
    first = retrain_once(env.feature_store, env.model_store, env.registry, params=SMALL, seed=0)
    assert first.status == "published" and first.champion is None
    assert env.registry.current() == first.version
    again = retrain_once(env.feature_store, env.model_store, env.registry, params=SMALL)
    assert again.status == "skipped"  # nothing new since the champion's data

    env.feature_store.add_interactions(env.later[0])
    worse = retrain_once(
        env.feature_store,
        env.model_store,
        env.registry,
        seed=0,
        params={**SMALL, "epochs": 1, "learning_rate": 1e-5},
    )
    assert worse.status == "refused", worse.report["decision"]
    assert worse.reasons
    assert env.registry.current() == first.version  # pointer did not move
    assert env.model_store.exists(worse.version)  # the refused model is kept...
    assert env.registry.info(worse.version)["status"] == "refused"  # ...and marked
    listed = {v["version"]: v for v in env.registry.versions()}
    assert listed[worse.version]["status"] == "refused"

    env.feature_store.add_interactions(env.later[1])
    better = retrain_once(
        env.feature_store,
        env.model_store,
        env.registry,
        seed=1,
        params={**SMALL, "epochs": 30},
    )
    assert better.status == "published", better.reasons
    assert env.registry.current() == better.version
    # every cycle leaves its report beside the artifact
    report = json.loads(env.model_store.read_report(worse.version, "report.json"))
    assert report["decision"]["status"] == "refused"
    assert report["champion"]["version"] == first.version
    assert report["holdout"]["interactions"] == len(env.later[0])
    assert set(report["challenger"]["metrics"]["segments"]) >= {"all", "cold_users"}
    png = env.model_store.read_report(worse.version, "report.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_warm_start_cycle_continues_from_the_champion(env):
    first = retrain_once(env.feature_store, env.model_store, env.registry, params=SMALL, seed=0)
    env.feature_store.add_interactions(env.later[0])
    new = pd.DataFrame(
        {
            "user_id": ["newcomer"] * 3,
            "item_id": ["i1", "i5", "i9"],
            "weight": 1.0,
            "timestamp": [10**6, 10**6 + 1, 10**6 + 2],
        }
    )
    env.feature_store.add_interactions(new)
    second = retrain_once(
        env.feature_store,
        env.model_store,
        env.registry,
        warm_start=True,
        warm_epochs=2,
        seed=0,
        tolerance=1.0,
    )
    assert second.report["mode"] == "warm_start"
    assert second.status == "published"
    model = env.model_store.load(second.version)
    assert "newcomer" in model.user_ids_
    assert first.version != second.version


def test_warm_start_keeps_known_vectors_and_adds_new_rows():
    data = make_synthetic(n_users=60, n_items=40, seed=2)
    df = data.interactions.sort_values("timestamp")
    old = HybridLightFM(no_components=6, epochs=3, random_state=0).fit(
        df.iloc[: len(df) // 2], data.user_features, data.item_features
    )
    grown = old.warm_start(df, data.user_features, data.item_features, epochs=0)
    assert len(grown.user_ids_) > len(old.user_ids_)
    # known ids keep their internal position; their rows and accumulators are copied
    assert grown.user_ids_.external[: len(old.user_ids_)] == old.user_ids_.external
    n = len(old.user_ids_)
    np.testing.assert_array_equal(grown.user_embeddings[:n], old.user_embeddings[:n])
    np.testing.assert_array_equal(
        grown.user_embedding_gradients[:n], old.user_embedding_gradients[:n]
    )
    # vocabulary columns move behind the grown indicator block, with their values
    n_new = len(grown.user_ids_)
    np.testing.assert_array_equal(
        grown.user_embeddings[n_new : n_new + len(old.user_space_.vocabulary)],
        old.user_embeddings[n:],
    )
    # new rows are initialised as LightFM does: |x| <= 0.5 / d, zero bias, fresh adagrad
    new_rows = grown.user_embeddings[n:n_new]
    assert np.abs(new_rows).max() <= 0.5 / 6 and np.abs(new_rows).max() > 0
    assert (grown.user_biases[n:n_new] == 0).all()
    assert (grown.user_embedding_gradients[n:n_new] == 1).all()
    # zero epochs: scores of known users and items are unchanged
    user = old.user_ids_.external[0]
    items = list(old.item_ids_.external)
    np.testing.assert_allclose(
        grown.predict_online(user, item_ids=items).scores,
        old.predict_online(user, item_ids=items).scores,
        atol=1e-6,
    )
    trained = old.warm_start(df, data.user_features, data.item_features, epochs=2)
    assert len(trained.epoch_seconds_) == 2
    assert not np.allclose(trained.user_embeddings[:n], old.user_embeddings[:n])


def test_warm_start_needs_the_optimizer_state(tmp_path):
    from hybridrec.model.hybrid import NotFittedError
    from hybridrec.modelstore.artifact import load_model, save_model

    data = make_synthetic(n_users=30, n_items=20, seed=1)
    model = HybridLightFM(no_components=4, epochs=1).fit(data.interactions)
    save_model(model, tmp_path / "a")
    with pytest.raises(NotFittedError, match="with_optimizer=True"):
        load_model(tmp_path / "a").warm_start(data.interactions)
    load_model(tmp_path / "a", with_optimizer=True).warm_start(data.interactions, epochs=1)


def _start(port: int, directory) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    for _ in range(200):
        try:
            if redis.Redis(port=port, socket_connect_timeout=0.2).ping():
                return proc
        except redis.ConnectionError:
            time.sleep(0.02)
    raise RuntimeError("redis-server did not start")


def test_loop_survives_a_redis_restart(tmp_path):
    from hybridrec.config import Settings
    from hybridrec.errors import StoreUnavailable

    from .conftest import _free_port

    port = _free_port()
    proc = _start(port, tmp_path)
    env = Env(
        Settings(
            redis_url=f"redis://127.0.0.1:{port}/0",
            model_store=str(tmp_path / "m"),
            data_dir=tmp_path,
        )
    )
    data = make_synthetic(n_users=60, n_items=40, seed=4)
    outcomes: list[str] = []

    def cycle():
        try:
            env.feature_store.add_interactions(data.interactions.iloc[:50])
            r = retrain_once(
                env.feature_store,
                env.model_store,
                env.registry,
                params={"no_components": 4, "epochs": 1},
                tolerance=1.0,
            )
        except StoreUnavailable:
            outcomes.append("store down")
            raise
        outcomes.append(r.status)
        return r

    stop = threading.Event()
    done: list[int] = []
    t = threading.Thread(
        target=lambda: done.append(run_loop(cycle, 0.05, stop=stop, install_signals=False))
    )
    t.start()
    try:
        deadline = time.monotonic() + 30
        while "published" not in outcomes and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.terminate()
        proc.wait(10)
        while "store down" not in outcomes and time.monotonic() < deadline:
            time.sleep(0.05)
        n_failed = len(outcomes)
        proc = _start(port, tmp_path)  # a new, empty server on the same port
        while "published" not in outcomes[n_failed:] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(30)
        proc.terminate()
        proc.wait(10)
        env.close()
    assert outcomes[0] == "published"
    assert "store down" in outcomes  # cycles failed while Redis was down...
    assert "published" in outcomes[n_failed:]  # ...and the loop recovered by itself
    assert done and done[0] == len(outcomes)


def test_champion_trained_from_a_file_is_judged_on_newer_timestamps(env):
    from hybridrec.training.trainer import data_summary, fit_model

    logged = env.feature_store.read_interactions()
    champion = fit_model(logged, None, None, SMALL, seed=0)
    version = env.model_store.write(champion, extra={"data": data_summary(logged)})["version"]
    env.registry.publish(version, {"status": "published"})
    newer = env.later[0]
    env.feature_store.add_interactions(newer)
    result = retrain_once(
        env.feature_store, env.model_store, env.registry, params=SMALL, tolerance=1.0
    )
    assert result.report["holdout"]["rule"] == "newer than the champion's data"
    assert result.report["holdout"]["interactions"] == len(newer)
