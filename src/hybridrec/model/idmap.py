"""Frozen mapping between external string ids and internal row indices."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["IdMap", "as_strings"]


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


@dataclass(frozen=True)
class IdMap:
    """External ids (strings) in internal order; index ``i`` is row ``i`` of a matrix.

    Build with :meth:`from_values`; convert with :meth:`convert_to_internal` and
    :meth:`convert_to_external`. Bulk conversions hash in C (a pandas index built once).
    """

    external: tuple[str, ...]
    _index: dict[str, int] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_values(cls, values: Iterable[object]) -> IdMap:
        """Unique values in first-seen order, each converted to ``str``."""
        unique = _unique_strings(values)
        return cls(tuple(unique.tolist()), dict(zip(unique.tolist(), range(unique.size))))

    def __post_init__(self) -> None:
        if not self._index and self.external:
            object.__setattr__(self, "_index", dict(zip(self.external, range(len(self.external)))))
        if len(self._index) != len(self.external):
            raise ValueError("IdMap external ids must be unique")

    def __len__(self) -> int:
        return len(self.external)

    def __contains__(self, external_id: object) -> bool:
        return str(external_id) in self._index

    def get(self, external_id: object) -> int | None:
        """Internal index of one id, or ``None`` when it is not in the map."""
        return self._index.get(str(external_id))

    def pandas_index(self) -> pd.Index:
        """The external ids as a pandas index (built once, then cached)."""
        cached = self.__dict__.get("_pd_index")
        if cached is None:
            cached = pd.Index(np.asarray(self.external, dtype=object), dtype=object)
            object.__setattr__(self, "_pd_index", cached)
        return cached

    def convert_to_internal(self, ids: Iterable[object], missing: int | None = None) -> np.ndarray:
        """Internal indices (int64) of ``ids``.

        Unknown ids raise ``KeyError`` unless ``missing`` is given, which then stands in.
        """
        arr = as_strings(ids)
        found = self.pandas_index().get_indexer(arr).astype(np.int64)
        unknown = found < 0
        if unknown.any():
            if missing is None:
                raise KeyError(f"id {arr[np.argmax(unknown)]!r} is not in the map")
            found[unknown] = missing
        return found

    def convert_to_external(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """External ids of internal ``indices``."""
        ext = self.external
        return [ext[int(i)] for i in indices]

    def extend(self, values: Iterable[object]) -> IdMap:
        """A new map with ``values`` not yet present appended at the end."""
        unique = _unique_strings(values)
        if len(self):
            unique = unique[self.pandas_index().get_indexer(unique) < 0]
        added = unique.tolist()
        index = dict(self._index)
        index.update(zip(added, range(len(self), len(self) + len(added))))
        return IdMap(self.external + tuple(added), index)
