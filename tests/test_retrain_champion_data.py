"""Issue 10 item 1: a champion is never judged on data it may have been trained on.

Bug pinned: the demo published a model whose manifest did not say what it was trained
on, so ``hybridrec retrain`` after 11 new interactions trained anyway and judged the
champion on "the newest 10%" of the log, its own training data (it then refused a
challenger better on precision because of the champion's inflated AUC). Every
publishing path now records the log position; a champion without one is judged only on
interactions logged after retrain first saw it, or the cycle is skipped with the reason.

Everything runs against a real Redis (the ``settings`` fixture).
"""

from __future__ import annotations

import time

import pandas as pd
import pytest

from hybridrec.cli._env import Env
from hybridrec.io.files import write_interactions
from hybridrec.training.retrain import retrain_once

from .synthetic import long_features, make_synthetic

SMALL = {"no_components": 8, "epochs": 5}


@pytest.fixture
def env(settings):
    e = Env(settings)
    data = make_synthetic(n_users=160, n_items=80, seed=5)
    e.data = data
    e.feature_store.add_interactions(data.interactions)
    e.feature_store.load_features("users", long_features(data.user_features))
    e.feature_store.load_features("items", long_features(data.item_features))
    yield e
    e.close()


def _eleven_new(env) -> pd.DataFrame:
    new = pd.DataFrame(
        {"user_id": [f"u{n}" for n in range(11)], "item_id": "i3", "weight": 1.0}
    ).assign(timestamp=10**9)
    env.feature_store.add_interactions(new)
    return new


def _later(n: int) -> pd.DataFrame:
    """``n`` interactions that happen after the fixture's (newer timestamps)."""
    later = make_synthetic(n_users=160, n_items=80, seed=6).interactions.iloc[:n]
    return later.assign(timestamp=later["timestamp"] + 10**6)


def _publish_by(how: str, env, cli) -> str:
    """Publish a first model the way a user would with ``how``; return its version."""
    if how == "train --publish":
        return cli("train", "--components", "8", "--epochs", "5", "--publish").split()[-1]
    if how == "demo":
        from hybridrec.cli._serve import _train_and_publish

        return _train_and_publish(env, epochs=5)
    if how == "retrain":
        return retrain_once(
            env.feature_store, env.model_store, env.registry, params=SMALL, seed=0
        ).version
    if how == "models promote":
        version = cli("train", "--components", "8", "--epochs", "5").split()[-1]
        cli("models", "promote", version)
        return version
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["train --publish", "demo", "retrain", "models promote"])
def test_every_published_model_records_its_data_and_few_new_interactions_skip(how, env, cli):
    version = _publish_by(how, env, cli)
    assert env.registry.current() == version
    data = env.model_store.load(version).manifest_["extra"]["data"]
    assert data["log_last_id"] == env.feature_store.read_interactions().attrs["last_id"]
    assert data["interactions"] == len(env.data.interactions)

    _eleven_new(env)  # under 1% of the log
    result = retrain_once(env.feature_store, env.model_store, env.registry, params=SMALL)
    assert result.status == "skipped", result.report.get("holdout")
    needed = int(0.01 * (len(env.data.interactions) + 11))  # the 1% rule
    assert result.reasons == [f"11 new interactions since {version}, need {needed}"]
    assert env.registry.current() == version


def test_a_champion_without_a_data_record_is_judged_only_on_later_interactions(env):
    """A model published by code that recorded nothing (an older hybridrec, a script)."""
    from hybridrec.modelstore.registry import publish_model
    from hybridrec.training.trainer import fit_model

    model = fit_model(env.feature_store.read_interactions(), None, None, SMALL, seed=0)
    version = publish_model(env.model_store, env.registry, model)["version"]
    first = retrain_once(env.feature_store, env.model_store, env.registry, params=SMALL)
    assert first.status == "skipped"
    assert "does not record what it was trained on" in first.reasons[0], first.reasons
    assert env.model_store.versions() == [version]  # nothing trained, nothing judged

    later = _later(300)
    env.feature_store.add_interactions(later)
    second = retrain_once(
        env.feature_store, env.model_store, env.registry, params=SMALL, tolerance=1.0
    )
    assert second.status == "published", second.reasons
    holdout = second.report["holdout"]
    assert holdout["interactions"] == len(later)  # exactly what arrived after it was seen
    assert holdout["rule"].startswith("log entries after ")
    assert holdout["rule"].endswith("when its training data was unknown")
    assert second.report["champion"]["version"] == version


