"""Splits, segmented evaluation and the trainer on synthetic data."""

import numpy as np
import pytest

from hybridrec.training.evaluation import SEGMENTS, evaluate, format_table
from hybridrec.training.split import split_interactions, time_holdout
from hybridrec.training.trainer import train_model
from hybridrec.training.tune import tune

from .synthetic import make_synthetic


@pytest.fixture(scope="module")
def data():
    return make_synthetic(seed=3)


def test_split_separates_cold_users_and_items(data):
    s = split_interactions(data.interactions, cold_user_skip_first=2, seed=1)
    train_users, train_items = set(s.train.user_id), set(s.train.item_id)
    assert s.cold_users and s.cold_items
    assert not (train_users & s.cold_users)
    assert not (train_items & s.cold_items)
    # cold users' first two interactions stand for sign-up and are in neither set
    df = data.interactions.sort_values("timestamp")
    for user in list(s.cold_users)[:5]:
        first = set(df[df.user_id == user].item_id.head(2))
        assert not first & set(s.test[s.test.user_id == user].item_id)
    assert len(s.train) + len(s.test) < len(df)
    # warm users: test interactions are newer than their train interactions
    warm = s.test[~s.test.user_id.isin(s.cold_users) & ~s.test.item_id.isin(s.cold_items)]
    newest_train = s.train.groupby("user_id").timestamp.max()
    assert (warm.timestamp.to_numpy() > newest_train.loc[warm.user_id].to_numpy()).all()


def test_time_holdout_is_by_time(data):
    older, newest = time_holdout(data.interactions, 0.25)
    assert len(newest) == round(len(data.interactions) * 0.25)
    assert older.timestamp.max() <= newest.timestamp.min()


def test_hybrid_beats_popularity_for_cold_users_and_cold_items(data):
    s = split_interactions(data.interactions, cold_user_skip_first=0, seed=2)
    result = train_model(
        s.train,
        data.user_features,
        data.item_features,
        {"no_components": 16, "epochs": 15},
        holdout=0,
        seed=0,
    )
    res = evaluate(
        result.model,
        s.test,
        user_features=data.user_features,
        item_features=data.item_features,
        k=5,
    )
    assert set(res["segments"]) == set(SEGMENTS) == set(res["baseline"])
    for seg in ("cold_users", "cold_items"):
        assert res["segments"][seg]["users"] > 0
        assert res["segments"][seg]["auc"] > res["baseline"][seg]["auc"] + 0.1, seg
    assert res["segments"]["all"]["users"] == (
        res["segments"]["warm_users"]["users"] + res["segments"]["cold_users"]["users"]
    )
    assert "cold_items" in format_table(res)


def test_cold_users_without_features_get_the_baseline(data):
    s = split_interactions(data.interactions, seed=2)
    model = train_model(
        s.train, None, data.item_features, {"no_components": 8, "epochs": 3}, holdout=0, seed=0
    ).model
    res = evaluate(model, s.test, item_features=data.item_features, k=5)
    assert res["segments"]["cold_users"] == res["baseline"]["cold_users"]


def test_training_items_are_excluded_from_the_ranking(data):
    model = train_model(
        data.interactions, None, None, {"no_components": 8, "epochs": 2}, holdout=0, seed=0
    ).model
    # a "test" set equal to the training set leaves no positive to rank
    res = evaluate(model, data.interactions, k=5)
    assert res["segments"]["all"]["users"] == 0


def test_train_model_reports_holdout_metrics_and_fits_on_everything(data):
    calls = []
    result = train_model(
        data.interactions,
        data.user_features,
        data.item_features,
        {"no_components": 8, "epochs": 2},
        holdout=0.1,
        seed=0,
        callback=lambda stage, epoch, secs, rate: calls.append((stage, epoch, rate)),
    )
    assert [c[:2] for c in calls] == [("holdout", 0), ("holdout", 1), ("final", 0), ("final", 1)]
    assert all(rate > 0 for *_, rate in calls)  # interactions per second
    assert result.metrics["holdout"]["interactions"] == round(len(data.interactions) * 0.1)
    assert result.model.interactions_.nnz == len(data.interactions)


def test_tune_picks_the_best_candidate(data):
    cands = [
        {"no_components": 8, "epochs": 1, "learning_rate": 1e-6},
        {"no_components": 8, "epochs": 10},
    ]
    best, results = tune(data.interactions, data.user_features, data.item_features, cands)
    assert len(results) == 2
    assert best["epochs"] == 10
    assert results[1][2] > results[0][2]
    assert np.isfinite(results[0][2])
