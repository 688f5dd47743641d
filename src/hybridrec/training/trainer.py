"""Fit a model with the project's defaults, optionally checked on a time holdout."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from ..model.hybrid import HybridLightFM
from .evaluation import evaluate
from .split import time_holdout

__all__ = ["DEFAULT_PARAMS", "TrainResult", "train_model", "fit_model", "data_summary"]

# Chosen on the bundled MovieLens sample (benchmarks/quality_defaults.py): features next
# to an indicator get as much weight as the indicator on the user side and twice on the
# item side, which keeps warm users level with pure collaborative filtering while cold
# users and cold items beat popularity.
DEFAULT_PARAMS: dict = {
    "no_components": 64,
    "loss": "warp",
    "learning_rate": 0.05,
    "epochs": 20,
    "user_indicators": True,
    "item_indicators": True,
    "user_feature_weight": 1.0,
    "item_feature_weight": 2.0,
    "normalize": True,
}

Features = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class TrainResult:
    model: HybridLightFM
    metrics: dict | None  # evaluate() output on the holdout, or None
    params: dict


def fit_model(
    interactions: pd.DataFrame,
    user_features: Features | None,
    item_features: Features | None,
    params: Mapping | None = None,
    *,
    seed: int | None = None,
    num_threads: int = 1,
    callback: Callable[[int, float], None] | None = None,
) -> HybridLightFM:
    """A :class:`HybridLightFM` with ``DEFAULT_PARAMS`` updated by ``params``, fitted."""
    merged = {**DEFAULT_PARAMS, **(params or {})}
    model = HybridLightFM(random_state=seed, **merged)
    return model.fit(
        interactions, user_features, item_features, num_threads=num_threads, callback=callback
    )


def train_model(
    interactions: pd.DataFrame,
    user_features: Features | None = None,
    item_features: Features | None = None,
    params: Mapping | None = None,
    *,
    holdout: float = 0.1,
    k: int = 10,
    seed: int | None = None,
    num_threads: int = 1,
    callback: Callable[[str, int, float], None] | None = None,
) -> TrainResult:
    """Fit on all ``interactions``; when ``holdout > 0`` first measure the same settings
    on the newest ``holdout`` share of interactions (fit on the older ones).

    ``callback(stage, epoch, seconds)`` is called after every epoch, ``stage`` being
    ``"holdout"`` or ``"final"``.
    """
    merged = {**DEFAULT_PARAMS, **(params or {})}
    metrics = None
    if holdout > 0:
        older, newest = time_holdout(interactions, holdout)
        if len(older) and len(newest):
            probe = fit_model(
                older,
                user_features,
                item_features,
                merged,
                seed=seed,
                num_threads=num_threads,
                callback=(lambda e, s: callback("holdout", e, s)) if callback else None,
            )
            metrics = evaluate(
                probe, newest, user_features=user_features, item_features=item_features, k=k
            )
            metrics["holdout"] = {"fraction": holdout, "interactions": len(newest)}
    model = fit_model(
        interactions,
        user_features,
        item_features,
        merged,
        seed=seed,
        num_threads=num_threads,
        callback=(lambda e, s: callback("final", e, s)) if callback else None,
    )
    return TrainResult(model=model, metrics=metrics, params=merged)


def data_summary(interactions: pd.DataFrame, log_last_id: str | None = None) -> dict:
    """What a model was trained on, for its manifest: counts, the newest timestamp and,
    when it came from the store's log, the last log entry read.

    The retraining cycle judges a champion only on interactions it has not seen.
    """
    ts = interactions["timestamp"] if "timestamp" in interactions else None
    if interactions.attrs.get("timestamps") == "row_order":
        ts = None  # a file without timestamps: row numbers say nothing about time
    return {
        "log_last_id": log_last_id,
        "interactions": len(interactions),
        "users": int(interactions["user_id"].nunique()),
        "items": int(interactions["item_id"].nunique()),
        "max_timestamp": int(ts.max()) if ts is not None and len(ts) else None,
    }
