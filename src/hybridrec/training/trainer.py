"""Fit a model with the project's defaults, optionally checked on a time holdout."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from ..model.blend import BLEND_DEFAULTS, check_blend_params, fit_blend
from ..model.hybrid import HybridLightFM
from .evaluation import DEFAULT_SAMPLE_USERS, evaluate
from .split import time_holdout

__all__ = [
    "DEFAULT_PARAMS",
    "TrainResult",
    "train_model",
    "fit_model",
    "data_summary",
    "default_threads",
    "throughput",
    "split_params",
    "with_blend",
]

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
    # the blend beside LightFM (hybridrec.model.blend): an item-item (EASE) part for
    # users with a history, popularity for users without; item_item_weight 0 turns it off
    **BLEND_DEFAULTS,
}

Features = Mapping[str, Mapping[str, float]]


def default_threads() -> int:
    """Training threads when none are asked for: every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def throughput(model: HybridLightFM) -> dict:
    """What a fit cost, for the manifest: interactions per epoch (distinct pairs),
    seconds per epoch, and the median interactions per second."""
    seconds = [round(s, 4) for s in getattr(model, "epoch_seconds_", [])]
    n = int(getattr(model, "epoch_interactions_", 0))
    median = statistics.median(seconds) if seconds else 0.0
    return {
        "interactions_per_epoch": n,
        "epoch_seconds": seconds,
        "interactions_per_second": round(n / median) if median > 0 else None,
    }


@dataclass(frozen=True)
class TrainResult:
    model: HybridLightFM
    metrics: dict | None  # evaluate() output on the holdout, or None
    params: dict


def split_params(params: Mapping) -> tuple[dict, dict]:
    """``(LightFM's hyperparameters, the blend's)`` from one parameter mapping; the
    blend's are checked (ValueError names a bad one)."""
    lightfm = {k: v for k, v in params.items() if k not in BLEND_DEFAULTS}
    return lightfm, check_blend_params(params)


def with_blend(model: HybridLightFM, blend_params: Mapping) -> HybridLightFM:
    """``model`` with its blend fitted (``blend_``, ``item_item_``, ``blend_params_``;
    ``blend_seconds_``): the item-item part is always fitted anew on the model's
    interactions (a warm-started LightFM part included)."""
    t0 = time.perf_counter()
    model.blend_, model.item_item_ = fit_blend(model, blend_params)
    model.blend_params_ = dict(blend_params)
    model.blend_seconds_ = time.perf_counter() - t0
    return model


def fit_model(
    interactions: pd.DataFrame,
    user_features: Features | None,
    item_features: Features | None,
    params: Mapping | None = None,
    *,
    seed: int | None = None,
    num_threads: int | None = None,
    callback: Callable[[int, float, float], None] | None = None,
) -> HybridLightFM:
    """A :class:`HybridLightFM` with ``DEFAULT_PARAMS`` updated by ``params``, fitted
    with ``num_threads`` (default: :func:`default_threads`);
    ``callback(epoch, seconds, interactions_per_second)`` after each epoch."""
    lightfm, blend = split_params({**DEFAULT_PARAMS, **(params or {})})
    model = HybridLightFM(random_state=seed, **lightfm)

    def per_epoch(epoch: int, seconds: float) -> None:
        callback(epoch, seconds, model.epoch_interactions_ / seconds if seconds > 0 else 0.0)

    model.fit(
        interactions,
        user_features,
        item_features,
        num_threads=num_threads or default_threads(),
        callback=per_epoch if callback else None,
    )
    return with_blend(model, blend)


def train_model(
    interactions: pd.DataFrame,
    user_features: Features | None = None,
    item_features: Features | None = None,
    params: Mapping | None = None,
    *,
    holdout: float = 0.1,
    k: int = 10,
    seed: int | None = None,
    num_threads: int | None = None,
    sample_users: int | None = DEFAULT_SAMPLE_USERS,
    callback: Callable[[str, int, float, float], None] | None = None,
) -> TrainResult:
    """Fit on all ``interactions``; when ``holdout > 0`` first measure the same settings
    on the newest ``holdout`` share of interactions (fit on the older ones; at most
    ``sample_users`` test users evaluated).

    ``callback(stage, epoch, seconds, interactions_per_second)`` is called after every
    epoch, ``stage`` being ``"holdout"`` or ``"final"``.
    """
    merged = {**DEFAULT_PARAMS, **(params or {})}
    split_params(merged)  # a bad value is refused before any fit
    metrics = None

    def report(stage: str):
        return (lambda e, s, r: callback(stage, e, s, r)) if callback else None

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
                callback=report("holdout"),
            )
            metrics = evaluate(
                probe,
                newest,
                user_features=user_features,
                item_features=item_features,
                k=k,
                sample_users=sample_users,
            )
            metrics["holdout"] = {"fraction": holdout, "interactions": len(newest)}
    model = fit_model(
        interactions,
        user_features,
        item_features,
        merged,
        seed=seed,
        num_threads=num_threads,
        callback=report("final"),
    )
    return TrainResult(model=model, metrics=metrics, params=merged)


def data_summary(interactions: pd.DataFrame, log_last_id: str | None = None) -> dict:
    """What a model was trained on, for its manifest: counts, the newest timestamp,
    when it came from the store's log the last log entry read (and the archive's
    position), and the rows skipped as unusable, by reason.

    The retraining cycle judges a champion only on interactions it has not seen.
    """
    ts = interactions["timestamp"] if "timestamp" in interactions else None
    if interactions.attrs.get("timestamps") == "row_order":
        ts = None  # a file without timestamps: row numbers say nothing about time
    return {
        "log_last_id": log_last_id,
        "archive_cursor": interactions.attrs.get("archive_cursor"),
        "skipped_rows": dict(interactions.attrs.get("skipped") or {}),
        "interactions": len(interactions),
        "users": int(interactions["user_id"].nunique()),
        "items": int(interactions["item_id"].nunique()),
        "max_timestamp": int(ts.max()) if ts is not None and len(ts) else None,
    }
