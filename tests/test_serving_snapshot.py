"""The serving snapshot against ``LightFM.predict`` (the oracle) and its catalog overlay."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lightfm import LightFM

from hybridrec.model import HybridLightFM
from hybridrec.serving.snapshot import Snapshot, UnknownItem

from .synthetic import make_synthetic


@pytest.fixture(scope="module")
def fitted():
    data = make_synthetic(n_users=40, n_items=30, per_user=6, seed=1)
    user_features = {u: f for u, f in data.user_features.items() if int(u[1:]) % 2 == 0}
    item_features = {i: f for i, f in data.item_features.items() if int(i[1:]) % 2 == 0}
    model = HybridLightFM(no_components=6, epochs=5, random_state=0).fit(
        data.interactions, user_features, item_features
    )
    return model, user_features, item_features


def oracle(model, user_id, user_features, item_ids, item_features):
    """LightFM.predict with the feature matrices that training would build."""
    u = model.user_space_.matrix([user_id], {user_id: user_features or {}})
    if user_features is None and user_id in model.user_space_.entities:
        u = model.user_matrix_[[model.user_space_.entities.get(user_id)]]
    rows = []
    for item in item_ids:
        if item in item_features:
            rows.append(model.item_space_.matrix([item], {item: item_features[item]}))
        else:
            idx = model.item_space_.entities.get(item)
            rows.append(model.item_matrix_[[idx]])
    i = sp.vstack(rows).tocsr()
    return LightFM.predict(
        model,
        np.zeros(len(item_ids), dtype=np.int32),
        np.arange(len(item_ids), dtype=np.int32),
        item_features=i,
        user_features=sp.csr_matrix(u),
    )


USERS = [  # (user_id, features): the four user cases
    ("u0", None),  # known, training features (u0 has some)
    ("u0", {"genre:1": 1.0}),  # known, replaced features
    ("u1", {}),  # known, no features: indicator only
    ("visitor", {"genre:2": 1.0, "never-seen": 3.0}),  # new with features
]


@pytest.mark.parametrize("user_id, features", USERS)
def test_snapshot_scores_equal_lightfm_predict(fitted, user_id, features):
    model, _, _ = fitted
    snap = Snapshot.from_model(model, version="v")
    rec = snap.recommend(user_id, features, k=1000)
    ids = [i for i, _ in rec.items]
    assert rec.strategy == "personalized"
    assert sorted(ids) == sorted(model.item_space_.entities.external)
    got = np.array([s for _, s in rec.items])
    want = oracle(model, user_id, features, ids, {})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(got) <= 0), "best first"


def test_new_and_changed_items_score_like_lightfm_predict(fitted):
    model, _, item_features = fitted
    snap = Snapshot.from_model(model, version="v")
    changes = {
        "new-item": {"genre:0": 1.0, "tag:3": 1.0},  # XI-like: new item with features
        "i0": {"genre:3": 1.0},  # known item, changed features: keeps its indicator
    }
    nxt = snap.with_items(changes)
    items = ["new-item", "i0", "i1", "i2"]
    rec = nxt.recommend("u2", None, k=10, items=items)
    got = dict(rec.items)
    want = oracle(model, "u2", None, items, changes)
    np.testing.assert_allclose([got[i] for i in items], want, rtol=1e-5, atol=1e-5)
    # the old snapshot is untouched: i0 still has its training row there
    old = dict(snap.recommend("u2", None, k=10, items=items).items)
    np.testing.assert_allclose(old["i0"], oracle(model, "u2", None, ["i0"], {})[0], rtol=1e-5)
    assert "new-item" not in snap and "new-item" in nxt
    assert nxt.overlay_items == 2 and snap.overlay_items == 0


def test_unscorable_items_and_baseline(fitted):
    model, _, _ = fitted
    snap = Snapshot.from_model(model, version="v").with_items({"bare": {"unknown-f": 1.0}})
    rec = snap.recommend(None, {}, k=5, items=["i1", "bare", "nope", "i1"])
    assert rec.strategy == "baseline" and rec.user_case == "unknown"
    assert rec.unscorable == ["bare", "nope"]
    assert [i for i, _ in rec.items] == ["i1"]
    assert rec.items[0][1] == pytest.approx(model.popularity_[model.item_space_.entities.get("i1")])
    top = snap.recommend("stranger", None, k=3)
    pop = model.popularity_
    assert [s for _, s in top.items] == sorted(pop, reverse=True)[:3]


def test_delete_then_put_back(fitted):
    model, _, _ = fitted
    snap = Snapshot.from_model(model, version="v")
    gone = snap.with_items({"i3": None})
    assert "i3" not in gone and "i3" in snap
    assert "i3" not in [i for i, _ in gone.recommend("u0", None, k=1000).items]
    with pytest.raises(UnknownItem):
        gone.similar("i3", 3)
    back = gone.with_items({"i3": {"genre:1": 1.0}})
    assert "i3" in back
    assert back.n_items == snap.n_items


def test_exclusions(fitted):
    model, _, _ = fitted
    snap = Snapshot.from_model(model, version="v")
    full = [i for i, _ in snap.recommend("u0", None, k=5).items]
    rec = snap.recommend("u0", None, k=5, exclude=full[:2] + ["not-an-item"])
    assert [i for i, _ in rec.items] == [
        i for i, _ in snap.recommend("u0", None, k=7).items if i not in full[:2]
    ][:5]
    everything = snap.item_ids()
    assert snap.recommend("u0", None, k=5, exclude=everything).items == []


def test_unchanged_put_does_not_grow_the_table(fitted):
    model, _, item_features = fitted
    snap = Snapshot.from_model(model, version="v")
    same = snap.with_items({i: item_features[i] for i in list(item_features)[:5]})
    assert same is snap


def test_many_changes_compact_and_stay_bounded(fitted):
    model, _, _ = fitted
    snap = Snapshot.from_model(model, version="v")
    first = snap
    for n in range(3000):
        snap = snap.with_items({f"n{n % 700}": {"genre:1": 1.0, f"tag:{n % 8}": 1.0}})
    assert snap.n_items == model.item_space_.entities.__len__() + 700
    assert snap.n_rows <= snap.capacity
    assert snap.capacity < 4 * (snap.n_items + 1024)
    # every live id maps to one row, and the first snapshot never changed
    assert len(set(snap.item_ids())) == snap.n_items
    assert first.n_items == len(model.item_space_.entities)
    np.testing.assert_allclose(
        dict(first.recommend("u0", None, k=1000).items)["i1"],
        oracle(model, "u0", None, ["i1"], {})[0],
        rtol=1e-5,
    )


def test_similar_matches_the_model(fitted):
    model, _, _ = fitted
    snap = Snapshot.from_model(model, version="v")
    got = snap.similar("i2", 5)
    want = model.similar_items("i2", 5)
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["i0", "i1", "i5", "x1", "x2", "x3"]),
            st.one_of(
                st.none(),
                st.dictionaries(
                    st.sampled_from(["genre:0", "genre:1", "tag:2", "zzz"]),
                    st.floats(0.1, 3),
                    max_size=3,
                ),
            ),
        ),
        max_size=12,
    )
)
def test_overlay_equals_applying_the_final_state(fitted, ops):
    """Applying changes one by one gives the same scores as applying the final state."""
    model, _, _ = fitted
    base = Snapshot.from_model(model, version="v")
    step = base
    final: dict = {}
    for item_id, features in ops:
        step = step.with_items({item_id: features})
        final[item_id] = features
    once = base.with_items(final)
    a = dict(step.recommend("u4", None, k=1000).items)
    b = dict(once.recommend("u4", None, k=1000).items)
    assert a.keys() == b.keys()
    for item_id in a:
        assert a[item_id] == pytest.approx(b[item_id], rel=1e-6, abs=1e-6)
