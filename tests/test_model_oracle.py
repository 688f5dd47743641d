"""Oracle: ``predict_online`` equals ``LightFM.predict`` given equivalent feature matrices.

For random small datasets the test fits a :class:`HybridLightFM`, then for each of the 16
cases of DESIGN.md (user known/new, with/without features x item known/new, with/without
features) compares ``predict_online`` with plain ``LightFM.predict`` on feature matrices
that this module builds itself from the row rule documented in
:mod:`hybridrec.model.features` (it never calls ``FeatureSpace.row``). With
``a = feature_weight`` and ``normalize=True``: on a side with indicators the indicator
weighs ``1 / (1 + a)`` and the features together ``a / (1 + a)`` (an entity without an
indicator gets the same feature part and nothing else); on a side without indicators the
features sum to 1; ``a=None`` is LightFM's Dataset rule (indicator 1, raw weights, row
scaled to sum 1). ``normalize=False`` keeps indicator 1 and the raw weights. Non-positive
weights and names outside the vocabulary are dropped; unknown names are counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lightfm import LightFM

from hybridrec.model import HybridLightFM

ATOL = RTOL = 1e-5
UNKNOWN_NAME = "zz-not-in-any-vocabulary"
NEW_USER = "u-new"

# --------------------------------------------------------------------------------------
# Reference implementation of the documented row rule
# --------------------------------------------------------------------------------------


def reference_row(
    n_columns: int,
    indicator: int | None,
    vocabulary: Mapping[str, int],
    use_indicators: bool,
    n_indicators: int,
    features: Mapping[str, float] | None,
    feature_weight: float | None,
    normalize: bool,
) -> tuple[np.ndarray, int, int]:
    """Dense row (float64), number of known features used, number of unknown names."""
    row = np.zeros(n_columns)
    used: dict[int, float] = {}
    unknown = 0
    for name, weight in (features or {}).items():
        if name not in vocabulary:
            unknown += 1
        elif weight > 0:
            used[n_indicators + vocabulary[name]] = float(weight)
    total = sum(used.values())
    for col, w in used.items():
        row[col] = w
    if indicator is not None:
        row[indicator] = 1.0
    if normalize and feature_weight is not None:
        share = feature_weight if use_indicators else 1.0
        for col, w in used.items():
            row[col] = share * w / total
    elif normalize and row.sum() > 0:
        row = row / row.sum()
    return row, len(used), unknown


@dataclass
class Side:
    """One side's column layout, read from the model, and its reference rows."""

    entities: dict[str, int]
    vocabulary: dict[str, int]
    use_indicators: bool
    feature_weight: float | None
    normalize: bool
    training_features: dict[str, dict[str, float]]

    @property
    def n_indicators(self) -> int:
        return len(self.entities) if self.use_indicators else 0

    @property
    def n_columns(self) -> int:
        return self.n_indicators + len(self.vocabulary)

    def row(self, entity: str | None, features: Mapping[str, float] | None):
        """Reference row for an entity; ``features=None`` means its training features."""
        known = entity is not None and entity in self.entities
        if features is None:
            features = self.training_features.get(entity, {}) if known else {}
        indicator = self.entities[entity] if known and self.use_indicators else None
        return reference_row(
            self.n_columns,
            indicator,
            self.vocabulary,
            self.use_indicators,
            self.n_indicators,
            features,
            self.feature_weight,
            self.normalize,
        )

    def training_matrix(self) -> np.ndarray:
        m = np.zeros((len(self.entities), self.n_columns))
        for entity, idx in self.entities.items():
            m[idx] = self.row(entity, None)[0]
        return m


def sides(model: HybridLightFM, user_feats, item_feats) -> tuple[Side, Side]:
    out = []
    for space, feats, ind, fw in (
        (model.user_space_, user_feats, model.user_indicators, model.user_feature_weight),
        (model.item_space_, item_feats, model.item_indicators, model.item_feature_weight),
    ):
        entities = {e: i for i, e in enumerate(space.entities.external)}
        vocabulary = {f: i for i, f in enumerate(space.vocabulary.external)}
        # The vocabulary is exactly the feature names of the entities seen in training.
        assert set(vocabulary) == {f for e in entities for f in feats.get(e, {})}
        out.append(Side(entities, vocabulary, ind, fw, model.normalize, feats))
    return out[0], out[1]


