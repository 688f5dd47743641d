"""Item-item model: EASE (Steck, 2019), each item recommending at most ``max_neighbors``.

Pure math on internal item indices (the factor model's item order); no ids, no I/O.
Shapes: ``n`` items. ``weights_`` is a CSR ``(n, n)`` float32 matrix whose row ``i``
holds the weights from item ``i`` (in a user's history) to the items it recommends;
a user's scores are the sum of the rows of their history, ``x_u @ weights_``, so a
request reads at most ``len(history) * max_neighbors`` weights whatever the catalog's size.

EASE's column ``j`` is the ridge regression of item ``j``'s interactions on every other
item's, ``B = I - P / diag(P)`` with ``P = (X'X + l2 I)^-1``: a dense ``m x m`` inverse.
So the model covers the ``max_items`` items with the most interactions (all of them in a
smaller catalog): fitting holds one ``m x m`` float32 matrix (400 MB at 10,000 items) and
costs ``O(m^3)``; the other items have no weights (they score 0, like an item no item
of the history points to). Each row then keeps its ``max_neighbors`` largest weights in
magnitude: an item in a history adds to at most ``max_neighbors`` items' scores.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from .hybrid import NotFittedError

__all__ = ["ItemItem", "ScoreStats"]

_BLOCK = 512  # columns handled at once when capping and solving (bounds temporaries)


class ScoreStats(NamedTuple):
    """Mean and standard deviation of a user's scores over all ``n`` items."""

    mean: float
    std: float


def _binary(interactions: sp.spmatrix) -> sp.csr_matrix:
    X = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
    X.sum_duplicates()
    X.eliminate_zeros()
    X.data[:] = 1.0
    return X


def _ease_dense(X: sp.csr_matrix, l2: float) -> np.ndarray:
    """EASE's dense ``B`` (``(n, n)`` float32, zero diagonal), the Gram matrix inverted
    through its Cholesky factor in place (one ``n x n`` buffer)."""
    G = (X.T @ X).toarray().astype(np.float32, copy=False)
    G[np.diag_indices_from(G)] += np.float32(l2)
    c, info = lapack.spotrf(G, lower=1, clean=0, overwrite_a=1)
    if info == 0:
        P, info = lapack.spotri(c, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"the Gram matrix plus l2={l2} is not positive definite")
    n = P.shape[0]
    for lo in range(0, n, _BLOCK):  # potri fills the lower triangle: mirror it
        hi = min(lo + _BLOCK, n)
        block = P[lo:hi, lo:hi]
        P[lo:hi, lo:hi] = np.tril(block) + np.tril(block, -1).T
        P[lo:hi, hi:] = P[hi:, lo:hi].T
    d = np.diag(P).copy()
    P /= -d[None, :]
    np.fill_diagonal(P, 0.0)
    return P


def _cap_dense(B: np.ndarray, cap: int) -> sp.csr_matrix:
    """CSR of ``B`` keeping the ``cap`` largest entries in magnitude of each row."""
    n_rows, n = B.shape
    rows, cols, vals = [], [], []
    for lo in range(0, n_rows, _BLOCK):
        block = B[lo : lo + _BLOCK]
        if cap < n:
            keep = np.argpartition(-np.abs(block), cap - 1, axis=1)[:, :cap]
        else:
            keep = np.broadcast_to(np.arange(n), block.shape)
        r = np.broadcast_to(np.arange(block.shape[0])[:, None], keep.shape)
        v = block[r, keep]
        nz = v != 0
        rows.append(r[nz] + lo)
        cols.append(keep[nz])
        vals.append(v[nz])
    return _csr(rows, cols, vals, n)


def _csr(rows, cols, vals, n) -> sp.csr_matrix:
    out = sp.csr_matrix(
        (
            np.concatenate(vals).astype(np.float32),
            (np.concatenate(rows), np.concatenate(cols)),
        ),
        shape=(n, n),
    )
    out.sort_indices()
    return out


