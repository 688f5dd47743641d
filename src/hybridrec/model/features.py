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

import numpy as np
import scipy.sparse as sp

from .idmap import IdMap

__all__ = ["FeatureSpace", "Row", "Features"]

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
        self, ids: Iterable[str | None], features: Mapping[str, Features] | None = None
    ) -> sp.csr_matrix:
        """CSR matrix (len(ids) x n_columns, float32) of the rows of ``ids``."""
        features = features or {}
        indptr = [0]
        indices: list[np.ndarray] = []
        data: list[np.ndarray] = []
        n = 0
        for entity_id in ids:
            r = self.row(entity_id, features.get(entity_id) if entity_id is not None else None)
            indices.append(r.indices)
            data.append(r.values)
            indptr.append(indptr[-1] + r.indices.size)
            n += 1
        return sp.csr_matrix(
            (
                np.concatenate(data) if data else np.zeros(0, np.float32),
                np.concatenate(indices) if indices else np.zeros(0, np.int32),
                np.asarray(indptr, dtype=np.int64),
            ),
            shape=(n, self.n_columns),
            dtype=np.float32,
        )
