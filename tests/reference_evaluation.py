"""The evaluation as it was before issue 14 (per user, ranking the whole catalog with
``scipy.stats.rankdata``), kept verbatim as the reference the batched evaluation must
match on small data (tests/test_evaluation_scale.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from hybridrec.model.hybrid import HybridLightFM


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


SEGMENTS = ("all", "warm_users", "cold_users", "cold_items")
_KEYS = ("precision", "recall", "ndcg", "auc")


def _candidates(model: HybridLightFM, item_features: Mapping[str, Mapping[str, float]]):
    """Ids, ``[q_i, b_i, 1]`` rows and popularity of the known items, then of the new
    items the model can score from their features; and the number of known items."""
    known = list(model.item_ids_.external)
    # sorted: the store iterates in no fixed order, and the baseline breaks ties by position
    new = sorted(item for item in item_features if item not in model.item_ids_)
    matrix = model.item_space_.matrix(new, item_features)
    scorable = np.diff(matrix.indptr) > 0
    new_ids = [item for item, ok in zip(new, scorable) if ok]
    factors = np.vstack([model.item_factors(), model.item_factors(matrix[scorable])])
    popularity = np.concatenate(
        [model.baseline_scores().astype(np.float64), np.zeros(len(new_ids))]
    )
    return known + new_ids, factors.astype(np.float64), popularity, len(known)


def _summary(rows: list, n_items: int, k: int) -> dict:
    if not rows:
        return {"users": 0, **{key: 0.0 for key in _KEYS}, "coverage": 0.0}
    arr = {key: np.array([getattr(r, key) for r in rows]) for key in _KEYS}
    covered = np.unique(np.concatenate([r.top for r in rows])) if rows else []
    return {
        "users": len(rows),
        **{key: float(np.nanmean(v)) if np.isfinite(v).any() else 0.0 for key, v in arr.items()},
        "coverage": len(covered) / n_items if n_items else 0.0,
    }


def reference_evaluate(
    model: HybridLightFM,
    test: pd.DataFrame,
    *,
    user_features: Mapping[str, Mapping[str, float]] | None = None,
    item_features: Mapping[str, Mapping[str, float]] | None = None,
    k: int = 10,
    model_version: str | None = None,
) -> dict:
    """Metrics of ``model`` and of the popularity baseline on ``test`` interactions.

    Returns ``{"k", "model_version", "segments": {SEG: {...}}, "baseline": {SEG: {...}}}``
    where each ``{...}`` has ``users, precision, recall, ndcg, auc, coverage``.
    """
    user_features = user_features or {}
    item_features = item_features or {}
    ids, factors, popularity, n_known = _candidates(model, item_features)
    # Popularity as ranks with ties broken at random (seeded): ordering ties by index
    # would let the catalog's order (often oldest, most popular first) leak into the
    # baseline, and cold items all tie at zero.
    order = np.lexsort((np.random.default_rng(0).random(popularity.size), popularity))
    popularity = np.empty(popularity.size)
    popularity[order] = np.arange(popularity.size, dtype=np.float64)
    index = {item: n for n, item in enumerate(ids)}
    n_items = len(ids)
    cold_item_idx = np.arange(n_known, n_items)

    known_users = model.user_ids_
    train_csr = model.interactions_.tocsr()
    by_user = test.groupby(test["user_id"].astype(str))["item_id"].agg(list)

    out = {seg: [] for seg in SEGMENTS}
    base = {seg: [] for seg in SEGMENTS}
    for user, items in by_user.items():
        pos = np.fromiter((index[str(i)] for i in items if str(i) in index), dtype=np.int64)
        if pos.size == 0:
            continue
        internal = known_users.get(user)
        excluded = (
            train_csr.indices[train_csr.indptr[internal] : train_csr.indptr[internal + 1]]
            if internal is not None
            else np.zeros(0, dtype=np.int64)
        )
        pos = np.setdiff1d(pos, excluded)
        if pos.size == 0:
            continue
        row = model.user_row(user, user_features.get(user))
        uvec = model.user_vector(row)
        scores = popularity if uvec is None else factors @ uvec
        segment = "warm_users" if internal is not None else "cold_users"
        for seg in ("all", segment):
            out[seg].append(user_metrics(scores, pos, k, excluded))
            base[seg].append(user_metrics(popularity, pos, k, excluded))
        cold_pos = pos[pos >= n_known] - n_known
        if cold_pos.size and cold_item_idx.size > 1:
            out["cold_items"].append(user_metrics(scores[n_known:], cold_pos, k))
            # popularity knows nothing of cold items: their order is random
            base["cold_items"].append(user_metrics(popularity[n_known:], cold_pos, k))

    n_cold = n_items - n_known
    return {
        "k": k,
        "model_version": model_version,
        "segments": {
            s: _summary(out[s], n_cold if s == "cold_items" else n_items, k) for s in SEGMENTS
        },
        "baseline": {
            s: _summary(base[s], n_cold if s == "cold_items" else n_items, k) for s in SEGMENTS
        },
    }
