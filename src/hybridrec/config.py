"""Settings from the environment (and CLI flags, which override them)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["Settings"]


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def _optional(parse, name: str):
    """``parse(name, None)`` when the variable is set, else None."""
    return parse(name, None) if os.environ.get(name) else None


@dataclass(frozen=True)
class Settings:
    """Every setting of hybridrec, with its environment variable.

    ``redis_url=None`` means the embedded Redis under ``data_dir``.
    """

    redis_url: str | None = None  # HYBRIDREC_REDIS_URL
    model_store: str = ".hybridrec/models"  # HYBRIDREC_MODEL_STORE
    data_dir: Path = Path(".hybridrec")  # HYBRIDREC_DATA_DIR (embedded Redis lives here)
    key_prefix: str = "hybridrec"  # HYBRIDREC_KEY_PREFIX
    interaction_log_maxlen: int = 10_000_000  # HYBRIDREC_LOG_MAXLEN
    redis_timeout: float = 10.0  # HYBRIDREC_REDIS_TIMEOUT (seconds per Redis command)
    api_token: str | None = field(default=None, repr=False)  # HYBRIDREC_API_TOKEN
    max_k: int = 1000  # HYBRIDREC_MAX_K
    max_body_bytes: int = 1 << 20  # HYBRIDREC_MAX_BODY_BYTES
    reload_interval: float = 2.0  # HYBRIDREC_RELOAD_INTERVAL (seconds between registry polls)
    serve_redis_timeout: float = 0.5  # HYBRIDREC_SERVE_REDIS_TIMEOUT (a request's Redis wait)
    gate_tolerance: float = 0.02  # HYBRIDREC_GATE_TOLERANCE (relative regression allowed)
    archive: str | None = None  # HYBRIDREC_ARCHIVE (the log's Parquet archive; see archive_url)
    log_retention: str = "30d"  # HYBRIDREC_LOG_RETENTION (log entries older go to the archive)
    eval_users: int = 5000  # HYBRIDREC_EVAL_USERS (test users evaluated at most; 0: all)
    min_recall: float = 0.98  # HYBRIDREC_MIN_RECALL (an index below it is not served)
    ann_min_items: int = 50_000  # HYBRIDREC_ANN_MIN_ITEMS (catalogs served from an index)
    item_item_weight: float | None = None  # HYBRIDREC_ITEM_ITEM_WEIGHT (0: LightFM alone)
    item_item_max_items: int | None = None  # HYBRIDREC_ITEM_ITEM_MAX_ITEMS (memory cap)

    def blend_params(self) -> dict:
        """The blend settings that are set (None: the model's default), as training
        parameters (:data:`hybridrec.model.blend.BLEND_DEFAULTS` keys)."""
        out = {
            "item_item_weight": self.item_item_weight,
            "item_item_max_items": self.item_item_max_items,
        }
        return {k: v for k, v in out.items() if v is not None}

    @property
    def archive_url(self) -> str:
        """Where ``interactions archive`` writes and training reads the log's history."""
        return self.archive or str(self.data_dir / "archive")

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        """Settings from ``HYBRIDREC_*`` variables, then ``overrides`` that are not None.

        A malformed ``redis_url`` raises :class:`~hybridrec.errors.StoreUnavailable` (one
        line, the password hidden).
        """
        env = os.environ
        base = cls(
            redis_url=env.get("HYBRIDREC_REDIS_URL") or None,
            model_store=env.get("HYBRIDREC_MODEL_STORE") or cls.model_store,
            data_dir=Path(env.get("HYBRIDREC_DATA_DIR") or cls.data_dir),
            key_prefix=env.get("HYBRIDREC_KEY_PREFIX") or cls.key_prefix,
            interaction_log_maxlen=_int("HYBRIDREC_LOG_MAXLEN", cls.interaction_log_maxlen),
            redis_timeout=_float("HYBRIDREC_REDIS_TIMEOUT", cls.redis_timeout),
            api_token=env.get("HYBRIDREC_API_TOKEN") or None,
            max_k=_int("HYBRIDREC_MAX_K", cls.max_k),
            max_body_bytes=_int("HYBRIDREC_MAX_BODY_BYTES", cls.max_body_bytes),
            reload_interval=_float("HYBRIDREC_RELOAD_INTERVAL", cls.reload_interval),
            serve_redis_timeout=_float("HYBRIDREC_SERVE_REDIS_TIMEOUT", cls.serve_redis_timeout),
            gate_tolerance=_float("HYBRIDREC_GATE_TOLERANCE", cls.gate_tolerance),
            archive=env.get("HYBRIDREC_ARCHIVE") or None,
            log_retention=env.get("HYBRIDREC_LOG_RETENTION") or cls.log_retention,
            eval_users=_int("HYBRIDREC_EVAL_USERS", cls.eval_users),
            min_recall=_float("HYBRIDREC_MIN_RECALL", cls.min_recall),
            ann_min_items=_int("HYBRIDREC_ANN_MIN_ITEMS", cls.ann_min_items),
            item_item_weight=_optional(_float, "HYBRIDREC_ITEM_ITEM_WEIGHT"),
            item_item_max_items=_optional(_int, "HYBRIDREC_ITEM_ITEM_MAX_ITEMS"),
        )
        settings = replace(base, **{k: v for k, v in overrides.items() if v is not None})
        weight, cap = settings.item_item_weight, settings.item_item_max_items
        if weight is not None and not (math.isfinite(weight) and weight >= 0):
            raise ValueError(
                f"HYBRIDREC_ITEM_ITEM_WEIGHT={weight}: must be a finite number >= 0 "
                "(0 turns the item-item part off: LightFM alone)"
            )
        if cap is not None and cap < 1:
            raise ValueError(f"HYBRIDREC_ITEM_ITEM_MAX_ITEMS={cap}: must be an integer >= 1")
        if settings.redis_url is not None:  # refuse a malformed URL before any work
            from .store.connection import parse_redis_url

            parse_redis_url(settings.redis_url)
        return settings
