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

__all__ = ["FoldIn", "fold_in_vector", "latent_centroid"]


def latent_centroid(item_factors: np.ndarray) -> np.ndarray:
    """Mean latent vector ``(d,)`` (float64) of item factor rows ``[q_i, b_i, 1]``."""
    return item_factors[:, :-2].astype(np.float64).mean(axis=0)


def fold_in_vector(item_rows: np.ndarray, centroid: np.ndarray) -> np.ndarray | None:
    """``[q_u, 1, 0]`` (length d + 2, float64) from the factor rows ``(m, d + 2)`` of the
    items a user interacted with, or None when ``m == 0``."""
    if len(item_rows) == 0:
        return None
    out = np.empty(item_rows.shape[1], dtype=np.float64)
    out[:-2] = item_rows[:, :-2].astype(np.float64).mean(axis=0) - centroid
    out[-2:] = (1.0, 0.0)
    return out


@dataclass(frozen=True)
class FoldIn:
    """Fold-in for one set of item factors ``(n_items, d + 2)`` in the serving layout
    ``[q_i, b_i, 1]``."""

    factors: np.ndarray  # (n_items, d + 2)
    centroid: np.ndarray  # (d,) mean latent vector of all items

    @classmethod
    def build(cls, item_factors: np.ndarray) -> FoldIn:
        return cls(item_factors, latent_centroid(item_factors))

    def vector(self, item_indices: np.ndarray) -> np.ndarray | None:
        """``[q_u, 1, 0]`` for a user who interacted with the rows ``item_indices``."""
        return fold_in_vector(self.factors[np.asarray(item_indices, dtype=np.int64)], self.centroid)