def test_a_file_without_timestamps_does_not_count_as_old_data(env, cli, tmp_path):
    """Row-order 'timestamps' (0..n-1) said nothing about time, yet the retrain took every
    logged interaction newer than n-1 as unseen: the whole log, training data included."""
    path = tmp_path / "train.csv"
    write_interactions(env.data.interactions[["user_id", "item_id"]], path)
    cli("train", "--interactions", str(path), "--components", "8", "--epochs", "3", "--publish")
    version = env.registry.current()
    data = env.model_store.load(version).manifest_["extra"]["data"]
    assert data["max_timestamp"] is None and data["log_last_id"] is None
    result = retrain_once(env.feature_store, env.model_store, env.registry, params=SMALL)
    assert result.status == "skipped", result.report.get("holdout")
    assert "does not record what it was trained on" in result.reasons[0]


def test_a_restored_log_is_not_taken_for_new_data(env, cli, tmp_path):
    """A log rebuilt from a backup has new entry ids: only timestamps tell old from new."""
    version = _publish_by("train --publish", env, cli)
    cli("interactions", "export", str(tmp_path / "log.parquet"))
    env.redis.delete(env.feature_store.log_key)
    cli("interactions", "load", str(tmp_path / "log.parquet"))  # every entry id is new
    result = retrain_once(env.feature_store, env.model_store, env.registry, params=SMALL)
    assert result.status == "skipped", result.report.get("holdout")
    assert result.reasons[0].startswith(f"0 new interactions since {version}")


def test_a_file_without_timestamps_is_logged_as_now(env, cli, tmp_path):
    """Its rows were logged with timestamps 0..n-1, older than anything: a time split put
    the newest data first, and the champion's newest timestamp hid it."""
    version = _publish_by("train --publish", env, cli)
    path = tmp_path / "new.csv"
    write_interactions(_later(300)[["user_id", "item_id"]], path)
    before = int(time.time())
    cli("interactions", "load", str(path))
    logged = env.feature_store.read_interactions().iloc[-300:]
    assert (logged["timestamp"] >= before).all()
    result = retrain_once(
        env.feature_store, env.model_store, env.registry, params=SMALL, tolerance=1.0
    )
    assert result.report["holdout"]["interactions"] == 300, result.reasons
    assert result.report["champion"]["version"] == version


@pytest.mark.slow
def test_retrain_right_after_the_demo_skips(cli, settings, tmp_path):
    """The reproduction from the issue: the demo on the bundled sample, 11 interactions,
    ``hybridrec retrain``."""
    cli("demo", "--no-serve", "--epochs", "1")
    path = tmp_path / "eleven.csv"
    path.write_text("user_id,item_id\n" + "".join(f"u{n},1\n" for n in range(11)))
    cli("interactions", "load", str(path))
    result = cli("retrain")
    assert result.startswith("skipped: "), result
    assert "11 new interactions since" in result


def test_promoting_a_model_without_a_data_record_marks_where_its_unseen_data_starts(env, cli):
    from hybridrec.training.trainer import fit_model

    model = fit_model(env.feature_store.read_interactions(), None, None, SMALL, seed=0)
    version = env.model_store.write(model)["version"]  # an artifact that records nothing
    cli("models", "promote", version)
    later = _later(300)
    env.feature_store.add_interactions(later)
    result = retrain_once(
        env.feature_store, env.model_store, env.registry, params=SMALL, tolerance=1.0
    )
    assert result.status == "published", result.reasons  # no cycle lost to marking
    assert result.report["holdout"]["interactions"] == len(later)


def test_models_list_says_what_each_version_was_measured_on(env, cli):
    """Issue 10 item 11: metrics on different holdouts were listed side by side unlabelled."""
    first = _publish_by("train --publish", env, cli)
    env.feature_store.add_interactions(_later(300))
    second = retrain_once(
        env.feature_store, env.model_store, env.registry, params=SMALL, tolerance=1.0
    )
    lines = cli("models", "list").splitlines()
    assert lines[0].endswith("METRICS (HOLDOUT)")
    (row1,) = [line for line in lines if first in line]
    (row2,) = [line for line in lines if second.version in line]
    n = len(env.data.interactions)
    assert row1.endswith(f"on newest 10%, {n - int(n * 0.9):,} interactions"), row1
    assert row2.endswith(
        "on log entries after the champion's data, newer than its newest, 300 interactions"
    ), row2
    assert lines[-1].startswith("metrics measured on different holdouts are not comparable")