def lightfm_scores(model, user_matrix, user_index, item_matrix, item_indices) -> np.ndarray:
    """Plain ``LightFM.predict`` on explicit feature matrices."""
    item_indices = np.asarray(item_indices, dtype=np.int32)
    return LightFM.predict(
        model,
        np.full(len(item_indices), user_index, dtype=np.int32),
        item_indices,
        user_features=sp.csr_matrix(user_matrix, dtype=np.float32),
        item_features=sp.csr_matrix(item_matrix, dtype=np.float32),
    )


# --------------------------------------------------------------------------------------
# Random datasets
# --------------------------------------------------------------------------------------

weights_st = st.one_of(st.floats(0.1, 5.0), st.just(0.0))


def feature_dicts(draw, ids: list[str], pool: list[str]) -> dict[str, dict[str, float]]:
    if not pool:
        return {}
    out = {}
    for entity in ids:
        feats = draw(st.dictionaries(st.sampled_from(pool), weights_st, max_size=len(pool)))
        if feats or draw(st.booleans()):
            out[entity] = feats
    return out


@st.composite
def datasets(draw):
    n_users = draw(st.integers(1, 5))
    n_items = draw(st.integers(1, 6))
    pairs = draw(
        st.lists(
            st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1)),
            min_size=1,
            max_size=25,
        )
    )
    df = pd.DataFrame(
        {"user_id": [f"u{u}" for u, _ in pairs], "item_id": [f"i{i}" for _, i in pairs]}
    )
    if draw(st.booleans()):
        df["weight"] = [draw(st.sampled_from([0.5, 1.0, 2.0, 3.0])) for _ in pairs]
    user_pool = [f"uf{k}" for k in range(draw(st.integers(0, 4)))]
    item_pool = [f"if{k}" for k in range(draw(st.integers(0, 4)))]
    # Two extra entities per side that never interact: their features must not enter the
    # vocabulary.
    user_feats = feature_dicts(draw, [f"u{k}" for k in range(n_users + 2)], user_pool)
    item_feats = feature_dicts(draw, [f"i{k}" for k in range(n_items + 2)], item_pool)
    params = dict(
        loss=draw(st.sampled_from(["warp", "bpr", "logistic"])),
        learning_schedule=draw(st.sampled_from(["adagrad", "adadelta"])),
        user_feature_weight=draw(st.sampled_from([0.25, 0.5, 1.0, 2.0, None])),
        item_feature_weight=draw(st.sampled_from([0.25, 0.5, 1.0, 2.0, None])),
        normalize=draw(st.booleans()),
        random_state=draw(st.integers(0, 2**16)),
    )

    def request_features(pool):
        feats = draw(st.dictionaries(st.sampled_from(pool), st.floats(0.1, 5.0))) if pool else {}
        # Also a name of the pool that may be outside the vocabulary, and one never seen.
        return {**feats, UNKNOWN_NAME: 1.0}

    return (
        df,
        user_feats,
        item_feats,
        params,
        request_features(user_pool),
        request_features(item_pool),
    )


def fit(df, user_feats, item_feats, params, user_indicators, item_indicators):
    model = HybridLightFM(
        no_components=4,
        epochs=2,
        user_indicators=user_indicators,
        item_indicators=item_indicators,
        **params,
    )
    return model.fit(df, user_feats, item_feats)


def side_is_empty(indicators: bool, entities, feats) -> bool:
    """No indicators and no positive feature weight on any training entity."""
    return not indicators and not any(
        w > 0 for e in set(entities) for w in feats.get(e, {}).values()
    )


def reference_popularity(df: pd.DataFrame) -> dict[str, float]:
    w = df["weight"] if "weight" in df else pd.Series(1.0, index=df.index)
    return w.groupby(df["item_id"]).sum().to_dict()


# --------------------------------------------------------------------------------------
# The oracle
# --------------------------------------------------------------------------------------


def user_variants(users: Side, request: dict[str, float]):
    """(label, user_id, user_features) covering the four user rows of the table."""
    known = list(users.entities)
    out = [
        ("known+request-features", known[0], request),
        ("known, no features", known[-1], {}),
        ("new+features", NEW_USER, request),
        ("new, no features", NEW_USER, None),
        ("anonymous", None, None),
        ("new, empty features", NEW_USER, {}),
        ("new, only unknown features", NEW_USER, {UNKNOWN_NAME: 2.0}),
    ]
    # Every known user with its training features (user_features=None).
    out += [(f"known {u}, training features", u, None) for u in known]
    return out


