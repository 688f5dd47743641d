"""The batched evaluation (issue 14): same numbers as the per-user implementation it
replaced (kept in tests/reference_evaluation.py), and sampled metrics inside their
stated interval of the full ones."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridrec.io.sample import load_sample
from hybridrec.model.hybrid import _coerce_features
from hybridrec.training.evaluation import SEGMENTS, evaluate
from hybridrec.training.metrics import rank_metrics
from hybridrec.training.split import split_interactions
from hybridrec.training.trainer import fit_model

from .reference_evaluation import reference_evaluate, user_metrics
from .synthetic import make_synthetic

KEYS = ("users", "precision", "recall", "ndcg", "auc", "coverage")


LIGHTFM_ALONE = {"item_item_weight": 0.0}  # what the reference evaluation scores


def assert_same(new: dict, ref: dict) -> None:
    for side in ("segments", "baseline"):
        for seg in SEGMENTS:
            for key in KEYS:
                a, b = new[side][seg][key], ref[side][seg][key]
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (side, seg, key, a, b)


@st.composite
def rankings(draw):
    """Scores with many exact ties, positives and exclusions, and an approximation of the
    scores within a stated error (as a float32 product is)."""
    n = draw(st.integers(2, 60))
    b = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    exact = rng.integers(-6, 6, size=(b, n)) / 4.0  # a coarse grid: ties everywhere
    delta = np.full(b, 0.01)
    approx = (exact + rng.uniform(-0.004, 0.004, size=(b, n))).astype(np.float32)
    positives, excluded = [], []
    for _ in range(b):
        perm = rng.permutation(n)
        n_pos = int(rng.integers(1, max(2, min(n, 20))))
        n_exc = int(rng.integers(0, n - n_pos + 1))
        positives.append(np.sort(perm[:n_pos]))
        excluded.append(np.sort(perm[n_pos : n_pos + n_exc]))
    k = draw(st.integers(1, 15))
    return exact, approx, delta, positives, excluded, k


@settings(max_examples=200, deadline=None)
@given(rankings())
def test_batch_metrics_equal_the_reference_per_user_metrics(case):
    exact, approx, delta, positives, excluded, k = case

    def exact_fn(rows, cols):
        return exact[rows, cols]

    got = rank_metrics(approx.copy(), positives, k, excluded=excluded, exact=exact_fn, delta=delta)
    for b in range(exact.shape[0]):
        ref = user_metrics(exact[b], positives[b], k, excluded[b])
        assert list(got.top[b]) == list(ref.top)
        for key in ("precision", "recall", "ndcg", "auc"):
            a, r = getattr(got, key)[b], getattr(ref, key)
            assert (math.isnan(a) and math.isnan(r)) or math.isclose(a, r, abs_tol=1e-12), key


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    n_users=st.integers(20, 80),
    n_items=st.integers(8, 50),
    seed=st.integers(0, 1000),
    item_indicators=st.booleans(),
    with_user_features=st.booleans(),
    k=st.integers(1, 12),
)
def test_evaluation_equals_the_reference_on_small_data(
    n_users, n_items, seed, item_indicators, with_user_features, k
):
    data = make_synthetic(n_users=n_users, n_items=n_items, per_user=6, seed=seed)
    split = split_interactions(data.interactions, seed=seed)
    if split.train.empty or split.test.empty:
        return
    uf = data.user_features if with_user_features else None
    model = fit_model(
        split.train,
        uf,
        data.item_features,
        # the reference ranks LightFM's own scores (the blend is checked against serving
        # in test_quality_serving.py)
        {"no_components": 4, "epochs": 2, "item_indicators": item_indicators, **LIGHTFM_ALONE},
        seed=seed,
    )
    kwargs = {"user_features": uf, "item_features": data.item_features, "k": k}
    assert_same(
        evaluate(model, split.test, **kwargs), reference_evaluate(model, split.test, **kwargs)
    )


@pytest.mark.slow
def test_bundled_sample_numbers_stay_as_they_were():
    """The bundled MovieLens sample, a short fit: every number as before issue 14."""
    sample = load_sample()
    uf, itf = _coerce_features(sample.user_features), _coerce_features(sample.item_features)
    split = split_interactions(sample.interactions, cold_user_skip_first=5, seed=0)
    params = {"no_components": 16, "epochs": 2, **LIGHTFM_ALONE}
    model = fit_model(split.train, uf, itf, params, seed=0)
    kwargs = {"user_features": uf, "item_features": itf}
    new = evaluate(model, split.test, **kwargs)
    assert new["sample"]["users"] == new["sample"]["of"]  # small: every user
    assert_same(new, reference_evaluate(model, split.test, **kwargs))
    for seg in SEGMENTS:  # every user evaluated: the intervals have no width
        lo, hi = new["segments"][seg]["ci95"]["precision"]
        assert lo == hi == pytest.approx(new["segments"][seg]["precision"])


def test_sampled_metrics_fall_within_their_interval_of_the_full_ones():
    data = make_synthetic(n_users=1500, n_items=150, per_user=12, seed=5)
    split = split_interactions(data.interactions, seed=1)
    model = fit_model(
        split.train,
        data.user_features,
        data.item_features,
        {"no_components": 8, "epochs": 3},
        seed=0,
    )
    kwargs = {"user_features": data.user_features, "item_features": data.item_features}
    full = evaluate(model, split.test, sample_users=None, **kwargs)
    inside = total = 0
    for seed in range(12):
        part = evaluate(model, split.test, sample_users=300, seed=seed, **kwargs)
        assert part["sample"] == {
            "users": 300,
            "of": full["sample"]["of"],
            "seed": seed,
            "limit": 300,
        }
        for seg in ("all", "warm_users"):
            assert part["segments"][seg]["users"] < full["segments"][seg]["users"]
            for key in ("precision", "recall", "ndcg", "auc"):
                lo, hi = part["segments"][seg]["ci95"][key]
                assert lo < hi
                inside += lo <= full["segments"][seg][key] <= hi
                total += 1
    # 95% intervals: about 5% may miss; far more would mean the intervals are wrong
    assert inside / total >= 0.85, (inside, total)


def test_each_segment_says_what_it_kept_and_dropped():
    data = make_synthetic(n_users=100, n_items=60, per_user=8, seed=2)
    split = split_interactions(data.interactions, seed=2)
    model = fit_model(split.train, data.user_features, data.item_features, {"epochs": 1}, seed=0)
    train_pairs = split.train.head(7)  # seen in training: dropped, with their reason
    unknown = split.test.head(3).assign(item_id="no-such-item")
    test = pd.concat([split.test, train_pairs, unknown], ignore_index=True)
    res = evaluate(model, test, user_features=data.user_features, item_features=data.item_features)
    dropped = res["segments"]["all"]["dropped"]["interactions"]
    assert dropped["seen_in_training"] == 7
    assert dropped["unknown_item"] == 3
    warm = res["segments"]["warm_users"]
    cold = res["segments"]["cold_users"]
    assert res["segments"]["all"]["interactions"] == warm["interactions"] + cold["interactions"]
    assert res["segments"]["all"]["interactions"] + sum(dropped.values()) == len(test)
