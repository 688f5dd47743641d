"""Model math and id/feature mapping: no Redis, Flask or file I/O in this package."""

from .features import FeatureSpace, Row
from .hybrid import USER_CASES, HybridLightFM, NotFittedError, OnlinePrediction
from .idmap import IdMap
from .itemitem import ItemItem, ScoreStats

__all__ = [
    "FeatureSpace",
    "HybridLightFM",
    "IdMap",
    "ItemItem",
    "NotFittedError",
    "OnlinePrediction",
    "Row",
    "ScoreStats",
    "USER_CASES",
]
