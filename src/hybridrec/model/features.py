"""Feature rows for one side (users or items) of the hybrid model.

A side's feature matrix has ``n_columns = n_indicators + n_vocabulary`` columns:
first one indicator column per entity seen in training (when indicators are on), then
one column per feature name in the vocabulary. Training and serving build rows with
the same :meth:`FeatureSpace.row`, so they cannot disagree.

Normalisation (``normalize=True``), with ``a = feature_weight``:

- indicators on: the indicator weighs 1 and the features together weigh ``a`` (each in
  proportion to its raw weight). An entity without an indicator (not seen in training)
  gets the same feature part and nothing else: it is represented by exactly what the
  model knows of it, on the same scale as the feature part of a warm entity. Keeping that
  scale is what stops cold items, scored from features alone, from crowding out warm
  ones; and a side without features is plain collaborative LightFM (measured: README,
  "Quality of the defaults").
- indicators off: the features sum to 1.
- ``feature_weight=None``: the raw weights next to an indicator of 1, the whole row
  scaled to sum to 1; this is ``lightfm.data.Dataset``'s normalisation (the "naive
  hybrid", where many features drown the indicator).
- ``normalize=False``: the indicator weighs 1, features keep their raw weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import chain
from operator import methodcaller

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .idmap import IdMap

__all__ = ["FeatureSpace", "Row", "Features", "Flat", "feature_names", "flatten"]

Features = Mapping[str, float]


@dataclass(frozen=True)
class Row:
    """One sparse feature row: column ``indices`` (int32) with ``values`` (float32)."""

    indices: np.ndarray
    values: np.ndarray
    has_indicator: bool
    n_known_features: int
    n_unknown_features: int

    @property
    def empty(self) -> bool:
        return self.indices.size == 0


@dataclass(frozen=True)
class FeatureSpace:
    """Column layout and row construction for one side of the model."""

    entities: IdMap
    vocabulary: IdMap
    use_indicators: bool
    feature_weight: float | None = 1.0
    normalize: bool = True

    @property
    def n_indicators(self) -> int:
        return len(self.entities) if self.use_indicators else 0

    @property
    def n_columns(self) -> int:
        return self.n_indicators + len(self.vocabulary)

    def row(self, entity_id: str | None, features: Features | None) -> Row:
        """The feature row for an entity (known or not) with optional ``features``.

        Feature names outside the vocabulary are ignored and counted in
        ``n_unknown_features``; non-positive weights are ignored.
        """
        indices: list[int] = []
        values: list[float] = []
        has_indicator = False
        if self.use_indicators and entity_id is not None:
            internal = self.entities.get(entity_id)
            if internal is not None:
                indices.append(internal)
                values.append(1.0)
                has_indicator = True
        n_unknown = 0
        f_idx: list[int] = []
        f_val: list[float] = []
        if features:
            offset = self.n_indicators
            vocab = self.vocabulary
            for name, weight in features.items():
                col = vocab.get(name)
                if col is None:
                    n_unknown += 1
                    continue
                w = float(weight)
                if w > 0.0:
                    f_idx.append(offset + col)
                    f_val.append(w)
        if f_val and self.normalize and self.feature_weight is not None:
            share = self.feature_weight if self.use_indicators else 1.0
            total = sum(f_val)
            f_val = [v * share / total for v in f_val]
        indices.extend(f_idx)
        values.extend(f_val)
        vals = np.asarray(values, dtype=np.float64)
        if self.normalize and self.feature_weight is None and vals.size:
            vals = vals / vals.sum()
        return Row(
            indices=np.asarray(indices, dtype=np.int32),
            values=vals.astype(np.float32),
            has_indicator=has_indicator,
            n_known_features=len(f_idx),
            n_unknown_features=n_unknown,
        )

    def matrix(
        self,
        ids: Iterable[str | None],
        features: Mapping[str, Features] | None = None,
        flat: Flat | None = None,
    ) -> sp.csr_matrix:
        """CSR matrix (len(ids) x n_columns, float32) of the rows of ``ids``.

        Row ``r`` equals :meth:`row` of ``ids[r]``, built for all rows at once (names
        looked up and weights normalised in C, no per-row Python work but one lookup).
        ``flat``: :func:`flatten` of the same ids and features, when already at hand.
        """
        ids = list(ids)
        n = len(ids)
        lens, names, weights = flat if flat is not None else flatten(ids, features or {})
        rows = np.repeat(np.arange(n, dtype=np.int64), lens)
        cols = (
            self.vocabulary.pandas_index().get_indexer(names).astype(np.int64)
            if names.size and len(self.vocabulary)
            else np.full(names.size, -1, dtype=np.int64)
        )
        keep = (cols >= 0) & (weights > 0.0)
        rows, cols, weights = rows[keep], cols[keep] + self.n_indicators, weights[keep]
        if rows.size and self.normalize and self.feature_weight is not None:
            share = self.feature_weight if self.use_indicators else 1.0
            totals = np.bincount(rows, weights=weights, minlength=n)
            weights = weights * share / totals[rows]
        if self.use_indicators and len(self.entities):
            given = np.fromiter((i is not None for i in ids), dtype=bool, count=n)
            internal = np.full(n, -1, dtype=np.int64)
            if given.any():
                known_ids = [i for i in ids if i is not None]
                internal[given] = self.entities.convert_to_internal(known_ids, missing=-1)
            has = internal >= 0
            # indicators first: a stable sort by row keeps them before the row's features
            rows = np.concatenate([np.flatnonzero(has), rows])
            cols = np.concatenate([internal[has], cols])
            weights = np.concatenate([np.ones(int(has.sum())), weights])
        if rows.size and self.normalize and self.feature_weight is None:
            weights = weights / np.bincount(rows, weights=weights, minlength=n)[rows]
        order = np.argsort(rows, kind="stable")
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return sp.csr_matrix(
            (weights[order].astype(np.float32), cols[order].astype(np.int32), indptr),
            shape=(n, self.n_columns),
            dtype=np.float32,
        )


_NO_FEATURES: dict[str, float] = {}


Flat = tuple[np.ndarray, np.ndarray, np.ndarray]


def flatten(ids: list[str | None], features: Mapping[str, Features]) -> Flat:
    """``(lens, names, weights)``: each id's number of features, then all feature names
    (object array) and weights (float64) one id after the other."""
    get = features.get
    feats = [_NO_FEATURES if i is None else (get(i) or _NO_FEATURES) for i in ids]
    lens = np.fromiter(map(len, feats), dtype=np.int64, count=len(feats))
    total = int(lens.sum())
    names = np.fromiter(chain.from_iterable(feats), dtype=object, count=total)
    weights = np.fromiter(
        chain.from_iterable(map(methodcaller("values"), feats)), dtype=np.float64, count=total
    )
    return lens, names, weights


def feature_names(
    ids: Iterable[str], features: Mapping[str, Features], flat: Flat | None = None
) -> list[str]:
    """Sorted distinct feature names of ``ids`` (a vocabulary); ``flat`` as in
    :meth:`FeatureSpace.matrix`."""
    _, names, _ = flat if flat is not None else flatten(list(ids), features)
    return sorted(pd.unique(names).tolist()) if names.size else []
