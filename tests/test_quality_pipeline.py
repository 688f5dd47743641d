"""The blend through real processes: ``hybridrec train --publish`` on a real Redis, then
``hybridrec serve`` answering over HTTP; a retraining cycle with warm start; bad blend
settings refused by the command line (issue 12)."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import requests

from hybridrec.cli._env import Env
from hybridrec.model import HybridLightFM
from hybridrec.modelstore.registry import publish_model
from hybridrec.serving.snapshot import Snapshot
from hybridrec.training.retrain import retrain_once

from .conftest import cli_for
from .live_server import HYBRIDREC, live_server, server_env
from .synthetic import long_features, make_synthetic

SMALL = {"no_components": 8, "epochs": 5, "item_item_l2": 5.0}


@pytest.fixture
def loaded(settings, tmp_path):
    """The synthetic data loaded into the store through the command line."""
    data = make_synthetic(n_users=90, n_items=70, n_groups=4, per_user=10, seed=11)
    cli = cli_for(settings)
    files = {
        "users": long_features(data.user_features),
        "items": long_features(data.item_features),
    }
    for kind, frame in files.items():
        path = tmp_path / f"{kind}.csv"
        frame.to_csv(path, index=False)
        cli("features", "load", kind, str(path))
    path = tmp_path / "interactions.csv"
    data.interactions.to_csv(path, index=False)
    cli("interactions", "load", str(path))
    params = tmp_path / "params.json"
    params.write_text(json.dumps(SMALL))
    return data, cli, params


def _version(output: str) -> str:
    return output.strip().splitlines()[-1]


def _wait_for(server, version: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while requests.get(f"{server.base}/v1/model", timeout=5).json()["model_version"] != version:
        assert time.monotonic() < deadline, f"the server never loaded {version}"
        time.sleep(0.1)


def test_train_publish_serve_answers_warm_users_with_the_blend(settings, loaded, tmp_path):
    data, cli, params = loaded
    version = _version(cli("train", "--params", str(params), "--holdout", "0", "--publish"))
    env = Env(settings)
    model = env.model_store.load(version)
    manifest = env.model_store.verify(version)
    assert manifest["blend"]["format"] == 1 and manifest["blend"]["file"] == "blend.npz"
    local = Snapshot.from_model(model)
    with live_server(server_env(settings), tmp_path / "serve") as server:
        _wait_for(server, version)
        info = requests.get(f"{server.base}/v1/model", timeout=5).json()
        assert info["blend"]["params"]["item_item_l2"] == 5.0
        uid = "u3"
        body = requests.get(f"{server.base}/v1/users/{uid}/recommendations?k=5", timeout=10).json()
        assert body["score_type"] == "blend" and body["strategy"] == "personalized"
        features, seen = env.feature_store.user_context(uid)
        assert seen and not {i["item_id"] for i in body["items"]} & seen
        features = features or {}
        want = local.recommend(uid, features, 5, exclude=seen, history=seen)
        assert [i["item_id"] for i in body["items"]] == [i for i, _ in want.items]
        np.testing.assert_allclose(
            [i["score"] for i in body["items"]], [s for _, s in want.items], rtol=1e-5
        )

        # a user the model cannot place: the popularity baseline, as before
        body = requests.get(f"{server.base}/v1/users/stranger/recommendations?k=5", timeout=10)
        assert body.json()["strategy"] == "baseline"
        assert body.json()["score_type"] == "popularity"

        # a new user with features, no history: the factor part (+ popularity)
        cold = requests.post(
            f"{server.base}/v1/recommendations",
            json={"features": {"genre:1": 1.0}, "k": 5},
            timeout=10,
        ).json()
        want = local.recommend(None, {"genre:1": 1.0}, 5)
        assert [i["item_id"] for i in cold["items"]] == [i for i, _ in want.items]
        assert cold["score_type"] == ("blend" if want.score_parts else "model")

        # an artifact written without a blend (older hybridrec) is served by LightFM alone
        old = HybridLightFM(no_components=8, epochs=3, random_state=0).fit(
            data.interactions, data.user_features, data.item_features
        )
        old_version = publish_model(env.model_store, env.registry, old)["version"]
        _wait_for(server, old_version)
        body = requests.get(f"{server.base}/v1/users/{uid}/recommendations?k=5", timeout=10).json()
        assert body["model_version"] == old_version
        assert body["score_type"] == "model" and body["strategy"] == "personalized"
        assert requests.get(f"{server.base}/v1/model", timeout=5).json()["blend"] is None
    env.close()


def test_item_item_weight_zero_serves_lightfm_alone(settings, loaded, tmp_path):
    _, cli, params = loaded
    version = _version(
        cli(
            "train",
            "--params",
            str(params),
            "--item-item-weight",
            "0",
            "--holdout",
            "0",
            "--publish",
        )
    )
    with live_server(server_env(settings), tmp_path / "serve") as server:
        _wait_for(server, version)
        body = requests.get(f"{server.base}/v1/users/u3/recommendations?k=5", timeout=10).json()
        assert body["score_type"] == "model"


def test_warm_start_refits_the_item_item_part_on_the_new_data(settings):
    env = Env(settings)
    data = make_synthetic(n_users=90, n_items=70, n_groups=4, per_user=10, seed=11)
    df = data.interactions.sort_values("timestamp")
    cut = int(0.7 * len(df))
    env.feature_store.add_interactions(df.iloc[:cut])
    env.feature_store.load_features("users", long_features(data.user_features))
    env.feature_store.load_features("items", long_features(data.item_features))
    first = retrain_once(env.feature_store, env.model_store, env.registry, params=SMALL, seed=0)
    assert first.status == "published"
    fans = [f"u{n}" for n in range(12)]
    newest = pd.DataFrame(
        {
            "user_id": fans * 2,
            "item_id": ["brand-new"] * 12 + ["i1"] * 12,
            "weight": 1.0,
            "timestamp": np.arange(24) + 10**7,
        }
    )
    env.feature_store.add_interactions(pd.concat([df.iloc[cut:], newest]))
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
    model = env.model_store.load(second.version)
    assert model.blend_params_["item_item_l2"] == 5.0  # the champion's blend settings
    item_item = model.item_item_
    assert item_item.n_items_ == len(model.item_ids_)
    new = model.item_ids_.get("brand-new")
    assert new in set(item_item.items_.tolist())  # refitted: the new item has weights
    scores = item_item.scores([model.item_ids_.get("i1")])
    assert scores[new] != 0  # liked together by the same users
    env.close()


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("HYBRIDREC_ITEM_ITEM_WEIGHT", "-1", "HYBRIDREC_ITEM_ITEM_WEIGHT=-1.0: must be a finite"),
        ("HYBRIDREC_ITEM_ITEM_WEIGHT", "nan", "HYBRIDREC_ITEM_ITEM_WEIGHT=nan: must be a finite"),
        ("HYBRIDREC_ITEM_ITEM_WEIGHT", "lots", "HYBRIDREC_ITEM_ITEM_WEIGHT='lots' is not a number"),
        (
            "HYBRIDREC_ITEM_ITEM_MAX_ITEMS",
            "0",
            "HYBRIDREC_ITEM_ITEM_MAX_ITEMS=0: must be an integer",
        ),
    ],
)
def test_bad_blend_settings_stop_the_command_with_one_line(settings, variable, value, message):
    env = {**server_env(settings), variable: value}
    for args in (["train"], ["serve", "--port", "1"], ["retrain"]):
        proc = subprocess.run(
            [HYBRIDREC, *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr


def test_bad_blend_parameters_in_a_params_file_are_refused(settings, loaded, tmp_path):
    _, cli, _ = loaded
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"item_item_max_items": 0}))
    out = cli("train", "--params", str(bad), code=1)
    assert "cannot train: item_item_max_items must be an integer >= 1, got 0" in out
    out = cli("train", "--item-item-weight", "-2", code=2)
    assert "--item-item-weight" in out
