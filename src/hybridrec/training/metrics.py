"""Ranking metrics for implicit feedback: precision@k, recall@k, NDCG@k and AUC, exact,
for a batch of users at once, without sorting the catalog.

Pure numpy; no model here. Scores of a batch are given twice:

- ``approx`` ``(B, n)``: cheap scores (e.g. a float32 matrix product), each within
  ``delta[b]`` of the exact score;
- ``exact(rows, cols)``: the exact (float64) scores of a few ``(row, item)`` pairs.

Top-k keeps the items whose approximate score can reach the k-th best (a lower bound of
the k-th best found on a strided subset of the catalog, minus ``2 delta``) and ranks only
those exactly. AUC counts, for each positive, the negatives that score above it (and half
of those that tie): items surely above or below from ``approx``, the few within ``delta``
from ``exact``. Each costs O(items) per user; ties are broken by the lower item index, as
a full sort by (score desc, index asc) would. Excluded items (e.g. the user's training
items) are neither ranked nor counted as negatives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["UserMetrics", "BatchMetrics", "rank_metrics", "user_metrics", "top_k", "error_bound"]

_EMPTY = np.zeros(0, dtype=np.int64)
_SUBSET = 65_536  # items a row's k-th-best lower bound is taken from
_FEW_POSITIVES = 8  # up to this many: one comparison pass per positive; more: searchsorted

Exact = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class UserMetrics:
    precision: float
    recall: float
    ndcg: float
    auc: float
    top: np.ndarray  # item indices of the top k, best first


@dataclass(frozen=True)
class BatchMetrics:
    """Per-row metrics of a batch, ``(B,)`` float64 each (AUC NaN when undefined), and
    ``top[b]``: row ``b``'s top-k item indices, best first."""

    precision: np.ndarray
    recall: np.ndarray
    ndcg: np.ndarray
    auc: np.ndarray
    top: list[np.ndarray]


def error_bound(user_vectors: np.ndarray, item_norm: float) -> np.ndarray:
    """``(B,)`` bound on ``|float32 product - float64 product|`` of each user vector with
    any item row of norm at most ``item_norm``: ``4 (d + 2) 2^-24 |u| item_norm`` (the
    float32 rounding of both factors and of a d-term sum, Cauchy-Schwarz, with a factor 2
    to spare)."""
    d = user_vectors.shape[1]
    norms = np.linalg.norm(user_vectors.astype(np.float64), axis=1)
    return 4.0 * (d + 2) * 2.0**-24 * norms * float(item_norm)


def _up(x: float, dtype) -> np.floating:
    """The smallest value of ``dtype`` >= x: a threshold that never drops an item when
    it is rounded to the scores' precision."""
    if dtype != np.float32:
        return np.float64(x)
    with np.errstate(over="ignore"):
        y = np.float32(x)
    return y if float(y) >= x else np.nextafter(y, np.float32(np.inf))


def _down(x: float, dtype) -> np.floating:
    """The largest value of ``dtype`` <= x."""
    if dtype != np.float32:
        return np.float64(x)
    with np.errstate(over="ignore"):
        y = np.float32(x)
    return y if float(y) <= x else np.nextafter(y, np.float32(-np.inf))


