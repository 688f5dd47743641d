"""Approximate top k: an HNSW graph (usearch) over the item rows, as a correct MIPS.

The score ``q_u . q_i + b_i + b_u`` is an inner product of ``x_i = [q_i, b_i]`` with
``y = [q_u, 1]`` plus a constant per user. HNSW needs a metric, so the standard
reduction (Bachrach et al., 2014) is indexed: items become
``[x_i, sqrt(M^2 - |x_i|^2)]`` with ``M = max |x_i|`` (all on a sphere of radius ``M``)
and a query ``[y, 0]``; then ``|item - query|^2 = M^2 + |y|^2 - 2 x_i . y``, so the
nearest item in squared L2 is the one with the best score, bias and all. Vectors stay
float32 in the graph: int8 or float16 quantization lost recall on item vectors sharing a
dominant direction (as trained embeddings do) unless many more candidates are re-scored.

usearch was chosen over hnswlib and faiss-cpu by ``benchmarks/bench_ann.py`` (README,
"Serving performance"): similar recall and latency, and it alone searches a saved index
**memory-mapped** (``view``), so N workers share one copy in the page cache.

Exclusions are filtered after the search with over-fetching: ask for ``k`` plus the
masked rows (at most ``4 k`` extra), drop masked rows, and ask again for four times as
many while fewer than ``k`` remain; candidates are re-scored exactly. When the graph
cannot yield ``min(k, eligible)`` rows, the answer comes from an exact scan: never a
masked row, never fewer rows than exact scoring would give.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import ExactScan, Hits, Query, Retriever, exact_top, not_masked

__all__ = ["HNSW_LADDER", "AnnIndex", "ann_available", "reduce_items", "reduce_query"]

CONNECTIVITY = 16
EXPANSION_ADD = 128
DEFAULT_EF = 128
HNSW_LADDER = (64, 128, 256, 512, 1024)  # search expansions tried by the recall check
_MAX_FETCH = 4096  # beyond this many candidates an exact scan is the better answer

INSTALL_HINT = "approximate retrieval needs usearch: pip install usearch"


def ann_available() -> bool:
    try:
        import usearch.index  # noqa: F401
    except ImportError:
        return False
    return True


def reduce_items(rows: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, float]:
    """``(reduced (n, d + 2) float32, M)`` from item rows ``[q_i, b_i, 1]``."""
    n, width = rows.shape
    sq = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk):
        x = np.asarray(rows[start : start + chunk, :-1], dtype=np.float64)
        sq[start : start + chunk] = np.einsum("ij,ij->i", x, x)
    top = float(sq.max()) if n else 0.0
    out = np.empty((n, width), dtype=np.float32)
    out[:, :-1] = rows[:, :-1]
    out[:, -1] = np.sqrt(np.maximum(top - sq, 0.0))
    return out, float(np.sqrt(top))


def reduce_query(vector: np.ndarray) -> np.ndarray:
    """``[q_u, 1, 0]`` from a user vector ``[q_u, 1, b_u]``."""
    q = np.array(vector, dtype=np.float32)
    q[-2], q[-1] = 1.0, 0.0
    return q


class AnnIndex(Retriever):
    """HNSW search over ``rows``; candidates re-scored exactly.

    Build with :meth:`build` (in memory) or :meth:`load` (a saved index, mapped).
    ``ef`` is the search expansion (higher: better recall, slower).
    """

    kind = "approximate"
    name = "hnsw"
    ladder = HNSW_LADDER

    def __init__(self, rows: np.ndarray, index, ef: int = DEFAULT_EF, max_norm: float = 0.0):
        super().__init__(rows)
        self.index = index
        self.max_norm = max_norm
        self.ef = ef
        self._exact = ExactScan(rows)

    @classmethod
    def build(
        cls,
        rows: np.ndarray,
        *,
        connectivity: int = CONNECTIVITY,
        expansion_add: int = EXPANSION_ADD,
        threads: int = 0,
        ef: int = DEFAULT_EF,
    ) -> AnnIndex:
        """Index ``rows`` in memory (``threads=0``: all cores)."""
        from usearch.index import Index

        reduced, max_norm = reduce_items(rows)
        index = Index(
            ndim=reduced.shape[1],
            metric="l2sq",
            dtype="f32",
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=ef,
        )
        if len(reduced):
            index.add(np.arange(len(reduced), dtype=np.uint64), reduced, threads=threads)
        return cls(rows, index, ef, max_norm)

    def save(self, path: str | os.PathLike) -> None:
        self.index.save(os.fspath(path))

    @classmethod
    def load(cls, rows: np.ndarray, path: str | os.PathLike, *, ef: int = DEFAULT_EF) -> AnnIndex:
        """A saved index, memory-mapped read-only (shared between processes)."""
        try:
            from usearch.index import Index
        except ImportError:
            raise ImportError(INSTALL_HINT) from None
        index = Index.restore(os.fspath(Path(path)), view=True)
        if index is None or index.size != len(rows):
            size = getattr(index, "size", 0)
            raise ValueError(f"{path}: index holds {size} rows, not {len(rows)}")
        index.expansion_search = ef
        return cls(rows, index, ef)

    def with_ef(self, ef: int) -> AnnIndex:
        """The same graph searched with another expansion."""
        return AnnIndex(self.rows, self.index, ef, self.max_norm)

    def describe(self) -> dict:
        return {**super().describe(), "library": "usearch", "ef": self.ef}

    def search(self, query: Query, k: int) -> Hits:
        n = self.n_rows
        masked = query.masked
        want = min(k, n - int(masked.size))
        if want <= 0:
            return Hits.empty()
        q = reduce_query(query.vector)
        fetch = min(n, k + min(int(masked.size), 4 * k))
        while True:
            self.index.expansion_search = max(self.ef, fetch)
            found = np.asarray(self.index.search(q, fetch, threads=1).keys, dtype=np.int64)
            if masked.size:
                found = found[not_masked(found, masked)]
            if found.size >= want:
                top = exact_top(self.rows, found, query.vector)
                return Hits(top.rows[:k], top.scores[:k], approximate=True)
            if fetch >= n or fetch >= _MAX_FETCH:
                return self._exact.search(query, k)
            fetch = min(n, 4 * fetch)
