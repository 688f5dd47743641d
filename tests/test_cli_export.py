"""Issue 10 item 11: back up and restore the store with the command line.

``features export``, ``interactions export`` and ``metadata export`` write the formats the
``load`` commands read; a round trip through a second, empty store (another key prefix on
the same real Redis) gives back the same data.
"""

from __future__ import annotations

import pandas as pd
import pytest

from hybridrec.cli._env import Env
from hybridrec.config import Settings

from .conftest import cli_for
from .synthetic import long_features, make_synthetic


def _snapshot_of(settings: Settings) -> dict:
    env = Env(settings)
    try:
        store = env.feature_store
        log = store.read_interactions().drop(columns=["log_ms", "log_seq"])  # arrival ids
        return {
            "users": dict(store.iter_features("users")),
            "items": dict(store.iter_features("items")),
            "log": log.sort_values(["user_id", "item_id"]).reset_index(drop=True),
            "seen": {u: store.get_seen(u) for u in log["user_id"].unique()},
            "metadata": dict(store.iter_metadata()),
        }
    finally:
        env.close()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_then_load_into_an_empty_store_gives_the_same_data(settings, tmp_path, suffix):
    source = cli_for(settings)
    data = make_synthetic(n_users=50, n_items=30, seed=4)
    env = Env(settings)
    env.feature_store.load_features("users", long_features(data.user_features))
    env.feature_store.load_features("items", long_features(data.item_features))
    env.feature_store.put_features("items", 'odd id, "quoted"', {"genre:0": 0.25})
    env.feature_store.add_interactions(data.interactions)
    titles = {f"i{n}": {"title": f"Film, number {n}"} for n in range(0, 30, 3)}
    titles["i1"] = {"title": "One", "url": "https://example.org/1"}
    for item_id, meta in titles.items():
        env.feature_store.put_metadata(item_id, meta)
    env.close()
    before = _snapshot_of(settings)

    files = {name: tmp_path / f"{name}{suffix}" for name in ("users", "items", "log", "meta")}
    assert "wrote 50 features of 50 users" in source(
        "features", "export", "users", str(files["users"])
    )
    source("features", "export", "items", str(files["items"]))
    assert f"wrote {len(data.interactions)} interactions" in source(
        "interactions", "export", str(files["log"])
    )
    assert "wrote the metadata of 11 items" in source("metadata", "export", str(files["meta"]))

    target = Settings(
        redis_url=settings.redis_url,
        key_prefix=settings.key_prefix + "copy",
        data_dir=settings.data_dir,
        model_store=settings.model_store,
    )
    restore = cli_for(target)
    restore("features", "load", "users", str(files["users"]))
    restore("features", "load", "items", str(files["items"]))
    restore("interactions", "load", str(files["log"]))
    restore("metadata", "load", str(files["meta"]))
    after = _snapshot_of(target)

    assert after["users"] == before["users"]
    assert after["items"] == before["items"]
    assert after["seen"] == before["seen"]
    assert after["metadata"] == before["metadata"] == titles
    pd.testing.assert_frame_equal(after["log"], before["log"])


def test_exporting_an_empty_store_says_so(settings, tmp_path):
    run = cli_for(settings)
    out = run("interactions", "export", str(tmp_path / "x.csv"), code=1)
    assert "the interaction log is empty" in out
    assert "no users with features" in run(
        "features", "export", "users", str(tmp_path / "u.csv"), code=1
    )
    assert "no item metadata" in run("metadata", "export", str(tmp_path / "m.csv"), code=1)
    Env(settings).feature_store.put_features("users", "u1", {"a": 1.0})
    out = run("features", "export", "users", str(tmp_path / "missing" / "u.csv"), code=1)
    assert "cannot write" in out and "Traceback" not in out
