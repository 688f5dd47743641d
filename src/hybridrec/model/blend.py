"""The blended score: the factor model and the item-item model, each standardised per user.

Pure math; no ids, no I/O. For a user with factor vector ``u`` (``[q_u, 1, b_u]``, length
``d + 2``) and a history ``h`` (item indices the item-item model knows)::

    score(i) = (f_i - mean_f) / std_f + weight * (e_i - mean_e) / std_e

where ``f_i = u . F_i`` is the factor score (``F_i = [q_i, b_i, 1]``), ``e_i`` the item-item
score of ``h``, and the means and standard deviations are the user's over the model's
training items: the factor ones in closed form from the training items' mean and
covariance, the item-item ones from the history's weights (:meth:`ItemItem.stats`). So an
item's score never depends on which other items are scored with it: scoring a candidate
pool (two-stage serving) gives the same numbers as scoring the whole catalog.

Which parts apply (the 16 cases):

- user side: the factor part needs a user vector (an indicator, known features or a
  fold-in); the item-item part needs a history the item-item model knows (training items
  and interactions since). A user with both gets the blend; with one, that part's raw
  scores (so a new user with features gets exactly the factor model's scores); with
  neither, the caller's baseline.
- item side: an item scored from features only (new since training) or otherwise outside
  the item-item model has item-item score 0, like any known item no item of the history
  points to; an item with no factor row is unscorable, as without the blend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .hybrid import NotFittedError
from .itemitem import ItemItem, ScoreStats

__all__ = ["Blend", "Blended", "PARTS"]

PARTS = ("factors", "item_item")


@dataclass(frozen=True)
class Blended:
    """Scores of the requested items (in request order) and the parts that made them."""

    scores: np.ndarray
    parts: tuple[str, ...]


class Blend:
    """``factors z-score + weight * item-item z-score``, per user.

    ``weight`` is the item-item part's weight (0: the factor model alone). :meth:`fit`
    learns the training items' factor mean ``(d + 2,)`` and covariance
    ``(d + 2, d + 2)``, from which any user's factor score statistics follow exactly.
    """

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def fit(self, item_factors: np.ndarray) -> Blend:
        """``item_factors``: ``(n_items, d + 2)`` rows ``[q_i, b_i, 1]`` of the training
        items (the rows the statistics are taken over). Returns ``self``."""
        if not np.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"weight must be a finite number >= 0, got {self.weight}")
        F = np.asarray(item_factors, dtype=np.float64)
        if F.ndim != 2 or F.shape[0] == 0:
            raise ValueError(f"item_factors must be a non-empty (n, d + 2) matrix, got {F.shape}")
        self.factor_mean_ = F.mean(axis=0)
        centred = F - self.factor_mean_
        self.factor_cov_ = centred.T @ centred / F.shape[0]
        return self

    @classmethod
    def from_arrays(cls, weight: float, factor_mean: np.ndarray, factor_cov: np.ndarray) -> Blend:
        """A fitted blend from stored arrays (an artifact's)."""
        blend = cls(weight)
        blend.factor_mean_ = np.asarray(factor_mean, dtype=np.float64)
        blend.factor_cov_ = np.asarray(factor_cov, dtype=np.float64)
        d = blend.factor_mean_.shape[0]
        if blend.factor_cov_.shape != (d, d):
            raise ValueError(
                f"factor covariance must be ({d}, {d}) for a mean of length {d}, "
                f"got {blend.factor_cov_.shape}"
            )
        return blend

    def factor_stats(self, user_vector: np.ndarray) -> ScoreStats:
        """Mean and standard deviation of ``item_factors @ user_vector`` over the
        training items, in ``O(d^2)``."""
        if getattr(self, "factor_mean_", None) is None:
            raise NotFittedError("this blend is not fitted yet: call fit()")
        u = np.asarray(user_vector, dtype=np.float64)
        var = float(u @ self.factor_cov_ @ u)
        return ScoreStats(float(self.factor_mean_ @ u), float(np.sqrt(max(var, 0.0))))

    def parts(self, user_vector: np.ndarray | None, item_stats: ScoreStats | None) -> tuple:
        """The parts that can score this user: see the module's docstring."""
        out = []
        if user_vector is not None:
            out.append("factors")
        if self.weight > 0 and item_stats is not None and item_stats.std > 0:
            out.append("item_item")
        return tuple(out)

    def score(
        self,
        user_vector: np.ndarray | None,
        item_factors: np.ndarray,
        item_item: ItemItem | None = None,
        history: np.ndarray | None = None,
        items: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> Blended | None:
        """Blended scores of the items whose factor rows are ``item_factors``
        (``(m, d + 2)``); ``items`` are the same items' indices in the item-item model
        (``-1`` for an item it does not know; default ``arange(m)``). ``history``: the
        user's item indices in the item-item model, ``weights`` their weights (default
        1). None when no part can score the user.
        """
        F = np.asarray(item_factors, dtype=np.float64)
        has_history = item_item is not None and history is not None and len(history) > 0
        item_stats = item_item.stats(history, weights) if has_history else None
        parts = self.parts(user_vector, item_stats)
        if not parts:
            return None
        if "item_item" in parts:
            idx = np.arange(F.shape[0]) if items is None else np.asarray(items, dtype=np.int64)
            if idx.shape != (F.shape[0],):
                raise ValueError(f"items must give one index per factor row, got {idx.shape}")
            e = item_item.score_items(history, idx, weights)
        if parts == ("factors",):
            return Blended(F @ user_vector, parts)
        if parts == ("item_item",):
            return Blended(e, parts)
        f = F @ user_vector
        f_stats = self.factor_stats(user_vector)
        z_f = (f - f_stats.mean) / f_stats.std if f_stats.std > 0 else np.zeros_like(f)
        z_e = (e - item_stats.mean) / item_stats.std
        return Blended(z_f + self.weight * z_e, parts)
