"""Unit tests of the model core: IdMap, FeatureSpace rows, HybridLightFM's estimator habits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridrec.model import FeatureSpace, HybridLightFM, IdMap, NotFittedError, OnlinePrediction

# -- IdMap --------------------------------------------------------------------------------


def test_idmap_keeps_first_seen_order_and_converts_to_str():
    m = IdMap.from_values(["b", 1, "a", "b", "1"])
    assert m.external == ("b", "1", "a")
    assert len(m) == 3
    assert m.get("a") == 2 and m.get(1) == 1 and m.get("zz") is None
    assert "b" in m and 1 in m and "c" not in m


@given(st.lists(st.text(max_size=8), max_size=30))
def test_idmap_round_trips(values):
    m = IdMap.from_values(values)
    unique = list(dict.fromkeys(values))
    assert list(m.external) == unique
    internal = m.convert_to_internal(values)
    assert internal.dtype == np.int64
    assert m.convert_to_external(internal) == values
    assert m.convert_to_internal(m.external).tolist() == list(range(len(m)))


def test_idmap_unknown_ids_raise_keyerror_naming_the_id_or_map_to_missing():
    m = IdMap.from_values(["a", "b"])
    with pytest.raises(KeyError, match="'zz'"):
        m.convert_to_internal(["a", "zz"])
    assert m.convert_to_internal(["a", "zz", "b"], missing=-1).tolist() == [0, -1, 1]
    assert m.convert_to_internal([]).tolist() == []


def test_idmap_extend_appends_new_ids_and_leaves_the_original_alone():
    m = IdMap.from_values(["a", "b"])
    n = m.extend(["b", "c", "a", "d", "c"])
    assert n.external == ("a", "b", "c", "d")
    assert n.get("d") == 3
    assert m.external == ("a", "b") and "c" not in m


def test_idmap_is_frozen_hashable_and_rejects_duplicates():
    m = IdMap.from_values(["a", "b"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.external = ("x",)  # type: ignore[misc]
    assert m == IdMap(("a", "b"))
    assert hash(m) == hash(IdMap(("a", "b")))
    assert IdMap(("a", "b")).get("b") == 1  # index rebuilt by the plain constructor
    with pytest.raises(ValueError, match="unique"):
        IdMap(("a", "a"))
    assert len(IdMap.from_values([])) == 0


# -- FeatureSpace rows --------------------------------------------------------------------


def space(use_indicators=True, feature_weight=0.5, normalize=True) -> FeatureSpace:
    # columns: 0 "x", 1 "y" (indicators when on), then "a", "b", "c"
    return FeatureSpace(
        IdMap.from_values(["x", "y"]),
        IdMap.from_values(["a", "b", "c"]),
        use_indicators,
        feature_weight,
        normalize,
    )


def as_dict(row) -> dict[int, float]:
    return dict(zip(row.indices.tolist(), row.values.tolist(), strict=True))


# The rule (hybridrec.model.features), a = feature_weight: on a side with indicators the
# indicator weighs 1 and the features together a, in proportion to their raw weights;
# without indicators the features sum to 1.


def test_row_indicator_and_two_features_with_feature_weight_half():
    # a = 0.5: indicator 1; features 1 and 3 share 0.5 -> 1/8, 3/8.
    row = space().row("y", {"a": 1.0, "b": 3.0})
    assert row.has_indicator
    assert row.n_known_features == 2 and row.n_unknown_features == 0
    assert row.indices.dtype == np.int32 and row.values.dtype == np.float32
    got = as_dict(row)
    assert got.keys() == {1, 2, 3}
    np.testing.assert_allclose([got[1], got[2], got[3]], [1, 1 / 8, 3 / 8], rtol=1e-6)


def test_row_indicator_and_features_with_feature_weight_one():
    got = as_dict(space(feature_weight=1.0).row("x", {"a": 1.0, "b": 3.0}))
    np.testing.assert_allclose([got[0], got[2], got[3]], [1, 0.25, 0.75], rtol=1e-6)


@pytest.mark.parametrize("entity", ["new-entity", None])
def test_row_of_new_entity_keeps_the_feature_part_of_a_warm_one(entity):
    # No indicator part; the features keep their share a = 0.5 -> 1/8, 3/8.
    row = space().row(entity, {"a": 1.0, "b": 3.0})
    assert not row.has_indicator
    got = as_dict(row)
    assert got.keys() == {2, 3}
    np.testing.assert_allclose([got[2], got[3]], [1 / 8, 3 / 8], rtol=1e-6)


def test_row_on_a_side_without_indicators_scales_features_to_one():
    s = space(use_indicators=False)
    assert s.n_indicators == 0 and s.n_columns == 3
    got = as_dict(s.row("x", {"a": 1.0, "b": 3.0}))
    assert got.keys() == {0, 1}
    np.testing.assert_allclose([got[0], got[1]], [0.25, 0.75], rtol=1e-6)


def test_row_indicator_only_and_empty_row():
    row = space().row("x", None)
    assert row.has_indicator and not row.empty
    np.testing.assert_allclose(row.values, [1.0], rtol=1e-6)  # plain LightFM indicator
    assert row.indices.tolist() == [0]
    assert as_dict(space(feature_weight=1.0).row("x", {})) == {0: 1.0}
    empty = space().row("new", None)
    assert empty.empty and not empty.has_indicator and empty.n_known_features == 0
    assert space(use_indicators=False).row("x", None).empty


def test_row_without_normalisation_keeps_raw_weights():
    got = as_dict(space(normalize=False).row("y", {"a": 1.0, "b": 3.0}))
    assert got == {1: 1.0, 2: 1.0, 3: 3.0}


def test_row_with_dataset_weighting_scales_the_raw_row_to_one():
    # feature_weight=None: lightfm.data.Dataset's rule, [1, 1, 3] / 5.
    got = as_dict(space(feature_weight=None).row("y", {"a": 1.0, "b": 3.0}))
    np.testing.assert_allclose([got[1], got[2], got[3]], [0.2, 0.2, 0.6], rtol=1e-6)
    got = as_dict(space(feature_weight=None).row("new", {"a": 1.0, "b": 3.0}))
    np.testing.assert_allclose([got[2], got[3]], [0.25, 0.75], rtol=1e-6)


def test_row_ignores_and_counts_unknown_names_and_drops_non_positive_weights():
    row = space().row("new", {"a": 2.0, "nope": 5.0, "b": 0.0, "c": -1.0, "other": 1.0})
    assert row.n_unknown_features == 2
    assert row.n_known_features == 1
    assert row.indices.tolist() == [2]
    np.testing.assert_allclose(row.values, [0.5], rtol=1e-6)
    row = space().row("new", {"nope": 1.0})
    assert row.empty and row.n_unknown_features == 1


def test_matrix_stacks_rows():
    s = space()
    feats = {"x": {"a": 1.0}, "new": {"b": 2.0, "c": 2.0}}
    m = s.matrix(["x", "new", "y", None], feats)
    assert m.shape == (4, s.n_columns) and m.dtype == np.float32
    for n, entity in enumerate(["x", "new", "y", None]):
        row = s.row(entity, feats.get(entity) if entity else None)
        expected = np.zeros(s.n_columns, np.float32)
        expected[row.indices] = row.values
        np.testing.assert_array_equal(m[n].toarray().ravel(), expected)


# -- HybridLightFM ------------------------------------------------------------------------

INTERACTIONS = pd.DataFrame(
    {
        "user_id": ["a", "a", "b", "b", "c", "c", "d"],
        "item_id": ["x", "y", "y", "z", "z", "w", "x"],
    }
)
ITEM_FEATURES = {
    "x": {"red": 1.0},
    "y": {"red": 1.0, "big": 1.0},
    "z": {"blue": 1.0},
    "w": {"blue": 2.0, "big": 1.0},
}


def small_model(**params) -> HybridLightFM:
    params = {"no_components": 4, "epochs": 3, "random_state": 7, **params}
    return HybridLightFM(**params)


def test_fit_returns_self_and_records_learned_state():
    model = small_model()
    assert model.fit(INTERACTIONS, None, ITEM_FEATURES) is model
    assert model.user_ids_.external == ("a", "b", "c", "d")
    assert model.item_ids_.external == ("x", "y", "z", "w")
    assert set(model.item_space_.vocabulary.external) == {"red", "big", "blue"}
    assert len(model.epoch_seconds_) == 3
    assert model.item_embeddings.shape == (4 + 3, 4)


def test_init_only_stores_hyperparameters_and_get_params_round_trips():
    model = small_model(loss="bpr", user_indicators=False, item_feature_weight=0.3)
    params = model.get_params()
    assert params["loss"] == "bpr" and params["user_indicators"] is False
    assert params["item_feature_weight"] == 0.3 and params["random_state"] == 7
    assert HybridLightFM(**params).get_params() == params


@pytest.mark.parametrize(
    "use",
    [
        lambda m: m.predict_online("a"),
        lambda m: m.item_factors(),
        lambda m: m.similar_items("x"),
        lambda m: m.baseline_scores(),
        lambda m: m.user_row("a"),
        lambda m: m.user_ids_,
    ],
    ids=["predict_online", "item_factors", "similar_items", "baseline", "user_row", "ids"],
)
def test_unfitted_model_raises_a_clear_error(use):
    with pytest.raises(NotFittedError, match=r"not fitted.*fit\(\)"):
        use(small_model())


@pytest.mark.parametrize("empty", [None, INTERACTIONS.iloc[:0]], ids=["None", "no rows"])
def test_fit_on_empty_interactions_raises(empty):
    with pytest.raises(ValueError, match="zero interactions"):
        small_model().fit(empty)


def test_duplicate_interactions_are_aggregated():
    df = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b"],
            "item_id": ["x", "x", "y", "x", "y"],
            "weight": [1.5, 0.5, 1.0, 1.0, 2.0],
        }
    )
    model = small_model().fit(df)
    assert model.interactions_.nnz == 4  # one entry per (user, item) pair
    assert model.interactions_[0, 0] == 1.0
    np.testing.assert_allclose(model.baseline_scores(), [3.0, 3.0])
    # without a weight column each row counts 1
    model = small_model().fit(df.drop(columns="weight"))
    assert model.interactions_.nnz == 4
    np.testing.assert_allclose(model.baseline_scores(), [3.0, 2.0])


def test_features_as_long_frame_equal_features_as_mapping():
    long = pd.DataFrame(
        {
            "id": ["x", "y", "y", "z", "w", "w", "w"],
            "feature": ["red", "red", "big", "blue", "blue", "big", "blue"],
            "weight": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        }
    )  # "w"/"blue" twice: weights add up to 2, as in ITEM_FEATURES
    a = small_model().fit(INTERACTIONS, None, ITEM_FEATURES)
    b = small_model().fit(INTERACTIONS, None, long)
    assert a.item_space_.vocabulary == b.item_space_.vocabulary
    np.testing.assert_array_equal(a.item_matrix_.toarray(), b.item_matrix_.toarray())


def test_vocabulary_only_holds_features_of_training_entities():
    feats = {**ITEM_FEATURES, "never-seen": {"green": 1.0}}
    model = small_model().fit(INTERACTIONS, {"a": {"young": 1.0}, "zz": {"old": 1.0}}, feats)
    assert "green" not in model.item_space_.vocabulary
    assert model.user_space_.vocabulary.external == ("young",)
    pred = model.predict_online("new", {"old": 1.0, "young": 1.0})
    assert pred.unknown_user_features == 1 and pred.user_case == "new_with_features"


def test_user_cases():
    model = small_model().fit(INTERACTIONS, {"a": {"young": 1.0}}, ITEM_FEATURES)
    assert model.predict_online("a").user_case == "known_with_features"
    assert model.predict_online("a", {}).user_case == "known"
    assert model.predict_online("b").user_case == "known"
    assert model.predict_online("b", {"young": 2.0}).user_case == "known_with_features"
    assert model.predict_online("new", {"young": 1.0}).user_case == "new_with_features"
    for uid, feats in [("new", None), ("new", {}), (None, None), ("new", {"nope": 1.0})]:
        pred = model.predict_online(uid, feats)
        assert pred.user_case == "unknown" and pred.strategy == "baseline"
    for uid in ["a", "b"]:
        assert model.predict_online(uid).strategy == "personalized"


def test_unknown_feature_names_are_counted_never_an_error():
    model = small_model().fit(INTERACTIONS, {"a": {"young": 1.0}}, ITEM_FEATURES)
    pred = model.predict_online(
        "a",
        {"young": 1.0, "??": 1.0, "!!": 2.0},
        ["x", "new"],
        {"x": {"red": 1.0, "nope": 1.0}, "new": {"blue": 1.0, "nope": 1.0, "nah": 1.0}},
    )
    assert pred.unknown_user_features == 2
    assert pred.unknown_item_features == 3
    assert pred.item_ids == ["x", "new"]


def test_similar_items_excludes_the_item_and_is_sorted_by_cosine():
    model = small_model().fit(INTERACTIONS, None, ITEM_FEATURES)
    q = model.item_factors()[:, :-2].astype(np.float64)
    ids = list(model.item_ids_.external)
    for item in ids:
        got = model.similar_items(item, k=10)
        assert len(got) == len(ids) - 1
        assert item not in [i for i, _ in got]
        scores = [s for _, s in got]
        assert scores == sorted(scores, reverse=True)
        n = ids.index(item)
        for other, s in got:
            m = ids.index(other)
            cos = q[n] @ q[m] / (np.linalg.norm(q[n]) * np.linalg.norm(q[m]))
            assert s == pytest.approx(cos, abs=1e-6)
        assert model.similar_items(item, k=2) == got[:2]
        assert model.similar_items(item, k=0) == []
    with pytest.raises(KeyError, match="not in the model"):
        model.similar_items("nope")


def test_online_prediction_top_excludes_and_sorts():
    pred = OnlinePrediction(
        item_ids=["a", "b", "c", "d", "e"],
        scores=np.array([0.1, 0.9, 0.5, 0.9, -1.0]),
        unscorable=[],
        strategy="personalized",
        user_case="known",
    )
    assert pred.top(3) == [("b", 0.9), ("d", 0.9), ("c", 0.5)]  # ties keep request order
    assert pred.top(3, exclude=["b", "c"]) == [("d", 0.9), ("a", 0.1), ("e", -1.0)]
    assert pred.top(10, exclude={"a"}) == [("b", 0.9), ("d", 0.9), ("c", 0.5), ("e", -1.0)]
    assert pred.top(0) == []  # regression: top(0) returned every item


# -- regression tests ---------------------------------------------------------------------


def test_regression_known_item_without_any_row_is_unscorable_in_the_catalog_request():
    """Bug: the default request (item_ids=None) scored every known item, even one with
    neither indicator nor features (it got the user's bias), while a request naming the
    item reported it unscorable."""
    features = {"x": {"red": 1.0}, "y": {"red": 1.0}}  # z and w: no features
    model = small_model(item_indicators=False).fit(INTERACTIONS, None, features)
    pred = model.predict_online("a")
    assert pred.item_ids == ["x", "y"]
    assert pred.unscorable == ["z", "w"]
    assert model.predict_online("a", None, ["z", "x"]).unscorable == ["z"]
    baseline = model.predict_online("new")
    assert baseline.item_ids == ["x", "y"] and baseline.unscorable == ["z", "w"]


@pytest.mark.parametrize("loss", ["logistic", "warp", "bpr"])
def test_regression_pairs_of_empty_rows_do_not_make_fit_diverge(loss):
    """Bug: with indicators off on both sides, an interaction between a user and an item
    that both lack features made LightFM average its learning rate over zero features
    (0/0 = NaN), and fit failed with "Not all estimated parameters are finite"."""
    df = pd.DataFrame({"user_id": ["u0", "u1", "u1"], "item_id": ["i0", "i1", "i0"]})
    model = small_model(loss=loss, user_indicators=False, item_indicators=False)
    model.fit(df, {"u1": {"young": 1.0}}, {"i1": {"red": 1.0}})
    for arr in (model.user_embeddings, model.item_embeddings, model.item_biases):
        assert np.isfinite(arr).all()
    pred = model.predict_online("u1")
    assert pred.item_ids == ["i1"] and pred.unscorable == ["i0"]
    assert np.isfinite(pred.scores).all()


@pytest.mark.parametrize("side", ["user", "item"])
def test_side_with_only_empty_rows_is_refused(side):
    """A side with no indicators whose training entities only have zero weights has no
    feature at all: a clear error rather than a model that diverges or scores nothing."""
    feats = {"a": {"young": 0.0}} if side == "user" else {"x": {"red": 0.0}}
    kwargs = {f"{side}_indicators": False}
    with pytest.raises(ValueError, match=f"the {side} side has no features at all"):
        small_model(**kwargs).fit(
            INTERACTIONS,
            feats if side == "user" else None,
            feats if side == "item" else None,
        )
