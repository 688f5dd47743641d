"""ItemItem (capped EASE): the fit against EASE's closed form, the cap, and every way of
scoring a history (all items, a candidate list, the score statistics) against the
dense product they stand for."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridrec.model import ItemItem, NotFittedError


def random_interactions(n_users=60, n_items=25, density=0.2, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    X = sp.random(n_users, n_items, density=density, format="csr", random_state=rng)
    X.data[:] = 1.0
    return X


def full_weights(model: ItemItem) -> np.ndarray:
    """The model's weights as a dense ``(n_items, n_items)`` matrix (0 outside ``items_``)."""
    W = np.zeros((model.n_items_, model.n_items_))
    W[np.ix_(model.items_, model.items_)] = model.weights_.toarray()
    return W


def ease_closed_form(X: sp.spmatrix, l2: float) -> np.ndarray:
    """EASE as Steck writes it: B = I - P diagMat(1 / diag(P)), P = (X'X + l2 I)^-1."""
    G = (X.T @ X).toarray().astype(np.float64) + l2 * np.eye(X.shape[1])
    P = np.linalg.inv(G)
    B = -P / np.diag(P)
    np.fill_diagonal(B, 0.0)
    return B


def test_exact_fit_without_cap_is_ease():
    X = random_interactions()
    model = ItemItem(l2=3.0, max_neighbors=1000).fit(X)
    np.testing.assert_allclose(full_weights(model), ease_closed_form(X, 3.0), atol=1e-5)


def test_weights_are_binary_interactions_whatever_their_values():
    X = random_interactions()
    weighted = X.copy()
    weighted.data = np.arange(1, weighted.nnz + 1, dtype=float)
    a = full_weights(ItemItem(l2=3.0, max_neighbors=1000).fit(X))
    b = full_weights(ItemItem(l2=3.0, max_neighbors=1000).fit(weighted))
    np.testing.assert_array_equal(a, b)


def test_cap_keeps_the_largest_weights_of_each_row():
    X = random_interactions(n_items=30)
    full = ease_closed_form(X, 2.0)
    W = full_weights(ItemItem(l2=2.0, max_neighbors=4).fit(X))
    for i in range(full.shape[0]):
        kept = np.flatnonzero(W[i])
        assert kept.size <= 4
        np.testing.assert_allclose(W[i, kept], full[i, kept], atol=1e-5)
        dropped = np.setdiff1d(np.arange(full.shape[1]), kept)
        if dropped.size and kept.size:
            assert np.abs(full[i, dropped]).max() <= np.abs(full[i, kept]).min() + 1e-5


def test_a_large_catalog_is_covered_on_its_most_interacted_items():
    X = random_interactions(n_users=80, n_items=30, density=0.25, seed=4)
    counts = np.asarray(X.sum(axis=0)).ravel()
    head = np.sort(np.argsort(-counts, kind="stable")[:12])
    model = ItemItem(l2=2.0, max_neighbors=1000, max_items=12).fit(X)
    np.testing.assert_array_equal(model.items_, head)
    W = full_weights(model)
    np.testing.assert_allclose(W[np.ix_(head, head)], ease_closed_form(X[:, head], 2.0), atol=1e-5)
    tail = np.setdiff1d(np.arange(30), head)
    assert not W[tail].any() and not W[:, tail].any()
    assert model.scores(tail).sum() == 0.0  # a history of tail items only: no evidence


def test_an_item_nobody_shares_gets_no_weights_and_fits_still():
    X = sp.lil_matrix((4, 5))
    X[0, 0] = X[0, 1] = X[1, 1] = X[1, 2] = X[2, 4] = 1  # item 3 never seen, item 4 alone
    model = ItemItem(l2=1.0).fit(X.tocsr())
    W = full_weights(model)
    assert not W[3].any() and not W[:, 3].any() and not W[4].any() and not W[:, 4].any()
    assert np.isfinite(W).all()
    np.testing.assert_array_equal(model.items_, [0, 1, 2, 4])  # item 3: no interaction


histories = st.lists(st.integers(0, 24), max_size=12)


@pytest.fixture(scope="module")
def fitted() -> ItemItem:
    return ItemItem(l2=2.0, max_neighbors=6).fit(random_interactions(seed=3))


