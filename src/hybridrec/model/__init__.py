"""Model math and id/feature mapping: no Redis, Flask or file I/O in this package."""

from .blend import PARTS, Blend, Blended
from .features import FeatureSpace, Row
from .hybrid import USER_CASES, HybridLightFM, NotFittedError, OnlinePrediction
from .idmap import IdMap
from .itemitem import ItemItem, ScoreStats

__all__ = [
    "Blend",
    "Blended",
    "FeatureSpace",
    "HybridLightFM",
    "IdMap",
    "ItemItem",
    "NotFittedError",
    "OnlinePrediction",
    "PARTS",
    "Row",
    "ScoreStats",
    "USER_CASES",
]
