"""Frozen mapping between external string ids and internal row indices.

Two layouts behind one interface:

- **in memory** (built by training: :meth:`IdMap.from_values`, :meth:`IdMap.extend`,
  the plain constructor): a tuple of ``str`` and a dict, plus a pandas index for bulk
  lookups (hashing in C);
- **sorted** (loaded from an artifact: :meth:`IdMap.sorted`): a fixed-width unicode
  array of the ids in internal order and the permutation that sorts it, both usually
  memory-mapped read-only from ``model.npz``; lookups are binary searches
  (``np.searchsorted(ids, x, sorter=order)``). Nothing per id is built on the heap, so
  N serving workers share one copy of the ids in the page cache: at 1M items the
  in-memory layout costs a worker ~160 MB of heap (strings, tuple, dict, index), the
  sorted one about nothing.

``external`` (every id, in order, as a tuple of ``str``) is built on first use in the
sorted layout; serving code uses :meth:`id_at`, :meth:`get`, ``in`` and the bulk
conversions instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["IdMap", "as_strings", "sort_order"]

_CHECK_CHUNK = 1 << 16


def as_strings(values: Iterable[object]) -> np.ndarray:
    """``values`` as an object array of ``str``: no copy when they are strings already
    (checked in C), else converted in C."""
    if not isinstance(values, np.ndarray | pd.Series | pd.Index | list | tuple):
        values = list(values)
    arr = pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values
    if arr.dtype == object and pd.api.types.infer_dtype(arr, skipna=False) == "string":
        return arr.to_numpy(dtype=object, copy=False)
    return arr.astype(str).to_numpy(dtype=object)


def _unique_strings(values: Iterable[object]) -> np.ndarray:
    """Unique values as ``str``, in first-seen order (object array); hashing in C."""
    return pd.unique(as_strings(values))


def sort_order(ids: np.ndarray) -> np.ndarray:
    """The permutation (int64) that sorts a unicode id array, as stored in artifacts."""
    return np.argsort(ids, kind="stable").astype(np.int64, copy=False)


@dataclass(frozen=True, eq=False)
class IdMap:
    """External ids (strings) in internal order; index ``i`` is row ``i`` of a matrix.

    Build with :meth:`from_values` (or :meth:`sorted` for an artifact's arrays); convert
    with :meth:`convert_to_internal` and :meth:`convert_to_external`.
    """

    _external: tuple[str, ...] | None = None
    _index: dict[str, int] = field(repr=False, default_factory=dict)
    _ids: np.ndarray | None = field(repr=False, default=None)  # sorted layout: <U ids
    _order: np.ndarray | None = field(repr=False, default=None)  # ids[order] is sorted

    @classmethod
    def from_values(cls, values: Iterable[object]) -> IdMap:
        """Unique values in first-seen order, each converted to ``str``."""
        unique = _unique_strings(values).tolist()
        return cls(tuple(unique), dict(zip(unique, range(len(unique)))))

    @classmethod
    def sorted(cls, ids: np.ndarray, order: np.ndarray | None = None) -> IdMap:
        """The sorted layout over ``ids`` (a unicode array, internal order, typically
        mapped) and ``order`` (``ids[order]`` strictly increasing; computed when None).

        Raises ``ValueError`` when ``ids`` are not unique or ``order`` does not sort
        them (checked in chunks: no copy of the whole array).
        """
        ids = np.asarray(ids)
        if ids.size == 0:
            return cls(())
        if ids.ndim != 1 or ids.dtype.kind != "U":
            raise ValueError(f"ids must be a 1-d unicode array, not {ids.dtype} {ids.shape}")
        order = sort_order(ids) if order is None else np.asarray(order)
        if order.shape != ids.shape or order.dtype.kind not in "iu":
            raise ValueError("the id order must be an integer permutation of the ids")
        n = ids.size
        prev = None
        for start in range(0, n, _CHECK_CHUNK):
            part = order[start : start + _CHECK_CHUNK]
            if part.min() < 0 or part.max() >= n:
                raise ValueError("the id order must be an integer permutation of the ids")
            values = ids[part]
            if (prev is not None and not prev < values[0]) or np.any(values[1:] <= values[:-1]):
                raise ValueError("IdMap external ids must be unique (and the order sort them)")
            prev = values[-1]
        return cls(None, {}, ids, order)

    def __post_init__(self) -> None:
        if self._ids is not None:
            return
        external = () if self._external is None else tuple(self._external)
        object.__setattr__(self, "_external", external)
        if not self._index and external:
            object.__setattr__(self, "_index", dict(zip(external, range(len(external)))))
        if len(self._index) != len(external):
            raise ValueError("IdMap external ids must be unique")

    # -- what both layouts answer --------------------------------------------------------

    @property
    def external(self) -> tuple[str, ...]:
        """Every id in internal order (built once on first use in the sorted layout)."""
        if self._external is None:
            object.__setattr__(self, "_external", tuple(self._ids.tolist()))
        return self._external

    @property
    def is_sorted_layout(self) -> bool:
        return self._ids is not None

    def __len__(self) -> int:
        return int(self._ids.size) if self._ids is not None else len(self._external)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdMap):
            return NotImplemented
        if len(self) != len(other):
            return False
        return bool(np.array_equal(self._array(), other._array()))

    def __hash__(self) -> int:
        n = len(self)
        return hash((n, self.id_at(0) if n else None, self.id_at(n - 1) if n else None))

    def __contains__(self, external_id: object) -> bool:
        return self.get(external_id) is not None

    def get(self, external_id: object) -> int | None:
        """Internal index of one id, or ``None`` when it is not in the map."""
        key = str(external_id)
        if self._ids is None:
            return self._index.get(key)
        ids, order = self._ids, self._order
        at = int(np.searchsorted(ids, key, sorter=order))
        if at < ids.size:
            row = int(order[at])
            if ids[row] == key:
                return row
        return None

    def id_at(self, index: int) -> str:
        """The external id of internal ``index``."""
        if self._ids is None:
            return self._external[index]
        return str(self._ids[index])

    def convert_to_internal(self, ids: Iterable[object], missing: int | None = None) -> np.ndarray:
        """Internal indices (int64) of ``ids``.

        Unknown ids raise ``KeyError`` unless ``missing`` is given, which then stands in.
        """
        if self._ids is None:
            arr = as_strings(ids)
            found = self.pandas_index().get_indexer(arr).astype(np.int64)
        else:
            arr = _unicode(ids)
            found = self._search(arr)
        unknown = found < 0
        if unknown.any():
            if missing is None:
                raise KeyError(f"id {arr[np.argmax(unknown)]!r} is not in the map")
            found[unknown] = missing
        return found

    def convert_to_external(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """External ids of internal ``indices``."""
        if self._ids is None:
            ext = self._external
            return [ext[int(i)] for i in indices]
        return self._ids[np.asarray(indices, dtype=np.int64)].tolist()

    def pandas_index(self) -> pd.Index:
        """The external ids as a pandas index (built once, then cached; for the small
        maps and for training, not for a sorted map's hot path)."""
        cached = self.__dict__.get("_pd_index")
        if cached is None:
            cached = pd.Index(np.asarray(self.external, dtype=object), dtype=object)
            object.__setattr__(self, "_pd_index", cached)
        return cached

    def extend(self, values: Iterable[object]) -> IdMap:
        """A new (in-memory) map with ``values`` not yet present appended at the end."""
        unique = _unique_strings(values)
        n = len(self)
        if n:
            unique = unique[self.convert_to_internal(unique, missing=-1) < 0]
        added = unique.tolist()
        index = dict(self._index) if self._ids is None else dict(zip(self.external, range(n)))
        index.update(zip(added, range(n, n + len(added))))
        return IdMap(self.external + tuple(added), index)

    def as_array(self) -> np.ndarray:
        """The ids as a unicode array in internal order (what artifacts store)."""
        if self._ids is not None:
            return self._ids
        return np.asarray(self._external, dtype=np.str_) if self._external else np.zeros(0, "<U1")

    # -- the sorted layout -----------------------------------------------------------------

    def _array(self) -> np.ndarray:
        return self._ids if self._ids is not None else np.asarray(self._external, dtype=object)

    def _search(self, keys: np.ndarray) -> np.ndarray:
        """Indices of ``keys`` (a unicode array), -1 where absent; binary search of the
        ids through their sort order."""
        ids, order = self._ids, self._order
        if keys.size == 0:
            return np.zeros(0, dtype=np.int64)
        at = np.searchsorted(ids, keys, sorter=order)
        rows = np.asarray(order[np.minimum(at, ids.size - 1)], dtype=np.int64)
        # compared at full width: a key longer than the ids never equals one
        return np.where(ids[rows] == keys, rows, -1)


def _unicode(values: Iterable[object]) -> np.ndarray:
    """``values`` as a 1-d unicode array (few values: cheaper than a pandas round trip)."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "U":
        return values.reshape(-1)
    keys = [v if type(v) is str else str(v) for v in values]
    return np.asarray(keys, dtype=np.str_) if keys else np.zeros(0, dtype="<U1")
