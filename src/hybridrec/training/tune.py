"""Pick among a few candidate configurations on a validation split of the training data."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from .evaluation import DEFAULT_SAMPLE_USERS, evaluate
from .split import time_holdout
from .trainer import DEFAULT_PARAMS, fit_model

__all__ = ["CANDIDATES", "tune", "objective"]

# Feature weighting is what decides warm vs cold quality (see README, "Quality of the
# defaults"); the grid stays small so that tuning costs a handful of fits.
CANDIDATES: tuple[dict, ...] = (
    {"user_feature_weight": 1.0, "item_feature_weight": 2.0},
    {"user_feature_weight": 1.0, "item_feature_weight": 1.0},
    {"user_feature_weight": 0.5, "item_feature_weight": 1.0},
    {"user_feature_weight": 2.0, "item_feature_weight": 2.0},
    {"user_feature_weight": 1.0, "item_feature_weight": 2.0, "no_components": 32},
)

_SEGMENTS = ("warm_users", "cold_users", "cold_items")


def objective(metrics: dict) -> float:
    """Mean precision@k over the warm, cold-user and cold-item segments that have users."""
    vals = [
        metrics["segments"][s]["precision"]
        for s in _SEGMENTS
        if metrics["segments"][s]["users"] > 0
    ]
    return sum(vals) / len(vals) if vals else 0.0


def tune(
    interactions: pd.DataFrame,
    user_features: Mapping | None,
    item_features: Mapping | None,
    candidates: Sequence[Mapping] = CANDIDATES,
    *,
    validation: float = 0.1,
    k: int = 10,
    seed: int | None = 0,
    num_threads: int | None = None,
    sample_users: int | None = DEFAULT_SAMPLE_USERS,
    on_result: Callable[[dict, dict, float], None] | None = None,
) -> tuple[dict, list[tuple[dict, dict, float]]]:
    """Fit each candidate on the older interactions and score it on the newest
    ``validation`` share; return the best full parameter set and every result as
    ``(params, metrics, objective)``."""
    older, newest = time_holdout(interactions, validation)
    results = []
    for cand in candidates:
        params = {**DEFAULT_PARAMS, **cand}
        model = fit_model(
            older, user_features, item_features, params, seed=seed, num_threads=num_threads
        )
        metrics = evaluate(
            model,
            newest,
            user_features=user_features,
            item_features=item_features,
            k=k,
            sample_users=sample_users,
        )
        score = objective(metrics)
        results.append((params, metrics, score))
        if on_result:
            on_result(params, metrics, score)
    best = max(results, key=lambda r: r[2])[0]
    return best, results
