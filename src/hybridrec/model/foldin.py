"""Fold-in: a vector for a user outside the model, from the items they interacted with.

With item factors ``Q`` (``(n_items, d)``, biases apart), the user vector that best
reproduces "1 for their items, 0 elsewhere" in the least-squares sense is
``q_u = (Q^T Q + reg * I)^-1 Q^T y`` (the fold-in step of implicit ALS). The ``d x d``
inverse is computed once per model; each user then costs one sum and one small product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FoldIn"]


@dataclass(frozen=True)
class FoldIn:
    """Precomputed fold-in for one set of item factors ``(n_items, d + 2)`` (serving layout
    ``[q_i, b_i, 1]``)."""

    projection: np.ndarray  # (d, d) = (Q^T Q + reg I)^-1
    factors: np.ndarray  # (n_items, d + 2)

    @classmethod
    def build(cls, item_factors: np.ndarray, reg: float = 1.0) -> FoldIn:
        q = item_factors[:, :-2].astype(np.float64)
        gram = q.T @ q + reg * np.eye(q.shape[1])
        return cls(np.linalg.inv(gram), item_factors)

    def vector(self, item_indices: np.ndarray) -> np.ndarray | None:
        """``[q_u, 1, 0]`` (length d + 2, float64) for a user who interacted with
        ``item_indices``, or None when there are none."""
        if len(item_indices) == 0:
            return None
        s = self.factors[np.asarray(item_indices), :-2].astype(np.float64).sum(axis=0)
        out = np.empty(self.factors.shape[1], dtype=np.float64)
        out[:-2] = self.projection @ s
        out[-2:] = (1.0, 0.0)
        return out
