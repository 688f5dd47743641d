"""Model math and id/feature mapping: no Redis, Flask or file I/O in this package."""

from .features import FeatureSpace, Row
from .hybrid import USER_CASES, HybridLightFM, NotFittedError, OnlinePrediction
from .idmap import IdMap

__all__ = [
    "FeatureSpace",
    "HybridLightFM",
    "IdMap",
    "NotFittedError",
    "OnlinePrediction",
    "Row",
    "USER_CASES",
]
