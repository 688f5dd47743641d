"""hybridrec: a production recommendation service built on a LightFM hybrid model."""

from .model import HybridLightFM, IdMap, OnlinePrediction

__all__ = ["HybridLightFM", "IdMap", "OnlinePrediction", "__version__"]
__version__ = "0.1.0"
