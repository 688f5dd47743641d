"""Retrieval strategies: which item rows score best for a user vector.

One interface (:class:`Retriever`: ``search(query, k) -> Hits``) and its strategies:

- :class:`ExactScan`: every row scored (one BLAS product);
- :class:`BoundedScan`: exact, reads a 10-float summary per item and scores in full
  only the rows whose upper bound can reach the top k;
- :class:`ClusterIndex`: k-means clusters (an inverted file) over a MIPS reduction of
  the rows, the query's nearest clusters scanned exactly; its recall is measured
  (:func:`tune_ef`); the default approximate strategy;
- :class:`AnnIndex`: an HNSW graph (usearch) over the same reduction, candidates
  re-scored exactly; its recall is measured too;
- :class:`TwoStage`: candidates from any of them, re-scored by a fuller function.

Pure numpy (and usearch): no Redis or Flask here; :mod:`.files` reads and writes the
serving files saved beside an artifact.
"""

from .ann import AnnIndex, ann_available
from .base import ExactScan, Hits, Query, Retriever, TwoStage, exact_scores, merge, top_k
from .bounded import BoundedScan
from .files import DEFAULT_LIBRARY, ServingFiles, load_or_build
from .ivf import ClusterIndex
from .recall import EF_LADDER, RecallCheck, exact_top_k, recall_at_k, tune_ef

__all__ = [
    "DEFAULT_LIBRARY",
    "EF_LADDER",
    "AnnIndex",
    "BoundedScan",
    "ClusterIndex",
    "ExactScan",
    "Hits",
    "Query",
    "RecallCheck",
    "Retriever",
    "ServingFiles",
    "TwoStage",
    "ann_available",
    "exact_scores",
    "exact_top_k",
    "load_or_build",
    "merge",
    "recall_at_k",
    "top_k",
    "tune_ef",
]
