"""Item-item model: EASE (Steck, 2019), each item recommending at most ``max_neighbors``.

Pure math on internal item indices (the factor model's item order); no ids, no I/O.
Shapes: ``n`` items, ``m`` of them covered. ``weights_`` is a CSR ``(m, m)`` float32
matrix whose row ``i`` holds the weights from covered item ``i`` (in a user's history)
to the covered items it recommends; a user's scores are the sum of the rows of their
history, so a request reads at most ``len(history) * max_neighbors`` weights and sums
them into ``m`` scores, whatever the catalog's size.

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


def _csr(rows, cols, vals, n: int) -> sp.csr_matrix:
    out = sp.csr_matrix(
        (
            np.concatenate(vals).astype(np.float32),
            (np.concatenate(rows), np.concatenate(cols)),
        ),
        shape=(n, n),
    )
    out.sort_indices()
    return out


def _history_entries(W: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and weights of ``W``'s ``rows``, concatenated, and their lengths."""
    starts = W.indptr[rows]
    lengths = W.indptr[rows + 1] - starts
    total = int(lengths.sum())
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    positions = offsets + np.arange(total)
    return positions, lengths


class ItemItem:
    """EASE item-item weights, at most ``max_neighbors`` from each item.

    Parameters: ``l2`` (ridge, in interactions: larger for denser data), ``max_neighbors``
    (weights kept per item), ``max_items`` (``m``, the most interacted items the model
    covers). Learned: ``items_`` ``(m,)`` the covered items (sorted indices),
    ``weights_`` CSR ``(m, m)`` float32 between them (in ``items_`` order), ``n_items_``.
    Serving memory: about ``8 * m * max_neighbors + 4 * n_items`` bytes.
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
        counts = np.diff(sp.csc_matrix(X).indptr)
        items = np.flatnonzero(counts)
        if items.size > self.max_items:  # the most interacted, ties by index
            items = np.sort(items[np.argsort(-counts[items], kind="stable")[: self.max_items]])
        if items.size:
            W = _cap_dense(_ease_dense(sp.csr_matrix(X[:, items]), self.l2), self.max_neighbors)
        else:
            W = sp.csr_matrix((0, 0), dtype=np.float32)
        return self._set(W, items, X.shape[1])

    @classmethod
    def from_arrays(
        cls, weights: sp.spmatrix, items: np.ndarray, n_items: int, **params
    ) -> ItemItem:
        """A fitted model from stored ``weights_``, ``items_`` and ``n_items_`` (e.g. an
        artifact's CSR arrays)."""
        items = np.asarray(items, dtype=np.int64).ravel()
        W = sp.csr_matrix(weights, dtype=np.float32)
        if W.shape != (items.size, items.size):
            raise ValueError(
                f"item-item weights must be ({items.size}, {items.size}) for "
                f"{items.size} items, got {W.shape}"
            )
        if items.size and (np.any(np.diff(items) <= 0) or items[0] < 0 or items[-1] >= n_items):
            raise ValueError(f"items must be increasing indices in 0..{n_items - 1}")
        return cls(**params)._set(W, items, int(n_items))

    def _set(self, W: sp.csr_matrix, items: np.ndarray, n_items: int) -> ItemItem:
        W.sort_indices()
        self.weights_ = W
        self.items_ = items
        self.n_items_ = n_items
        position = np.full(n_items, -1, dtype=np.int32)
        position[items] = np.arange(items.size, dtype=np.int32)
        self._position = position  # item index -> row of weights_, -1 outside
        return self

    def _head_scores(self, history, weights=None) -> np.ndarray:
        """``(m,)`` float64 scores of the covered items for ``history``."""
        if getattr(self, "weights_", None) is None:
            raise NotFittedError("this item-item model is not fitted yet: call fit()")
        h = np.asarray(history, dtype=np.int64).ravel()
        if h.size and (h.min() < 0 or h.max() >= self.n_items_):
            raise IndexError(f"history holds item indices outside 0..{self.n_items_ - 1}")
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64).ravel()
            if w.shape != h.shape or not np.isfinite(w).all():
                raise ValueError("weights must be finite, one per history item")
        rows = self._position[h]
        covered = rows >= 0
        rows = rows[covered]
        m = self.items_.size
        if weights is None:
            rows = np.unique(rows)
            positions, _ = _history_entries(self.weights_, rows)
            return np.bincount(
                self.weights_.indices[positions], self.weights_.data[positions], minlength=m
            )
        w = w[covered]
        order = np.lexsort((-w, rows))  # by item, the largest weight first
        rows, w = rows[order], w[order]
        first = np.r_[True, rows[1:] != rows[:-1]] if rows.size else np.zeros(0, bool)
        rows, w = rows[first], w[first]
        positions, lengths = _history_entries(self.weights_, rows)
        vals = self.weights_.data[positions] * np.repeat(w, lengths)
        return np.bincount(self.weights_.indices[positions], vals, minlength=m)

    def _at(self, head: np.ndarray, items) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64).ravel()
        inside = (items >= 0) & (items < self.n_items_)
        rows = np.full(items.size, -1, dtype=np.int64)
        rows[inside] = self._position[items[inside]]
        return np.where(rows >= 0, head[np.maximum(rows, 0)], 0.0) if head.size else 0.0 * rows

    def _stats(self, head: np.ndarray) -> ScoreStats:
        n = self.n_items_  # the items outside the model score 0
        mean = head.sum() / n
        var = max(float((head @ head) / n - mean**2), 0.0)
        return ScoreStats(float(mean), float(np.sqrt(var)))

    def scores(self, history, weights=None) -> np.ndarray:
        """``(n_items,)`` float64 scores of every item for a user who interacted with
        the item indices ``history``, each counting ``weights`` (default 1; e.g. more
        for recent interactions). An item repeated in ``history`` counts once, with its
        largest weight; an item outside the model adds nothing and scores 0."""
        head = self._head_scores(history, weights)
        out = np.zeros(self.n_items_)
        out[self.items_] = head
        return out

    def score_items(self, history, items, weights=None) -> np.ndarray:
        """Scores ``(len(items),)`` of the item indices ``items`` only; an index outside
        the model (e.g. ``-1`` for an item it never saw) scores 0."""
        return self._at(self._head_scores(history, weights), items)

    def stats(self, history, weights=None) -> ScoreStats:
        """Mean and standard deviation of ``scores(history, weights)`` over all
        ``n_items_`` items, in ``O(len(history) * max_neighbors + m)``."""
        return self._stats(self._head_scores(history, weights))

    def score_items_and_stats(self, history, items, weights=None) -> tuple[np.ndarray, ScoreStats]:
        """``(score_items(...), stats(...))`` reading the history's weights once."""
        head = self._head_scores(history, weights)
        return self._at(head, items), self._stats(head)

    @property
    def nbytes(self) -> int:
        """Memory of the learned arrays (weights' data, indices, indptr; items; the
        position map) in bytes."""
        W = self.weights_
        return (
            W.data.nbytes
            + W.indices.nbytes
            + W.indptr.nbytes
            + self.items_.nbytes
            + (self._position.nbytes)
        )
