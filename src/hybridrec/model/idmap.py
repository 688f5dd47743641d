"""Frozen mapping between external string ids and internal row indices."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["IdMap"]


@dataclass(frozen=True)
class IdMap:
    """External ids (strings) in internal order; index ``i`` is row ``i`` of a matrix.

    Build with :meth:`from_values`; convert with :meth:`convert_to_internal` and
    :meth:`convert_to_external`.
    """

    external: tuple[str, ...]
    _index: dict[str, int] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_values(cls, values: Iterable[object]) -> IdMap:
        """Unique values in first-seen order, each converted to ``str``."""
        index: dict[str, int] = {}
        for v in values:
            s = str(v)
            if s not in index:
                index[s] = len(index)
        return cls(tuple(index), index)

    def __post_init__(self) -> None:
        if not self._index and self.external:
            object.__setattr__(self, "_index", {s: i for i, s in enumerate(self.external)})
        if len(self._index) != len(self.external):
            raise ValueError("IdMap external ids must be unique")

    def __len__(self) -> int:
        return len(self.external)

    def __contains__(self, external_id: object) -> bool:
        return str(external_id) in self._index

    def get(self, external_id: object) -> int | None:
        """Internal index of one id, or ``None`` when it is not in the map."""
        return self._index.get(str(external_id))

    def convert_to_internal(self, ids: Iterable[object], missing: int | None = None) -> np.ndarray:
        """Internal indices (int64) of ``ids``.

        Unknown ids raise ``KeyError`` unless ``missing`` is given, which then stands in.
        """
        index = self._index
        if missing is None:
            try:
                return np.fromiter((index[str(i)] for i in ids), dtype=np.int64)
            except KeyError as exc:
                raise KeyError(f"id {exc.args[0]!r} is not in the map") from None
        return np.fromiter((index.get(str(i), missing) for i in ids), dtype=np.int64)

    def convert_to_external(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """External ids of internal ``indices``."""
        ext = self.external
        return [ext[int(i)] for i in indices]

    def extend(self, values: Iterable[object]) -> IdMap:
        """A new map with ``values`` not yet present appended at the end."""
        index = dict(self._index)
        for v in values:
            s = str(v)
            if s not in index:
                index[s] = len(index)
        return IdMap(tuple(index), index)
