"""The blend at serving time: an exact top k of the blended score without scoring the
catalog.

A model with a blend (:mod:`hybridrec.model.blend`) scores a user with a history as
``z(factor score) + weight * z(item-item score)`` and a user without one as
``z(factor score) + popularity_weight * z(popularity)``. Scoring every item that way
would cost a pass over the catalog per request; instead (a threshold algorithm in the
manner of Fagin's):

1. the snapshot's retriever (exact, bounded or HNSW) gives the ``C`` items with the best
   factor scores (``C`` = :data:`CANDIDATES`, at least ``k``);
2. beside them, the ``C`` items with the best item-item scores for the user's history
   (computed over the ``max_items`` items the item-item part covers: at most
   ``len(history) * max_neighbors`` weights summed) or, for a user without a history,
   the ``C`` most popular items; items the user has seen are left out of both;
3. the union (at most ``2 C`` items) is scored in full and its best ``k`` kept.

Every other item has a factor score at most the ``C``-th's and a second score at most
the ``C``-th's, so its blended score is at most :meth:`UserBlend.outside` of those two:
when the ``k``-th best candidate reaches that bound the answer is the exact top k of
the whole catalog (as exact as the retriever); when not, ``C`` grows fourfold and the
search runs again, up to the whole catalog. The cost is therefore independent of the
catalog's size beyond the retriever's: ``O(len(history) * max_neighbors + max_items)``
for the item-item scores, ``O(C d)`` for the rest.

Pure numpy over a :class:`~hybridrec.serving.snapshot.Snapshot`; no Redis or Flask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..model.blend import UserBlend
from .retrieval import Hits, top_k

if TYPE_CHECKING:
    from .snapshot import Snapshot

__all__ = ["CANDIDATES", "for_user", "blended_search", "blended_scores"]

CANDIDATES = 50  # candidates of each part per request before the bound is checked


def for_user(snap: Snapshot, vector: np.ndarray | None, history: Iterable[str]) -> UserBlend | None:
    """The user's blend, or None when the snapshot's model has no blend or only its
    factor part applies (then the snapshot answers as the factor model alone).
    ``history``: item ids; those the snapshot cannot score (deleted) are left out."""
    model = snap.model
    blend = getattr(model, "blend_", None)
    if blend is None:
        return None
    idx = _model_items(snap, snap._rows_of(history))
    user = blend.for_user(vector, getattr(model, "item_item_", None), idx[idx >= 0])
    if user is None or user.parts == ("factors",):
        return None
    return user


def _isin_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_set)`` for a sorted ``sorted_set``, by binary search."""
    if sorted_set.size == 0:
        return np.zeros(values.size, dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), sorted_set.size - 1)
    return sorted_set[at] == values


def _model_items(snap: Snapshot, rows: np.ndarray) -> np.ndarray:
    """Training indices of snapshot ``rows`` (-1 for an item the model never saw)."""
    n_base = snap._table.n_base
    out = rows.astype(np.int64, copy=True)
    extra = np.flatnonzero(rows >= n_base)
    if extra.size:
        known = snap.model.item_space_.entities
        for j in extra.tolist():
            idx = known.get(snap._table.id_of(int(rows[j])))
            out[j] = -1 if idx is None else idx
    return out


def _live_rows(snap: Snapshot, items: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """Current rows of the unique training indices ``items`` (an item changed since
    training has moved to an appended row; a deleted one is dropped), without the
    ``excluded`` rows (sorted)."""
    rows = np.asarray(items, dtype=np.int64)
    if snap._dead.size and rows.size:
        moved = _isin_sorted(rows, snap._dead)
        if moved.any():
            ids = snap.model.item_space_.entities.convert_to_external(rows[moved])
            now = [snap._row(i) for i in ids]
            rows = rows.copy()
            rows[moved] = [-1 if r is None else r for r in now]
            rows = rows[rows >= 0]
    return rows[~_isin_sorted(rows, excluded)]


def _score(snap: Snapshot, user: UserBlend, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blended and factor scores (float64) of snapshot ``rows``."""
    vectors = snap._table.vectors(rows)
    f = user.factor_scores(vectors)
    return user.score(vectors, _model_items(snap, rows), f=f), f


def blended_scores(snap: Snapshot, user: UserBlend, rows: Sequence[int]) -> np.ndarray:
    """float32 blended scores of snapshot ``rows`` (an ``items`` request)."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return np.zeros(0, dtype=np.float32)
    return _score(snap, user, rows)[0].astype(np.float32)


def blended_search(
    snap: Snapshot, user: UserBlend, k: int, excluded: np.ndarray, exact: bool
) -> Hits:
    """The exact top ``k`` live rows by blended score, none in ``excluded`` (int64
    rows); see the module docstring."""
    excluded = np.unique(excluded)
    masked = _model_items(snap, excluded)
    n_live = snap.n_items
    c = max(k, CANDIDATES)
    vector = user.vector.astype(np.float32)
    while True:
        found = snap.search(vector, c, excluded, exact)
        best_items, other = user.best_other(c, masked)
        more = _live_rows(snap, np.sort(best_items), excluded)
        first = np.sort(found.rows)
        cand = np.concatenate([first, more[~_isin_sorted(more, first)]])
        scores, f = _score(snap, user, cand)
        best = top_k(scores, k)
        exhausted = found.rows.size < c  # every live row was a factor candidate
        if exhausted or best.size == 0:
            break
        f_min = float(f[: first.size].min())
        if best.size == k and scores[best[-1]] >= user.outside(f_min, other):
            break
        if c >= n_live:
            break
        c = min(4 * c, n_live)
    return Hits(cand[best], scores[best].astype(np.float32), found.approximate)
