"""Recall of an approximate retriever, measured against exact scoring.

Every snapshot of a model version measures recall@10 of its index on a sample of the
model's own users and serves approximately only when it reaches the configured minimum
(``HYBRIDREC_MIN_RECALL``, default 0.98); the search effort ``ef`` (HNSW: expansion;
clusters: how many are scanned) is the smallest of the index's ladder that reaches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .ann import HNSW_LADDER
from .base import Query, Retriever

__all__ = ["EF_LADDER", "RecallCheck", "exact_top_k", "recall_at_k", "tune_ef"]

EF_LADDER = HNSW_LADDER


@dataclass(frozen=True)
class RecallCheck:
    """Outcome of :func:`tune_ef`: the index to serve (or None: serve exactly)."""

    index: Retriever | None
    recall: float  # recall@k of the chosen (or best tried) expansion
    ef: int
    tried: dict[int, float]
    users: int
    k: int


def exact_top_k(rows: np.ndarray, vectors: np.ndarray, k: int, chunk: int = 65536) -> np.ndarray:
    """``(m, k)`` rows of the exact top ``k`` of every vector (order within a row free),
    one chunk of items at a time so that memory stays at ``m x chunk`` scores."""
    m = len(vectors)
    best_rows = np.zeros((m, 0), dtype=np.int64)
    best_scores = np.zeros((m, 0), dtype=np.float32)
    for start in range(0, len(rows), chunk):
        scores = vectors @ np.asarray(rows[start : start + chunk]).T  # (m, chunk)
        take = min(k, scores.shape[1])
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        best_rows = np.concatenate([best_rows, part + start], axis=1)
        best_scores = np.concatenate(
            [best_scores, np.take_along_axis(scores, part, axis=1)], axis=1
        )
        if best_rows.shape[1] > k:
            keep = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
            best_rows = np.take_along_axis(best_rows, keep, axis=1)
            best_scores = np.take_along_axis(best_scores, keep, axis=1)
    return best_rows


def recall_at_k(index: Retriever, vectors: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Share of the exact top ``k`` that ``index`` returns, over all ``vectors``."""
    if len(vectors) == 0:
        return 1.0
    hits = 0
    for vector, want in zip(vectors, exact):
        got = index.search(Query(vector), k).rows
        hits += np.intersect1d(got, want).size
    return hits / float(exact.size)


def tune_ef(
    index,
    vectors: np.ndarray,
    min_recall: float,
    k: int = 10,
    ladder: Sequence[int] | None = None,
) -> RecallCheck:
    """The smallest effort of ``ladder`` (None: the index's own) whose recall@k reaches
    ``min_recall``; ``index`` is an approximate retriever with ``with_ef``."""
    ladder = index.ladder if ladder is None else ladder
    vectors = np.asarray(vectors, dtype=np.float32)
    k = min(k, index.n_rows)
    exact = exact_top_k(index.rows, vectors, k)
    tried: dict[int, float] = {}
    for ef in ladder:
        candidate = index.with_ef(ef)
        tried[ef] = recall_at_k(candidate, vectors, exact, k)
        if tried[ef] >= min_recall:
            return RecallCheck(candidate, tried[ef], ef, tried, len(vectors), k)
    best = max(tried, key=lambda e: (tried[e], -e))
    return RecallCheck(None, tried[best], best, tried, len(vectors), k)