def item_variants(items: Side, request: dict[str, float]):
    """(label, item_id, item_features mapping) covering the four item columns."""
    known = list(items.entities)
    out = [(f"known {i}, training features", i, {}) for i in known]
    out += [
        ("known+request-features", known[0], {known[0]: request}),
        ("known, no features", known[-1], {known[-1]: {}}),
        ("new+features", "i-new-f", {"i-new-f": request}),
        ("new, no features (absent)", "i-new-0", {}),
        ("new, empty features", "i-new-e", {"i-new-e": {}}),
        ("new, only unknown features", "i-new-u", {"i-new-u": {UNKNOWN_NAME: 1.0}}),
    ]
    return out


def expected(
    model, users: Side, items: Side, popularity, user_id, user_features, item_ids, item_features
):
    """Reference scores (in request order) for the scorable items of a request."""
    u_matrix = users.training_matrix()
    u_row, u_known_feats, u_unknown = users.row(user_id, user_features)
    user_known = user_id is not None and user_id in users.entities
    if user_known:
        u_index = users.entities[user_id]
        u_matrix[u_index] = u_row
    else:
        u_index = len(u_matrix)
        u_matrix = np.vstack([u_matrix, u_row])  # a new user: a row with no indicator

    i_matrix = items.training_matrix()
    extra_rows, indices, scorable, unscorable = [], [], [], []
    i_unknown = 0
    for item in item_ids:
        feats = item_features.get(item)
        row, _, unknown = items.row(item, feats)
        i_unknown += unknown
        if item in items.entities:
            index = items.entities[item]
            i_matrix[index] = row
        else:
            index = len(i_matrix) + len(extra_rows)
            extra_rows.append(row)  # a new item: a row with no indicator
        if row.sum() > 0:
            scorable.append(item)
            indices.append(index)
        else:
            unscorable.append(item)
    if extra_rows:
        i_matrix = np.vstack([i_matrix, *extra_rows])

    if u_row.sum() > 0:
        strategy = "personalized"
        scores = (
            lightfm_scores(model, u_matrix, u_index, i_matrix, indices) if indices else np.zeros(0)
        )
    else:
        strategy = "baseline"
        scores = np.array([popularity.get(i, 0.0) for i in scorable])
    user_case = {
        (True, True): "known_with_features",
        (True, False): "known",
        (False, True): "new_with_features",
        (False, False): "unknown",
    }[(user_known, u_known_feats > 0)]
    return dict(
        item_ids=scorable,
        scores=scores,
        unscorable=unscorable,
        strategy=strategy,
        user_case=user_case,
        unknown_user_features=u_unknown,
        unknown_item_features=i_unknown,
    )


def check(pred, want, label: str) -> None:
    assert pred.item_ids == want["item_ids"], label
    assert pred.unscorable == want["unscorable"], label
    assert pred.strategy == want["strategy"], label
    assert pred.user_case == want["user_case"], label
    assert pred.unknown_user_features == want["unknown_user_features"], label
    assert pred.unknown_item_features == want["unknown_item_features"], label
    np.testing.assert_allclose(pred.scores, want["scores"], atol=ATOL, rtol=RTOL, err_msg=label)


@pytest.mark.parametrize("user_indicators", [True, False], ids=["user-ind", "no-user-ind"])
@pytest.mark.parametrize("item_indicators", [True, False], ids=["item-ind", "no-item-ind"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datasets())
def test_predict_online_equals_lightfm_predict_in_all_16_cases(
    user_indicators, item_indicators, data
):
    df, user_feats, item_feats, params, user_request, item_request = data
    if side_is_empty(user_indicators, df["user_id"], user_feats) or side_is_empty(
        item_indicators, df["item_id"], item_feats
    ):
        with pytest.raises(ValueError, match="no features at all"):
            fit(df, user_feats, item_feats, params, user_indicators, item_indicators)
        return
    model = fit(df, user_feats, item_feats, params, user_indicators, item_indicators)
    users, items = sides(model, user_feats, item_feats)
    popularity = reference_popularity(df)

    # Training rows follow the documented rule, in the documented column layout.
    np.testing.assert_allclose(model.user_matrix_.toarray(), users.training_matrix(), atol=1e-6)
    np.testing.assert_allclose(model.item_matrix_.toarray(), items.training_matrix(), atol=1e-6)

    known_items = list(items.entities)
    all_items = known_items + ["i-new-f", "i-new-0", "i-new-e", "i-new-u"]
    all_item_features = {
        known_items[-1]: {},
        known_items[0]: item_request,
        "i-new-f": item_request,
        "i-new-e": {},
        "i-new-u": {UNKNOWN_NAME: 1.0},
    }

    for u_label, user_id, user_features in user_variants(users, user_request):
        # One request per (user case, item case): the 16 cases and a few more.
        for i_label, item_id, item_features in item_variants(items, item_request):
            label = f"user {u_label} x item {i_label}"
            pred = model.predict_online(user_id, user_features, [item_id], item_features)
            want = expected(
                model, users, items, popularity, user_id, user_features, [item_id], item_features
            )
            check(pred, want, label)

        # One request naming every item case at once.
        pred = model.predict_online(user_id, user_features, all_items, all_item_features)
        want = expected(
            model, users, items, popularity, user_id, user_features, all_items, all_item_features
        )
        check(pred, want, f"user {u_label} x all items")

        # The default request: every known item with its training features.
        pred = model.predict_online(user_id, user_features)
        want = expected(
            model, users, items, popularity, user_id, user_features, list(items.entities), {}
        )
        check(pred, want, f"user {u_label} x catalog")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datasets(), user_indicators=st.booleans(), item_indicators=st.booleans())
