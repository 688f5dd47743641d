"""Segmented evaluation of a model against the popularity baseline.

Segments: ``all``, ``warm_users`` (in training), ``cold_users`` (not in training), and
``cold_items``: the ranking restricted to items not in training, scored from their
features, with test positives restricted to those items.

Candidates are the model's known items plus every item of ``item_features`` that the
model can score from its features. A user's training items are excluded from their
ranking. Test positives outside the candidates cannot be recommended by anyone and are
dropped; users left with no positive are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..model.hybrid import HybridLightFM
from .metrics import user_metrics

__all__ = ["evaluate", "SEGMENTS", "format_table", "json_safe"]

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


def evaluate(
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


def format_table(result: dict) -> str:
    """A readable table of model vs baseline by segment."""
    lines = [
        f"model {result.get('model_version') or '(unsaved)'}   k={result['k']}",
        f"{'segment':<12}{'users':>7}  {'':<9}{'prec@k':>8}{'recall':>8}{'ndcg':>8}"
        f"{'auc':>8}{'cover':>8}",
    ]
    for seg in SEGMENTS:
        for label, block in (("model", result["segments"]), ("baseline", result["baseline"])):
            m = block[seg]
            name = seg if label == "model" else ""
            users = str(m["users"]) if label == "model" else ""
            lines.append(
                f"{name:<12}{users:>7}  {label:<9}{m['precision']:>8.4f}{m['recall']:>8.4f}"
                f"{m['ndcg']:>8.4f}{m['auc']:>8.4f}{m['coverage']:>8.4f}"
            )
    return "\n".join(lines)


def json_safe(obj):
    """``obj`` with non-finite floats as None: JSON has no NaN, and a metric that is
    undefined (e.g. AUC with no negatives) becomes null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
