"""Item metadata: what a person reads about an item (a title, a link), never a feature.

One Redis hash per deployment, ``P:items:meta``: field = item id, value = the item's
metadata as a JSON object of strings (``{"title": "Toy Story (1995)"}``). One key, so
reading the metadata of the k items of an answer is a single ``HMGET`` (one round trip,
one slot in a Redis Cluster). Metadata does not change scores, does not need a model and
does not put an item in the catalog; items without metadata simply have none.

Every write through this class then increments ``P:items:meta:gen`` (the metadata
*generation*): a serving worker reads it in the round trip that fetches the user's
features and keeps the metadata it fetched while the generation stays the same
(:class:`~hybridrec.serving.answers.MetadataCache`), so an answer usually needs no
second round trip and an edit is seen by the next request on every worker.

:class:`ItemMetadata` is mixed into :class:`~hybridrec.store.features.FeatureStore`, so
every holder of a feature store reads and writes metadata through it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pandas as pd

from .connection import redis_errors

__all__ = ["ItemMetadata", "MAX_FIELDS", "MAX_VALUE_LENGTH", "check_metadata", "generation"]

MAX_FIELDS = 64
"""Most metadata fields per item."""
MAX_VALUE_LENGTH = 4096
"""Longest metadata value, in characters."""

_guard = redis_errors("the feature store (Redis)")
_CHUNK = 5_000  # items per HSET / HSCAN batch


def check_metadata(metadata: Mapping[Any, Any]) -> dict[str, str]:
    """``metadata`` as ``{name: text}``; ValueError naming the first problem."""
    if not isinstance(metadata, Mapping):
        raise ValueError("metadata must be an object of field names to strings")
    if len(metadata) > MAX_FIELDS:
        raise ValueError(f"metadata has {len(metadata)} fields; at most {MAX_FIELDS}")
    out: dict[str, str] = {}
    for name, value in metadata.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError("metadata field names must be non-empty strings")
        if len(name) > 256:
            raise ValueError(f"metadata field name {name[:20]!r}... is over 256 characters")
        if not isinstance(value, str):
            raise ValueError(
                f"metadata field {name!r} must be a string, not {type(value).__name__}"
            )
        if len(value) > MAX_VALUE_LENGTH:
            raise ValueError(
                f"metadata field {name!r} is {len(value)} characters long; "
                f"at most {MAX_VALUE_LENGTH}"
            )
        try:
            name.encode("utf-8"), value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"metadata field {name!r} is not valid Unicode") from None
        if "\x00" in name or "\x00" in value:  # no file format could carry it back
            raise ValueError(f"metadata field {name!r} contains a NUL character")
        out[name] = value
    return out


def _decode(raw: Any) -> dict[str, str] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:  # written by something else: unreadable metadata is no metadata
        return None
    return value if isinstance(value, dict) else None


def generation(raw: Any) -> int:
    """The metadata generation from its raw Redis value (None: 0)."""
    try:
        return int(raw or 0)
    except (TypeError, ValueError):  # written by something else: never equal to a real one
        return -1


def _missing(value: Any) -> bool:
    """None, or pandas' NaN/NA for an empty cell of a string column."""
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ItemMetadata:
    """Item metadata methods; needs ``self.client`` (redis-py) and ``self.prefix``."""

    client: Any
    prefix: str

    @property
    def metadata_key(self) -> str:
        """Key of the hash of every item's metadata."""
        return f"{self.prefix}:items:meta"

    @property
    def metadata_generation_key(self) -> str:
        """Key of the counter every metadata write increments (after writing)."""
        return f"{self.prefix}:items:meta:gen"

    @_guard
    def metadata_generation(self) -> int:
        """The metadata generation (0 before the first write)."""
        return generation(self.client.get(self.metadata_generation_key))

    @_guard
    def put_metadata(self, item_id: str, metadata: Mapping[str, str]) -> dict[str, str]:
        """Replace the metadata of one item (``{}`` removes it); return what was stored."""
        clean = check_metadata(metadata)
        if not str(item_id):
            raise ValueError("item id must be a non-empty string")
        if clean:
            self.client.hset(self.metadata_key, str(item_id), json.dumps(clean))
        else:
            self.client.hdel(self.metadata_key, str(item_id))
        # after the write, as its own command (another slot in a cluster): a reader that
        # sees the new generation then reads the new metadata
        self.client.incr(self.metadata_generation_key)
        return clean

    @_guard
    def get_metadata(self, item_id: str) -> dict[str, str] | None:
        """The metadata of one item, or None."""
        return _decode(self.client.hget(self.metadata_key, str(item_id)))

    @_guard
    def metadata_of(self, item_ids: Iterable[str]) -> list[dict[str, str] | None]:
        """The metadata of each of ``item_ids`` (None where there is none): one HMGET."""
        ids = list(item_ids)
        if not ids:
            return []
        return [_decode(raw) for raw in self.client.hmget(self.metadata_key, ids)]

    @_guard
    def load_metadata(self, frame: pd.DataFrame, replace: bool = False) -> int:
        """Write a wide frame (``id`` and one column per field, None = no such field);
        return the items written.

        ``replace=False`` merges each item's fields into what is stored; ``replace=True``
        makes each item's metadata exactly the frame's row. Items absent from the frame
        are untouched. Checked whole before anything is written.
        """
        fields = [c for c in frame.columns if c != "id"]
        rows = []
        for row in frame.itertuples(index=False, name=None):
            values = dict(zip(frame.columns, row))
            item_id = str(values.pop("id"))
            meta = {k: v for k, v in values.items() if k in fields and not _missing(v)}
            rows.append((item_id, check_metadata(meta)))
        for lo in range(0, len(rows), _CHUNK):
            chunk = rows[lo : lo + _CHUNK]
            if not replace:
                stored = self.client.hmget(self.metadata_key, [i for i, _ in chunk])
                chunk = [(i, {**(_decode(old) or {}), **m}) for (i, m), old in zip(chunk, stored)]
            mapping = {i: json.dumps(m) for i, m in chunk if m}
            empty = [i for i, m in chunk if not m]
            pipe = self.client.pipeline(transaction=False)
            if mapping:
                pipe.hset(self.metadata_key, mapping=mapping)
            if empty:
                pipe.hdel(self.metadata_key, *empty)
            pipe.execute()
            self.client.incr(self.metadata_generation_key)
        return len(rows)

    def iter_metadata(self) -> Iterator[tuple[str, dict[str, str]]]:
        """``(item_id, metadata)`` of every item with metadata, in no particular order."""
        with redis_errors("the feature store (Redis)"):
            for item_id, raw in self.client.hscan_iter(self.metadata_key, count=_CHUNK):
                meta = _decode(raw)
                if meta:
                    yield _s(item_id), meta

    @_guard
    def metadata_count(self) -> int:
        """Number of items with metadata."""
        return int(self.client.hlen(self.metadata_key))