@settings(max_examples=60, deadline=None)
@given(history=histories)
def test_scores_are_the_history_row_times_the_weights(fitted, history):
    x = np.zeros(fitted.n_items_)
    x[history] = 1.0  # duplicates count once
    np.testing.assert_allclose(fitted.scores(history), x @ full_weights(fitted), atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    history=histories,
    weights=st.lists(st.floats(0, 5, allow_subnormal=False), min_size=12, max_size=12),
)
def test_weighted_scores_count_each_item_once_with_its_largest_weight(fitted, history, weights):
    w = np.array(weights[: len(history)])
    x = np.zeros(fitted.n_items_)
    for item, weight in zip(history, w):
        x[item] = max(x[item], weight)
    expected = x @ full_weights(fitted)
    np.testing.assert_allclose(fitted.scores(history, w), expected, atol=1e-6)
    items = np.arange(-1, fitted.n_items_)
    np.testing.assert_allclose(
        fitted.score_items(history, items, w), np.r_[0.0, expected], atol=1e-6
    )
    mean, std = fitted.stats(history, w)
    assert mean == pytest.approx(expected.mean(), abs=1e-9)
    assert std == pytest.approx(expected.std(), abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(history=histories, items=st.lists(st.integers(-3, 30), max_size=15))
def test_score_items_equals_scores_at_those_items_and_zero_outside(fitted, history, items):
    full = fitted.scores(history)
    expected = [full[i] if 0 <= i < fitted.n_items_ else 0.0 for i in items]
    np.testing.assert_allclose(fitted.score_items(history, items), expected, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(history=histories)
def test_stats_are_the_mean_and_std_of_all_scores(fitted, history):
    full = fitted.scores(history)
    mean, std = fitted.stats(history)
    assert mean == pytest.approx(full.mean(), abs=1e-9)
    assert std == pytest.approx(full.std(), abs=1e-7)


def test_stored_arrays_score_like_the_fitted_model(fitted):
    W = fitted.weights_
    arrays = {"data": W.data, "indices": W.indices, "indptr": W.indptr}  # what an .npz holds
    again = ItemItem.from_arrays(
        sp.csr_matrix(tuple(arrays.values()), shape=W.shape), fitted.items_, fitted.n_items_
    )
    np.testing.assert_array_equal(again.scores([1, 4, 7]), fitted.scores([1, 4, 7]))
    assert again.nbytes == fitted.nbytes
    with pytest.raises(ValueError, match=r"must be \(2, 2\) for 2 items"):
        ItemItem.from_arrays(sp.csr_matrix((3, 3)), [0, 1], 5)
    with pytest.raises(ValueError, match="increasing indices in 0..4"):
        ItemItem.from_arrays(sp.csr_matrix((2, 2)), [3, 5], 5)


def test_memory_is_bounded_by_the_cap():
    X = random_interactions(n_users=200, n_items=80, density=0.3)
    model = ItemItem(l2=1.0, max_neighbors=5).fit(X)
    assert model.weights_.nnz <= 80 * 5
    # data float32 + indices int32 per weight; indptr; items int64; position map int32
    assert model.nbytes <= 80 * 5 * 8 + 81 * 4 + 80 * 8 + 80 * 4


def test_unfitted_and_bad_input_errors_say_what_to_do(fitted):
    with pytest.raises(NotFittedError, match="call fit"):
        ItemItem().scores([0])
    with pytest.raises(ValueError, match="l2 must be positive"):
        ItemItem(l2=0).fit(random_interactions())
    with pytest.raises(ValueError, match="max_neighbors"):
        ItemItem(max_neighbors=0).fit(random_interactions())
    with pytest.raises(ValueError, match="max_items"):
        ItemItem(max_items=0).fit(random_interactions())
    with pytest.raises(IndexError, match="outside 0..24"):
        fitted.scores([25])
    with pytest.raises(ValueError, match="one per history item"):
        fitted.scores([1, 2], weights=[1.0])
    with pytest.raises(ValueError, match="finite"):
        fitted.scores([1], weights=[np.nan])
    assert fitted.score_items([1], []).shape == (0,)
    assert fitted.stats([]) == (0.0, 0.0)


@settings(max_examples=40, deadline=None)
@given(history=st.lists(st.integers(0, 999), max_size=5))
def test_stats_of_a_short_history_in_a_large_catalog(history):
    # few weights against many items: the statistics take the sparse path
    rng = np.random.default_rng(11)
    W = sp.random(1000, 1000, density=0.003, format="csr", random_state=rng)
    model = ItemItem.from_arrays(W, np.arange(1000), 1000)
    full = model.scores(history)
    mean, std = model.stats(history)
    assert mean == pytest.approx(full.mean(), abs=1e-12)
    assert std == pytest.approx(full.std(), abs=1e-9)