def test_serving_factorisation_equals_lightfm_predict(data, user_indicators, item_indicators):
    """``user_vector(row) @ item_factors().T`` is ``LightFM.predict`` for known items."""
    df, user_feats, item_feats, params, user_request, _ = data
    if side_is_empty(user_indicators, df["user_id"], user_feats) or side_is_empty(
        item_indicators, df["item_id"], item_feats
    ):
        with pytest.raises(ValueError, match="no features at all"):
            fit(df, user_feats, item_feats, params, user_indicators, item_indicators)
        return
    model = fit(df, user_feats, item_feats, params, user_indicators, item_indicators)
    factors = model.item_factors()
    n_items = len(model.item_ids_)
    assert factors.shape == (n_items, model.no_components + 2)
    assert factors.dtype == np.float32
    for user_id in model.user_ids_.external:
        for features in (None, user_request):
            row = model.user_row(user_id, features)
            vec = model.user_vector(row)
            if row.empty:
                assert vec is None
                continue
            # The row as a one-row matrix in the model's layout.
            u_matrix = sp.csr_matrix(
                (row.values, row.indices, [0, row.indices.size]),
                shape=(1, model.user_space_.n_columns),
            )
            want = lightfm_scores(model, u_matrix, 0, model.item_matrix_, np.arange(n_items))
            np.testing.assert_allclose(vec @ factors.T, want, atol=ATOL, rtol=RTOL)
            # and item_vector of each stored item row reproduces the factor rows
            for n, item_id in enumerate(model.item_ids_.external):
                ivec = model.item_vector(model.item_row(item_id))
                if ivec is not None:
                    np.testing.assert_allclose(ivec, factors[n], atol=1e-6, rtol=1e-5)


def test_unscorable_and_baseline_by_hand():
    """A fixed example of cases XIII-XVI and of the baseline, readable without hypothesis."""
    df = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "c", "c", "c"],
            "item_id": ["x", "y", "y", "y", "z", "z"],
            "weight": [1.0, 2.0, 1.0, 1.0, 0.5, 0.5],
        }
    )
    item_feats = {"x": {"red": 1.0}, "y": {"blue": 2.0}}
    model = HybridLightFM(no_components=4, epochs=2, item_indicators=False, random_state=0)
    model.fit(df, {"a": {"young": 1.0}}, item_feats)

    # z is known but has no features and no indicator: it can never be scored.
    pred = model.predict_online("a")
    assert pred.item_ids == ["x", "y"]
    assert pred.unscorable == ["z"]
    assert pred.strategy == "personalized"
    assert pred.user_case == "known_with_features"

    pred = model.predict_online(
        None,
        {"young": 1.0, "unheard-of": 3.0},
        ["x", "new-red", "new-bare", "z"],
        {"new-red": {"red": 1.0, "shiny": 1.0}, "x": {"nope": 1.0}},
    )
    assert pred.user_case == "new_with_features"
    assert pred.item_ids == ["new-red"]
    assert pred.unscorable == ["x", "new-bare", "z"]
    assert pred.unknown_user_features == 1
    assert pred.unknown_item_features == 2

    # Nothing known about the user: popularity (sum of weights in training).
    pred = model.predict_online("stranger", None, ["x", "y", "new-red"], {"new-red": {"red": 1}})
    assert pred.strategy == "baseline"
    assert pred.user_case == "unknown"
    assert pred.item_ids == ["x", "y", "new-red"]
    np.testing.assert_allclose(pred.scores, [1.0, 4.0, 0.0])
    assert pred.top(2) == [("y", 4.0), ("x", 1.0)]
    pred = model.predict_online("stranger")
    assert pred.strategy == "baseline"
    assert pred.item_ids == ["x", "y"]
    np.testing.assert_allclose(pred.scores, [1.0, 4.0])
    np.testing.assert_allclose(model.baseline_scores(), [1.0, 4.0, 1.0])


