"""The blended score: the factor model, the item-item model and popularity, each
standardised per user.

Pure math; no ids, no I/O. For a user with factor vector ``u`` (``[q_u, 1, b_u]``, length
``d + 2``) and a history ``h`` (item indices the item-item model knows, optionally
weighted, e.g. by recency)::

    score(i) = (f_i - mean_f) / std_f + weight * (e_i - mean_e) / std_e

where ``f_i = u . F_i`` is the factor score (``F_i = [q_i, b_i, 1]``) and ``e_i`` the
item-item score of ``h``. A user with a factor vector but no history gets instead::

    score(i) = (f_i - mean_f) / std_f + popularity_weight * (p_i - mean_p) / std_p

with ``p_i`` the item's popularity quantile in training (for an item not in training,
the training items' mean quantile: popularity says nothing about it, z-score 0). The
means and standard deviations are the user's over the model's training items: the factor
ones in closed form from the training items' mean and covariance, the item-item ones from
the history's weights (:meth:`ItemItem.stats`), the popularity ones fixed at fit time. So
an item's score never depends on which other items are scored with it: scoring a
candidate pool (two-stage serving) gives the same numbers as scoring the whole catalog.

Which parts apply (the 16 cases):

- user side: the factor part needs a user vector (an indicator, known features or a
  fold-in); the item-item part needs a history the item-item model knows (training items
  and interactions since); popularity stands in for the item-item part of a user without
  a history (a new user with features). A user with neither a vector nor a history gets
  the caller's baseline (popularity). A user with a history and no vector gets the
  item-item scores alone.
- item side: an item scored from features only (new since training) or otherwise outside
  the item-item model has item-item score 0, like any known item no item of the history
  points to, and the mean popularity quantile (z-score 0); an item with no factor row is
  unscorable, as without the blend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

from .hybrid import NotFittedError
from .itemitem import ItemItem, ScoreStats

__all__ = [
    "BLEND_DEFAULTS",
    "Blend",
    "Blended",
    "PARTS",
    "UserBlend",
    "check_blend_params",
    "fit_blend",
]

PARTS = ("factors", "item_item", "popularity")

BLEND_DEFAULTS: dict = {
    "item_item_weight": 0.5,  # 0: no blend at all, the factor model alone (as before)
    "popularity_weight": 1.0,  # users with a vector and no history; 0: factors alone
    "item_item_l2": 500.0,  # EASE's ridge
    "item_item_neighbors": 200,  # weights kept per item
    "item_item_max_items": 10_000,  # items covered (the most interacted): the memory cap
}
"""The blend's hyperparameters and their defaults, training parameters beside LightFM's.
``item_item_l2`` and ``item_item_weight`` were chosen on validation splits only, by warm
NDCG@10 as the peers are (``benchmarks/quality_peers.py --choose-defaults``)."""


def check_blend_params(params) -> dict:
    """``params``' blend keys (others ignored) over :data:`BLEND_DEFAULTS`, checked;
    raises ValueError naming the key, the value and what is allowed."""
    out = dict(BLEND_DEFAULTS)
    for key in BLEND_DEFAULTS:
        if key not in params or params[key] is None:
            continue
        value = params[key]
        integer = key in ("item_item_neighbors", "item_item_max_items")
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and integer:
            ok = float(value).is_integer() and value >= 1
            value = int(value) if ok else value
        elif ok:
            value = float(value)
            ok = np.isfinite(value) and (value > 0 if key == "item_item_l2" else value >= 0)
        if not ok:
            want = (
                "an integer >= 1"
                if integer
                else "a finite number > 0"
                if key == "item_item_l2"
                else "a finite number >= 0 (0 turns the part off)"
            )
            raise ValueError(f"{key} must be {want}, got {params[key]!r}")
        out[key] = value
    return out


def fit_blend(model, params=None) -> tuple[Blend | None, ItemItem | None]:
    """The blend of a fitted :class:`~hybridrec.model.HybridLightFM` (its training items'
    factor rows, popularity and interactions) with ``params`` (:data:`BLEND_DEFAULTS`
    keys); ``(None, None)`` when ``item_item_weight`` is 0 (the factor model alone)."""
    p = check_blend_params(params or {})
    if p["item_item_weight"] == 0:
        return None, None
    X = model.interactions_
    item_item = ItemItem(p["item_item_l2"], p["item_item_neighbors"], p["item_item_max_items"]).fit(
        X
    )
    counts = np.diff(sp.csc_matrix(X).indptr).astype(np.float64)  # users per item
    blend = Blend(p["item_item_weight"], p["popularity_weight"]).fit(
        model.item_factors(), popularity=counts
    )
    return blend, item_item


@dataclass(frozen=True)
class Blended:
    """Scores of the requested items (in request order) and the parts that made them."""

    scores: np.ndarray
    parts: tuple[str, ...]


def _z(x: np.ndarray, stats: ScoreStats) -> np.ndarray:
    return (x - stats.mean) / stats.std if stats.std > 0 else np.zeros_like(x)


class Blend:
    """``factors z-score + weight * item-item z-score`` per user, or ``+
    popularity_weight * popularity z-score`` for a user without history.

    ``weight`` and ``popularity_weight`` are >= 0 (0 turns a part off). :meth:`fit`
    learns the training items' factor mean ``factor_mean_`` ``(d + 2,)`` and covariance
    ``factor_cov_`` ``(d + 2, d + 2)``, from which any user's factor score statistics
    follow exactly, and the items' popularity quantiles ``popularity_`` ``(n_items,)``.
    """

    def __init__(self, weight: float = 1.0, popularity_weight: float = 1.0):
        self.weight = weight
        self.popularity_weight = popularity_weight

    def _check_params(self) -> None:
        for name in ("weight", "popularity_weight"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")

    def fit(self, item_factors: np.ndarray, popularity: np.ndarray | None = None) -> Blend:
        """``item_factors``: ``(n_items, d + 2)`` rows ``[q_i, b_i, 1]`` of the training
        items (the rows the statistics are taken over); ``popularity``: their
        ``(n_items,)`` interaction counts (None: no popularity part). Returns ``self``."""
        self._check_params()
        F = np.asarray(item_factors, dtype=np.float64)
        if F.ndim != 2 or F.shape[0] == 0:
            raise ValueError(f"item_factors must be a non-empty (n, d + 2) matrix, got {F.shape}")
        self.factor_mean_ = F.mean(axis=0)
        centred = F - self.factor_mean_
        self.factor_cov_ = centred.T @ centred / F.shape[0]
        if popularity is None:
            self.popularity_ = None
        else:
            pop = np.asarray(popularity, dtype=np.float64).ravel()
            if pop.shape != (F.shape[0],):
                raise ValueError(f"popularity must have one count per item, got {pop.shape}")
            n = pop.size
            self.popularity_ = (rankdata(pop) - 1.0) / max(n - 1, 1)  # quantiles in [0, 1]
        return self

    @classmethod
    def from_arrays(
        cls,
        factor_mean: np.ndarray,
        factor_cov: np.ndarray,
        popularity: np.ndarray | None = None,
        **params,
    ) -> Blend:
        """A fitted blend from stored arrays (an artifact's): ``factor_mean_``,
        ``factor_cov_`` and ``popularity_`` (quantiles, or None)."""
        blend = cls(**params)
        blend._check_params()
        blend.factor_mean_ = np.asarray(factor_mean, dtype=np.float64)
        blend.factor_cov_ = np.asarray(factor_cov, dtype=np.float64)
        d = blend.factor_mean_.shape[0]
        if blend.factor_cov_.shape != (d, d):
            raise ValueError(
                f"factor covariance must be ({d}, {d}) for a mean of length {d}, "
                f"got {blend.factor_cov_.shape}"
            )
        blend.popularity_ = None if popularity is None else np.asarray(popularity, np.float64)
        return blend

    def factor_stats(self, user_vector: np.ndarray) -> ScoreStats:
        """Mean and standard deviation of ``item_factors @ user_vector`` over the
        training items, in ``O(d^2)``."""
        if getattr(self, "factor_mean_", None) is None:
            raise NotFittedError("this blend is not fitted yet: call fit()")
        u = np.asarray(user_vector, dtype=np.float64)
        var = float(u @ self.factor_cov_ @ u)
        return ScoreStats(float(self.factor_mean_ @ u), float(np.sqrt(max(var, 0.0))))

    def popularity_order(self) -> np.ndarray:
        """Training indices by popularity quantile, most popular first (computed once)."""
        order = getattr(self, "_popularity_order", None)
        if order is None:  # a benign race: two threads compute the same array
            order = np.argsort(-self.popularity_, kind="stable")
            self._popularity_order = order
        return order

    def popularity_stats(self) -> ScoreStats:
        """Mean and standard deviation of the popularity quantiles of the training items."""
        p = self.popularity_
        return ScoreStats(float(p.mean()), float(p.std())) if p is not None else ScoreStats(0, 0)

    def parts(self, user_vector: np.ndarray | None, item_stats: ScoreStats | None) -> tuple:
        """The parts that score this user (see the module's docstring); ``item_stats``:
        the user's item-item statistics, None without a history."""
        out = []
        if user_vector is not None:
            out.append("factors")
        if self.weight > 0 and item_stats is not None and item_stats.std > 0:
            out.append("item_item")
        elif out and self.popularity_weight > 0 and getattr(self, "popularity_", None) is not None:
            out.append("popularity")
        return tuple(out)

    def for_user(
        self,
        user_vector: np.ndarray | None,
        item_item: ItemItem | None = None,
        history: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> UserBlend | None:
        """What scores one user (their parts, statistics and item-item scores), read
        once and then applied to any set of items; None when no part can score the
        user (the caller's baseline). ``history``, ``weights`` as in :meth:`score`."""
        head, item_stats = None, None
        if self.weight > 0 and item_item is not None and history is not None and len(history):
            head = item_item._head_scores(history, weights)
            item_stats = item_item._stats(head)
        parts = self.parts(user_vector, item_stats)
        if not parts:
            return None
        u = None if user_vector is None else np.asarray(user_vector, dtype=np.float64)
        f_stats = self.factor_stats(u) if u is not None and len(parts) > 1 else None
        return UserBlend(self, parts, u, f_stats, item_item, head, item_stats)

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
        (``(m, d + 2)``); ``items`` are the same items' training indices (``-1`` for an
        item not in training; default ``arange(m)``). ``history``: the user's item
        indices in the item-item model, ``weights`` their weights (default 1). None when
        no part can score the user (the caller's baseline).
        """
        F = np.asarray(item_factors, dtype=np.float64)
        idx = np.arange(F.shape[0]) if items is None else np.asarray(items, dtype=np.int64)
        if idx.shape != (F.shape[0],):
            raise ValueError(f"items must give one index per factor row, got {idx.shape}")
        user = self.for_user(user_vector, item_item, history, weights)
        if user is None:
            return None
        return Blended(user.score(F, idx), user.parts)


@dataclass(frozen=True)
class UserBlend:
    """One user's blend (:meth:`Blend.for_user`): scores any items in the same units,
    so a candidate pool scores as the whole catalog does.

    Serving uses :meth:`best_other` and :meth:`outside` for an exact top k without
    scoring the catalog: an item outside the factor model's best and the second part's
    best scores at most :meth:`outside` of the two lists' bounds.
    """

    blend: Blend
    parts: tuple[str, ...]
    vector: np.ndarray | None  # [q_u, 1, b_u], float64
    factor_stats: ScoreStats | None  # None: a single part, scores unstandardised
    item_item: ItemItem | None
    head: np.ndarray | None  # (m,) item-item scores of the covered items
    item_stats: ScoreStats | None

    def factor_scores(self, item_factors: np.ndarray) -> np.ndarray:
        return np.asarray(item_factors, dtype=np.float64) @ self.vector

    def score(self, item_factors: np.ndarray, items: np.ndarray, f=None) -> np.ndarray:
        """``(len(items),)`` float64 scores of the items with factor rows
        ``item_factors`` and training indices ``items`` (-1: not in training);
        ``f``: their factor scores when already known."""
        idx = np.asarray(items, dtype=np.int64)
        if self.parts == ("item_item",):
            return self.item_item._at(self.head, idx)
        if f is None:
            f = self.factor_scores(item_factors)
        if self.parts == ("factors",):
            return f
        z = _z(f, self.factor_stats)
        if "item_item" in self.parts:
            return z + self.blend.weight * _z(self.item_item._at(self.head, idx), self.item_stats)
        return z + self.blend.popularity_weight * _z(
            self.popularity(idx), self.blend.popularity_stats()
        )

    def popularity(self, items: np.ndarray) -> np.ndarray:
        """Popularity quantiles of training indices ``items``; outside training (-1)
        the training items' mean: z-score 0, neither pushed up nor down."""
        pop = self.blend.popularity_
        idx = np.asarray(items, dtype=np.int64)
        known = (idx >= 0) & (idx < pop.size)
        return np.where(known, pop[np.where(known, idx, 0)], self.blend.popularity_stats().mean)

    def best_other(self, c: int, masked: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """The second part's ``c`` best items and a bound for the rest: ``(training
        indices, value)`` where every item left out has an item-item score (or, in
        popularity mode, a quantile) at most ``value``. ``masked``: training indices
        never to return (e.g. the items a user has seen)."""
        if "item_item" in self.parts:
            ii = self.item_item
            head = self.head.copy()
            if masked is not None and masked.size:
                at = ii._position[masked[(masked >= 0) & (masked < ii.n_items_)]]
                head[at[at >= 0]] = -np.inf
            if c < head.size:
                part = np.argpartition(-head, c)
                pick, rest = part[:c], float(head[part[c]])  # rest: the best left out
            else:
                pick, rest = np.arange(head.size), -np.inf
            pick = pick[np.isfinite(head[pick])]
            return ii.items_[pick], max(rest, 0.0)  # items outside the model score 0
        if "popularity" in self.parts:
            order = self.blend.popularity_order()
            rest = float(self.blend.popularity_[order[c]]) if c < order.size else -np.inf
            return order[:c], max(rest, self.blend.popularity_stats().mean)  # new items
        return np.zeros(0, dtype=np.int64), 0.0

    def outside(self, f: float, other: float = 0.0) -> float:
        """The blended score of an item with factor score ``f`` and item-item score (or,
        in popularity mode, quantile) ``other``: an upper bound for every item with at
        most these two."""
        if self.parts == ("item_item",):
            return float(other)
        if self.parts == ("factors",):
            return float(f)
        z = float(_z(np.asarray([f]), self.factor_stats)[0])
        if "item_item" in self.parts:
            return z + self.blend.weight * float(_z(np.asarray([other]), self.item_stats)[0])
        pz = float(_z(np.asarray([other]), self.blend.popularity_stats())[0])
        return z + self.blend.popularity_weight * pz