def _lower_bound_kth(approx: np.ndarray, k: int) -> np.ndarray:
    """``(B,)``: a lower bound of each row's k-th largest value: the k-th largest of a
    strided subset of the columns (``-inf`` when the subset has fewer than k)."""
    step = max(1, approx.shape[1] // _SUBSET)
    sub = approx[:, ::step]
    m = sub.shape[1]
    if m < k:
        return np.full(approx.shape[0], -np.inf)
    return np.partition(sub, m - k, axis=1)[:, m - k].astype(np.float64)


def _top_k(approx: np.ndarray, k: int, exact: Exact, delta: np.ndarray) -> list[np.ndarray]:
    """Each row's top-k among finite ``approx`` entries, exact, ties by lower index."""
    kth = _lower_bound_kth(approx, k)
    lowest = np.finfo(approx.dtype).min
    threshold = np.where(np.isfinite(kth), kth - 2.0 * delta, lowest)
    tops = []
    for b in range(approx.shape[0]):
        row = approx[b]
        cols = np.flatnonzero(row >= _down(threshold[b], approx.dtype))  # 1-D: fast
        cols = cols[np.isfinite(row[cols])]  # an excluded item is -inf
        x = exact(np.full(cols.size, b), cols)
        tops.append(cols[np.lexsort((cols, -x))[:k]].astype(np.int64))
    return tops


def _auc_counts(
    row: np.ndarray, s: np.ndarray, d: float, exact_row: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """For each positive score ``s[j]``: how many items score above it and how many tie
    (itself included), over the whole ``row``; O(len(row)) passes."""
    p = s.size
    gt = np.zeros(p, dtype=np.int64)
    eq = np.zeros(p, dtype=np.int64)
    if p <= _FEW_POSITIVES:
        for j in range(p):
            hi, lo = _up(s[j] + d, row.dtype), _down(s[j] - d, row.dtype)
            sure = int(np.count_nonzero(row > hi))
            band = np.flatnonzero((row >= lo) & (row <= hi))
            xb = exact_row(band)
            gt[j] = sure + int(np.count_nonzero(xb > s[j]))
            eq[j] = int(np.count_nonzero(xb == s[j]))
        return gt, eq
    order = np.argsort(s, kind="stable")
    ss = s[order]
    hi = np.array([_up(v + d, row.dtype) for v in ss], dtype=row.dtype)
    lo = np.array([_down(v - d, row.dtype) for v in ss], dtype=row.dtype)
    above_hi = np.searchsorted(hi, row, side="left")  # thresholds j with hi[j] < item
    from_lo = np.searchsorted(lo, row, side="right")  # thresholds j with lo[j] <= item
    counts = np.bincount(above_hi, minlength=p + 1)
    sure = counts[::-1].cumsum()[::-1][1:]  # items with above_hi > j
    band = np.flatnonzero(from_lo > above_hi)
    xb = exact_row(band)
    j = np.arange(p)
    inside = (j[None, :] >= above_hi[band][:, None]) & (j[None, :] < from_lo[band][:, None])
    gt_sorted = sure + ((xb[:, None] > ss[None, :]) & inside).sum(axis=0)
    eq_sorted = ((xb[:, None] == ss[None, :]) & inside).sum(axis=0)
    gt[order], eq[order] = gt_sorted, eq_sorted
    return gt, eq


def rank_metrics(
    approx: np.ndarray,
    positives: Sequence[np.ndarray],
    k: int,
    *,
    excluded: Sequence[np.ndarray] | None = None,
    exact: Exact | None = None,
    delta: np.ndarray | None = None,
) -> BatchMetrics:
    """Metrics of a batch of rankings, exact (see the module docstring).

    ``approx`` ``(B, n)`` float (overwritten with ``-inf`` at ``excluded``);
    ``positives[b]``: unique item indices, none excluded, not empty; ``excluded[b]``:
    unique item indices; ``exact`` defaults to ``approx`` itself (then ``delta`` is 0).
    """
    b_rows, n = approx.shape
    if exact is None:
        base = approx

        def exact(rows, cols):
            return base[rows, cols].astype(np.float64)

        delta = np.zeros(b_rows)
    delta = np.zeros(b_rows) if delta is None else np.asarray(delta, dtype=np.float64)
    n_valid = np.full(b_rows, n, dtype=np.int64)
    if excluded is not None:
        lens = np.array([e.size for e in excluded], dtype=np.int64)
        if lens.sum():
            approx[np.repeat(np.arange(b_rows), lens), np.concatenate(excluded)] = -np.inf
        n_valid -= lens
    kk = min(k, n)
    tops = _top_k(approx, kk, exact, delta) if kk > 0 else [_EMPTY] * b_rows
    discounts = 1.0 / np.log2(np.arange(2, kk + 2))
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])
    precision = np.zeros(b_rows)
    recall = np.zeros(b_rows)
    ndcg = np.zeros(b_rows)
    auc = np.full(b_rows, np.nan)
    for b in range(b_rows):
        pos = positives[b]
        n_pos = pos.size
        top = tops[b]
        hits = np.isin(top, pos)
        n_hits = int(hits.sum())
        precision[b] = n_hits / k
        recall[b] = n_hits / n_pos if n_pos else 0.0
        idcg = ideal[min(n_pos, k)]
        ndcg[b] = float((hits * discounts[: top.size]).sum()) / idcg if idcg > 0 else 0.0
        n_neg = int(n_valid[b]) - n_pos
        if n_pos == 0 or n_neg <= 0:
            continue
        s = exact(np.full(n_pos, b), pos)
        gt, eq = _auc_counts(
            approx[b], s, float(delta[b]), lambda c, b=b: exact(np.full(c.size, b), c)
        )
        gt_pos = (s[None, :] > s[:, None]).sum(axis=1)
        eq_pos = (s[None, :] == s[:, None]).sum(axis=1)
        u = (n_neg - (gt - gt_pos) - 0.5 * (eq - eq_pos)).sum()
        auc[b] = u / (n_pos * n_neg)
    return BatchMetrics(precision, recall, ndcg, auc, tops)


def top_k(scores: np.ndarray, k: int, excluded: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first, skipping ``excluded`` indices.

    Ties are broken by the lower index, so results are deterministic.
    """
    s = scores.astype(np.float64, copy=True)[None, :]
    if excluded is not None and excluded.size:
        s[0, excluded] = -np.inf
    k = min(k, s.shape[1])
    if k <= 0:
        return _EMPTY

    def exact(rows, cols):
        return s[rows, cols]

    return _top_k(s, k, exact, np.zeros(1))[0]


def user_metrics(
    scores: np.ndarray, positives: np.ndarray, k: int, excluded: np.ndarray | None = None
) -> UserMetrics:
    """Metrics of one user's ranking (``scores`` ``(n_items,)``). ``positives`` must not
    be empty; positives that are also excluded do not count."""
    excl = _EMPTY if excluded is None else np.unique(np.asarray(excluded, dtype=np.int64))
    pos = np.setdiff1d(np.asarray(positives, dtype=np.int64), excl)
    m = rank_metrics(scores.astype(np.float64, copy=True)[None, :], [pos], k, excluded=[excl])
    return UserMetrics(
        float(m.precision[0]), float(m.recall[0]), float(m.ndcg[0]), float(m.auc[0]), m.top[0]
    )
