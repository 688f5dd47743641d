"""Ranking metrics for implicit feedback, per user: precision@k, recall@k, NDCG@k, AUC.

Pure numpy; no model here. ``scores`` is ``(n_items,)`` for one user; ``positives`` and
``excluded`` are index arrays into it. Excluded items (e.g. the user's training items)
are neither ranked nor counted as negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

__all__ = ["UserMetrics", "user_metrics", "top_k"]


@dataclass(frozen=True)
class UserMetrics:
    precision: float
    recall: float
    ndcg: float
    auc: float
    top: np.ndarray  # item indices of the top k, best first


def top_k(scores: np.ndarray, k: int, excluded: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first, skipping ``excluded`` indices.

    Ties are broken by the lower index, so results are deterministic.
    """
    s = scores.astype(np.float64, copy=True)
    if excluded is not None and excluded.size:
        s[excluded] = -np.inf
    n_valid = int(np.isfinite(s).sum())
    k = min(k, n_valid)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-s, k - 1)[:k] if k < s.size else np.arange(s.size)
    # lexsort: last key is primary -> sort by score desc, then index asc
    order = np.lexsort((part, -s[part]))
    top = part[order]
    # argpartition may cut inside a tie; make the cut deterministic by index
    kth = s[top[-1]]
    tied = np.flatnonzero(s == kth)
    if tied.size > np.sum(s[top] == kth):
        better = top[s[top] > kth]
        top = np.concatenate([better, np.sort(tied)[: k - better.size]])
    return top


def user_metrics(
    scores: np.ndarray, positives: np.ndarray, k: int, excluded: np.ndarray | None = None
) -> UserMetrics:
    """Metrics of one user's ranking. ``positives`` must not be empty."""
    n = scores.size
    pos_mask = np.zeros(n, dtype=bool)
    pos_mask[positives] = True
    valid = np.ones(n, dtype=bool)
    if excluded is not None and excluded.size:
        valid[excluded] = False
    pos_mask &= valid
    n_pos = int(pos_mask.sum())
    top = top_k(scores, k, excluded)
    hits = pos_mask[top]
    precision = float(hits.sum()) / k
    recall = float(hits.sum()) / n_pos if n_pos else 0.0
    discounts = 1.0 / np.log2(np.arange(2, top.size + 2))
    dcg = float((hits * discounts).sum())
    idcg = float((1.0 / np.log2(np.arange(2, min(n_pos, k) + 2))).sum())
    ndcg = dcg / idcg if idcg > 0 else 0.0
    cand = scores[valid]
    cand_pos = pos_mask[valid]
    n_neg = cand.size - n_pos
    if n_pos == 0 or n_neg == 0:
        auc = float("nan")
    else:
        ranks = rankdata(cand)  # average ranks: ties count one half
        auc = (ranks[cand_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return UserMetrics(precision, recall, ndcg, float(auc), top)