# --------------------------------------------------------------------------------------
# The 16 cells of the table, each named, on a fixed dataset where none is degenerate
# --------------------------------------------------------------------------------------

FIXED_INTERACTIONS = pd.DataFrame(
    {
        "user_id": ["a", "a", "b", "b", "c", "c", "d"],
        "item_id": ["x", "y", "y", "z", "z", "w", "x"],
        "weight": [1.0, 2.0, 1.0, 1.0, 3.0, 1.0, 1.0],
    }
)
FIXED_USER_FEATURES = {"a": {"young": 1.0, "city": 2.0}, "c": {"old": 1.0}}
FIXED_ITEM_FEATURES = {
    "x": {"red": 1.0},
    "y": {"red": 1.0, "big": 1.0},
    "z": {"blue": 1.0},
    "w": {"blue": 2.0, "big": 3.0},
}
# rows of the table: (user_id, user_features)
USER_ROWS = {
    "known + features": ("a", None),
    "known, no features": ("b", None),
    "new + features": ("new-user", {"young": 1.0, "old": 2.0, "unheard-of": 1.0}),
    "new, no features": ("new-user", None),
}
# columns of the table: (item_id, item_features mapping)
ITEM_COLUMNS = {
    "known + features": ("x", {}),
    "known, no features": ("y", {"y": {}}),
    "new + features": ("new-item", {"new-item": {"blue": 1.0, "red": 1.0, "shiny": 1.0}}),
    "new, no features": ("bare-item", {}),
}
ROMAN = "I II III IV V VI VII VIII IX X XI XII XIII XIV XV XVI".split()
CELLS = [
    pytest.param(u, i, id=ROMAN[4 * col + row])
    for col, i in enumerate(ITEM_COLUMNS)
    for row, u in enumerate(USER_ROWS)
]
_FIXED_MODELS: dict[tuple[bool, bool], HybridLightFM] = {}


def fixed_model(user_indicators: bool, item_indicators: bool) -> HybridLightFM:
    key = (user_indicators, item_indicators)
    if key not in _FIXED_MODELS:
        params = dict(loss="warp", learning_schedule="adagrad", random_state=1)
        params |= dict(user_feature_weight=0.5, item_feature_weight=1.0, normalize=True)
        _FIXED_MODELS[key] = fit(
            FIXED_INTERACTIONS,
            FIXED_USER_FEATURES,
            FIXED_ITEM_FEATURES,
            params,
            user_indicators,
            item_indicators,
        )
    return _FIXED_MODELS[key]


@pytest.mark.parametrize("user_indicators", [True, False], ids=["user-ind", "no-user-ind"])
@pytest.mark.parametrize("item_indicators", [True, False], ids=["item-ind", "no-item-ind"])
@pytest.mark.parametrize("user_row, item_column", CELLS)
def test_each_cell_of_the_table(user_row, item_column, user_indicators, item_indicators):
    model = fixed_model(user_indicators, item_indicators)
    users, items = sides(model, FIXED_USER_FEATURES, FIXED_ITEM_FEATURES)
    user_id, user_features = USER_ROWS[user_row]
    item_id, item_features = ITEM_COLUMNS[item_column]
    pred = model.predict_online(user_id, user_features, [item_id], item_features)
    want = expected(
        model,
        users,
        items,
        reference_popularity(FIXED_INTERACTIONS),
        user_id,
        user_features,
        [item_id],
        item_features,
    )
    check(pred, want, f"{user_row} x {item_column}")

    # What the table promises, spelled out.
    user_known = user_row.startswith("known")
    user_has_features = "+ features" in user_row
    assert (
        pred.user_case
        == {
            (True, True): "known_with_features",
            (True, False): "known",
            (False, True): "new_with_features",
            (False, False): "unknown",
        }[(user_known, user_has_features)]
    )
    user_has_row = user_has_features or (user_known and user_indicators)
    assert pred.strategy == ("personalized" if user_has_row else "baseline")
    item_has_row = "+ features" in item_column or (
        item_column.startswith("known") and item_indicators
    )
    assert (pred.item_ids, pred.unscorable) == (
        ([item_id], []) if item_has_row else ([], [item_id])
    )
    assert pred.unknown_user_features == (1 if user_row == "new + features" else 0)
    assert pred.unknown_item_features == (1 if item_column == "new + features" else 0)
