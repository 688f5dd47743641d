"""Fold-in: a vector for a user outside the model, from the items they interacted with.

The user vector is the centroid of their items' latent vectors minus the centroid of all
items (Rocchio): ``q_u = mean(q_i for i in seen) - mean(q_j for all j)``. Scores are then
``q_u . q_j + b_j``, so the items' biases (what the model learned of their general
appeal) still count. On the bundled sample it beats both popularity and a least-squares
(ALS-style) fold-in; see README, "Keeping models fresh".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FoldIn"]


@dataclass(frozen=True)
class FoldIn:
    """Fold-in for one set of item factors ``(n_items, d + 2)`` in the serving layout
    ``[q_i, b_i, 1]``."""

    factors: np.ndarray  # (n_items, d + 2)
    centroid: np.ndarray  # (d,) mean latent vector of all items

    @classmethod
    def build(cls, item_factors: np.ndarray) -> FoldIn:
        centroid = item_factors[:, :-2].astype(np.float64).mean(axis=0)
        return cls(item_factors, centroid)

    def vector(self, item_indices: np.ndarray) -> np.ndarray | None:
        """``[q_u, 1, 0]`` (length d + 2, float64) for a user who interacted with the
        item rows ``item_indices``, or None when there are none."""
        idx = np.asarray(item_indices, dtype=np.int64)
        if idx.size == 0:
            return None
        out = np.empty(self.factors.shape[1], dtype=np.float64)
        out[:-2] = self.factors[idx, :-2].astype(np.float64).mean(axis=0) - self.centroid
        out[-2:] = (1.0, 0.0)
        return out