def _history_entries(W: sp.csr_matrix, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and weights of the rows ``history`` of ``W``, concatenated."""
    starts, ends = W.indptr[history], W.indptr[history + 1]
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    positions = offsets + np.arange(total)
    return W.indices[positions].astype(np.int64), W.data[positions].astype(np.float64)


class ItemItem:
    """EASE item-item weights, at most ``max_neighbors`` from each item.

    Parameters: ``l2`` (ridge, in interactions: larger for denser data), ``max_neighbors``
    (weights kept per item: serving memory is about ``8 * m * max_neighbors`` bytes plus
    ``8 * n``), ``max_items`` (``m``, the most interacted items the model covers).
    """

    def __init__(self, l2: float = 250.0, max_neighbors: int = 200, max_items: int = 10_000):
        self.l2 = l2
        self.max_neighbors = max_neighbors
        self.max_items = max_items

    def fit(self, interactions: sp.spmatrix) -> ItemItem:
        """Fit on ``interactions`` ``(n_users, n_items)``: any nonzero entry is one
        interaction (weights are ignored). Returns ``self``."""
        if self.l2 <= 0:
            raise ValueError(f"l2 must be positive, got {self.l2}")
        for name in ("max_neighbors", "max_items"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        X = _binary(interactions)
        n = X.shape[1]
        counts = np.diff(sp.csc_matrix(X).indptr)
        seen = np.flatnonzero(counts)
        if seen.size > self.max_items:  # the most interacted, ties by index
            seen = np.sort(seen[np.argsort(-counts[seen], kind="stable")[: self.max_items]])
        self.items_ = seen
        if seen.size == 0:
            self.weights_ = sp.csr_matrix((n, n), dtype=np.float32)
        else:
            W = _cap_dense(_ease_dense(sp.csr_matrix(X[:, seen]), self.l2), self.max_neighbors)
            W = W.tocoo()
            self.weights_ = _csr([seen[W.row]], [seen[W.col]], [W.data], n)
        self.n_items_ = n
        return self

    @classmethod
    def from_weights(cls, weights: sp.spmatrix, **params) -> ItemItem:
        """A fitted model from stored ``weights_`` (e.g. an artifact's CSR arrays)."""
        model = cls(**params)
        W = sp.csr_matrix(weights, dtype=np.float32)
        if W.shape[0] != W.shape[1]:
            raise ValueError(f"item-item weights must be square, got {W.shape}")
        W.sort_indices()
        model.weights_ = W
        model.n_items_ = W.shape[0]
        model.items_ = np.flatnonzero(
            np.diff(W.indptr) | np.bincount(W.indices, minlength=W.shape[1])
        )
        return model

    def _entries(self, history, weights=None) -> tuple[np.ndarray, np.ndarray]:
        """Target item indices and weighted weights of the rows of ``history``."""
        if getattr(self, "weights_", None) is None:
            raise NotFittedError("this item-item model is not fitted yet: call fit()")
        h = np.asarray(history, dtype=np.int64).ravel()
        if weights is None:
            h, w = np.unique(h), None
        else:
            w = np.asarray(weights, dtype=np.float64).ravel()
            if w.shape != h.shape or not np.isfinite(w).all():
                raise ValueError("weights must be finite, one per history item")
            order = np.lexsort((-w, h))  # by item, the largest weight first
            h, w = h[order], w[order]
            first = np.r_[True, h[1:] != h[:-1]] if h.size else np.zeros(0, bool)
            h, w = h[first], w[first]
        if h.size and (h[0] < 0 or h[-1] >= self.n_items_):
            raise IndexError(f"history holds item indices outside 0..{self.n_items_ - 1}")
        cols, vals = _history_entries(self.weights_, h)
        if w is not None:
            lengths = self.weights_.indptr[h + 1] - self.weights_.indptr[h]
            vals = vals * np.repeat(w, lengths)
        return cols, vals

    def scores(self, history, weights=None) -> np.ndarray:
        """``(n_items,)`` float64 scores of every item for a user who interacted with
        the item indices ``history``, each counting ``weights`` (default 1; e.g. more
        for recent interactions). An item repeated in ``history`` counts once, with its
        largest weight."""
        cols, vals = self._entries(history, weights)
        return np.bincount(cols, weights=vals, minlength=self.n_items_)

    def score_items(self, history, items, weights=None) -> np.ndarray:
        """Scores ``(len(items),)`` of the item indices ``items`` only; an index outside
        the model (e.g. ``-1`` for an item it never saw) scores 0."""
        return self._score_items(*self._entries(history, weights), items)

    def stats(self, history, weights=None) -> ScoreStats:
        """Mean and standard deviation of ``scores(history, weights)`` over all items,
        in ``O(len(history) * max_neighbors)`` (no ``n``-sized array)."""
        return self._stats(*self._entries(history, weights))

    def score_items_and_stats(self, history, items, weights=None) -> tuple[np.ndarray, ScoreStats]:
        """``(score_items(...), stats(...))`` reading the history's weights once."""
        cols, vals = self._entries(history, weights)
        return self._score_items(cols, vals, items), self._stats(cols, vals)

    @staticmethod
    def _score_items(cols: np.ndarray, vals: np.ndarray, items) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64).ravel()
        if items.size == 0:
            return np.zeros(0)
        order = np.argsort(items, kind="stable")
        sorted_items = items[order]
        pos = np.searchsorted(sorted_items, cols)
        hit = pos < items.size
        hit[hit] = sorted_items[pos[hit]] == cols[hit]
        summed = np.bincount(pos[hit], weights=vals[hit], minlength=items.size)
        # equal indices in ``items`` share the first slot of their run: spread it
        first = np.searchsorted(sorted_items, sorted_items)
        out = np.empty(items.size)
        out[order] = summed[first]
        return out

    def _stats(self, cols: np.ndarray, vals: np.ndarray) -> ScoreStats:
        if cols.size == 0:
            return ScoreStats(0.0, 0.0)
        n = self.n_items_
        if cols.size * 8 >= n:  # a dense sum is cheaper than sorting
            per_item = np.bincount(cols, weights=vals, minlength=n)
        else:
            _, inverse = np.unique(cols, return_inverse=True)
            per_item = np.bincount(inverse, weights=vals)
        mean = per_item.sum() / n
        var = max(float((per_item**2).sum() / n - mean**2), 0.0)
        return ScoreStats(float(mean), float(np.sqrt(var)))

    @property
    def nbytes(self) -> int:
        """Memory of the stored weights (data, indices, indptr) in bytes."""
        W = self.weights_
        return W.data.nbytes + W.indices.nbytes + W.indptr.nbytes
