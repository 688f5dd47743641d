"""The retrieval interface: top-k item rows for one user vector, by any strategy.

Shapes: item rows are ``(n, d + 2)`` float32 ``[q_i, b_i, 1]``; a user vector is
``(d + 2,)`` float32 ``[q_u, 1, b_u]``; the score of row ``r`` is ``rows[r] @ vector``,
which equals ``LightFM.predict``. Rows are numbered ``0 .. n - 1``.

A :class:`Retriever` answers :meth:`~Retriever.search` for the rows it was built over.
Every strategy returns **exact scores** (float64 sums rounded to float32, so a row's
score does not depend on which rows were read with it), best first, ties by lower row,
never a masked row, and ``min(k, eligible rows)`` rows; an approximate strategy may miss
some of the true top k (its recall is measured, see :mod:`.recall`) and says so in
:attr:`Hits.approximate`. :class:`TwoStage` shows how a fuller score plugs in: candidates
from any retriever, re-scored by a function of the query and the candidate rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

__all__ = [
    "EMPTY_ROWS",
    "ExactScan",
    "Hits",
    "Query",
    "Retriever",
    "TwoStage",
    "exact_scores",
    "exact_top",
    "merge",
    "not_masked",
    "top_k",
]

EMPTY_ROWS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Query:
    """What a retriever is asked.

    ``vector``: ``[q_u, 1, b_u]`` float32; ``masked``: sorted unique int64 rows that must
    never be returned (deleted, replaced or excluded items); ``history``: rows the user
    interacted with (for rerankers that look at them; retrievers ignore it).
    """

    vector: np.ndarray
    masked: np.ndarray = field(default_factory=lambda: EMPTY_ROWS)
    history: np.ndarray = field(default_factory=lambda: EMPTY_ROWS)

    def with_masked(self, masked: np.ndarray) -> Query:
        return Query(self.vector, masked, self.history)


@dataclass(frozen=True)
class Hits:
    """Rows (int64) and their exact scores (float32), best first."""

    rows: np.ndarray
    scores: np.ndarray
    approximate: bool = False

    @classmethod
    def empty(cls) -> Hits:
        return cls(EMPTY_ROWS, np.zeros(0, dtype=np.float32))


class Retriever(ABC):
    """Top-k search over a fixed matrix of item rows.

    ``kind`` is ``"exact"`` (always the true top k) or ``"approximate"``.
    """

    kind: ClassVar[str] = "exact"
    name: ClassVar[str] = "exact"

    def __init__(self, rows: np.ndarray):
        self.rows = rows

    @property
    def n_rows(self) -> int:
        return int(self.rows.shape[0])

    @abstractmethod
    def search(self, query: Query, k: int) -> Hits:
        """The ``k`` best unmasked rows (fewer only when fewer are eligible)."""

    def describe(self) -> dict:
        """What ``/v1/model`` shows about this strategy."""
        return {"strategy": self.name, "kind": self.kind}


class ExactScan(Retriever):
    """Every row scored: one float32 matrix-vector product, then an exact top k."""

    def search(self, query: Query, k: int) -> Hits:
        if self.n_rows == 0 or k <= 0:
            return Hits.empty()
        scores = self.rows @ query.vector
        if query.masked.size:
            scores[query.masked] = -np.inf
        return exact_top(self.rows, top_k(scores, k), query.vector)


class TwoStage(Retriever):
    """``first`` retrieves ``candidates`` rows, ``rerank(query, rows)`` scores them
    (float array, higher is better), the best ``k`` by that score are returned.

    The factor model's own score as ``rerank`` gives ``first``'s answers; a fuller
    score (an item-item blend, say) changes the order within the candidates.
    """

    name = "two-stage"

    def __init__(
        self,
        first: Retriever,
        rerank: Callable[[Query, np.ndarray], np.ndarray],
        candidates: int = 200,
    ):
        super().__init__(first.rows)
        self.first = first
        self.rerank = rerank
        self.candidates = candidates
        self.kind = first.kind  # type: ignore[misc]

    def search(self, query: Query, k: int) -> Hits:
        found = self.first.search(query, max(k, self.candidates))
        if found.rows.size == 0:
            return found
        scores = np.asarray(self.rerank(query, found.rows), dtype=np.float32)
        order = np.lexsort((found.rows, -scores))[:k]
        return Hits(found.rows[order], scores[order], found.approximate)

    def describe(self) -> dict:
        return {**self.first.describe(), "rerank_candidates": self.candidates}


def exact_scores(rows: np.ndarray, picked: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Scores of ``rows[picked]`` summed in float64, rounded to float32."""
    if picked.size == 0:
        return np.zeros(0, dtype=np.float32)
    return (rows[picked].astype(np.float64) @ vector.astype(np.float64)).astype(np.float32)


def exact_top(rows: np.ndarray, picked: np.ndarray, vector: np.ndarray) -> Hits:
    """``picked`` rows with their exact scores, best first, ties by lower row."""
    scores = exact_scores(rows, picked, vector)
    order = np.lexsort((picked, -scores))
    return Hits(picked[order], scores[order])


def not_masked(found: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """Bool mask of the rows of ``found`` that are not in ``masked`` (sorted, non-empty)."""
    at = np.searchsorted(masked, found)
    return masked[np.minimum(at, masked.size - 1)] != found


def merge(a: Hits, b: Hits, k: int) -> Hits:
    """The best ``k`` of two disjoint hit lists, ties by lower row."""
    if b.rows.size == 0:
        return Hits(a.rows[:k], a.scores[:k], a.approximate)
    if a.rows.size == 0:
        return Hits(b.rows[:k], b.scores[:k], b.approximate)
    rows = np.concatenate([a.rows, b.rows])
    scores = np.concatenate([a.scores, b.scores])
    order = np.lexsort((rows, -scores))[:k]
    return Hits(rows[order], scores[order], a.approximate or b.approximate)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best finite scores, best first; of tied scores the lower
    positions come first and are the ones kept at the k-th place.

    Exact. For long score vectors, the k-th best of a strided sample is a lower bound of
    the k-th best overall (the sample's k best are among all scores), so only the scores
    at or above it can be in the top k: one comparison pass leaves a few hundred
    candidates for ``argpartition``, which is several times faster than partitioning
    100k scores.
    """
    n = scores.shape[0]
    if n == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k >= n:
        part = np.arange(n)
    else:
        sample_size = max(n // 64, 8 * k)
        if n >= 4 * sample_size:
            sample = scores[:: n // sample_size]
            bound = np.partition(sample, sample.shape[0] - k)[sample.shape[0] - k]
            candidates = np.flatnonzero(scores >= bound)
        else:
            candidates = np.arange(n)
        if candidates.shape[0] > k:
            # candidates are in position order: of the scores tied with the k-th best,
            # the first ones are kept (argpartition would pick any of them)
            values = scores[candidates]
            kth = np.partition(values, values.shape[0] - k)[values.shape[0] - k]
            above = candidates[values > kth]
            part = np.concatenate([above, candidates[values == kth][: k - above.shape[0]]])
        else:
            part = candidates
    part = part[np.isfinite(scores[part])]
    order = np.lexsort((part, -scores[part]))
    return part[order].astype(np.int64, copy=False)
