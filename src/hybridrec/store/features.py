"""The feature store: entity features, item catalog, seen items and the interaction log.

Key layout under the prefix ``P`` (``Settings.key_prefix``); ``{...}`` is a Redis Cluster
hash tag, so all keys of one entity live in one slot and every command touches one slot
(the kind letter inside the tag keeps it non-empty for an id such as ``"}x"``)::

    P:{u:<user_id>}:f      hash   feature -> weight (a float as a decimal string)
    P:{u:<user_id>}:seen   set    item ids the user interacted with
    P:{i:<item_id>}:f      hash   feature -> weight
    P:users:ids            set    ids of users put (the index iteration walks)
    P:items:ids            set    ids of items put: the item catalog
    P:items:changes        stream fields op ("put" | "delete") and id, or ids (a JSON list
                                  of the ids of one bulk-load chunk); capped, ~100k entries
    P:log                  stream fields u, i, w, t (user, item, weight, unix seconds);
                                  capped at ``log_maxlen`` (approximate MAXLEN ~)
    P:items:meta           hash   item id -> metadata JSON (``store/metadata.py``)

A replace deletes and rewrites the hash in one Lua script (one key), so a reader sees the
old features or the new ones, never a mix or nothing. Writes add an
id to its index set before writing its hash and remove it after deleting the hash, so
the index is always a superset of the entities with features: an entity in the index
without a hash reads as "known, no features" (``{}``). Values are plain strings.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..errors import HybridrecError
from .connection import redis_errors
from .metadata import ItemMetadata

__all__ = ["FeatureStore", "KINDS", "RESYNC"]

KINDS = ("users", "items")
RESYNC = "resync"
"""Op of the single ``("*", RESYNC)`` change returned when the change feed was trimmed
past a consumer's cursor: changes were lost, re-read the whole catalog."""

_LETTER = {"users": "u", "items": "i"}
_CHUNK_FIELDS = 20_000  # hash fields (or log entries) sent per pipeline round trip
_CHUNK_ENTITIES = 2_000
_PAGE = 5_000  # entries per XRANGE / ids per SSCAN batch
_guard = redis_errors("the feature store (Redis)")
_REPLACE_HASH = """
redis.call('DEL', KEYS[1])
for i = 1, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return #ARGV / 2
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _features(raw: Mapping[Any, Any]) -> dict[str, float]:
    return {_s(k): float(v) for k, v in raw.items()}


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def _check_id(entity_id: object, what: str = "id") -> str:
    text = str(entity_id)
    if not text:
        raise ValueError(f"{what} must be a non-empty string")
    return text


def _check_features(features: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, weight in features.items():
        name = _check_id(name, "feature name")
        try:
            w = float(weight)
        except (TypeError, ValueError):
            raise ValueError(f"weight of feature {name!r} is not a number: {weight!r}") from None
        if not math.isfinite(w):
            raise ValueError(f"weight of feature {name!r} must be finite, not {w}")
        out[name] = w
    return out


class FeatureStore(ItemMetadata):
    """Features of users and items, the catalog, seen sets and the interaction log.

    ``client`` is a redis-py ``Redis`` or ``RedisCluster``; every public method raises
    :class:`~hybridrec.errors.StoreUnavailable` when Redis cannot be reached. ``kind`` is
    ``"users"`` or ``"items"``; ids and feature names are non-empty strings, weights
    finite floats.
    """

    def __init__(
        self,
        client: Any,
        prefix: str = "hybridrec",
        log_maxlen: int = 10_000_000,
        changes_maxlen: int = 100_000,
    ):
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"key prefix {prefix!r} must be non-empty and without braces")
        self.client = client
        self.prefix = prefix
        self.log_maxlen = log_maxlen
        self.changes_maxlen = changes_maxlen
        self.log_key = f"{prefix}:log"
        self.changes_key = f"{prefix}:items:changes"
        # items deleted and not put since: lets a worker that starts later retire model
        # items whose delete has already left the capped change feed
        self.deleted_key = f"{prefix}:items:deleted"

    # -- keys -------------------------------------------------------------------------

    def key(self, kind: str, entity_id: str) -> str:
        """Key of the features hash of one entity."""
        try:
            letter = _LETTER[kind]
        except KeyError:
            raise ValueError(f"kind must be 'users' or 'items', not {kind!r}") from None
        return f"{self.prefix}:{{{letter}:{entity_id}}}:f"

    def seen_key(self, user_id: str) -> str:
        """Key of the set of items ``user_id`` interacted with."""
        return f"{self.prefix}:{{u:{user_id}}}:seen"

    def index_key(self, kind: str) -> str:
        """Key of the set of ids of ``kind`` (for items: the catalog)."""
        self.key(kind, "x")  # validates kind
        return f"{self.prefix}:{kind}:ids"

    # -- one entity ---------------------------------------------------------------------

    @_guard
    def put_features(
        self, kind: str, entity_id: str, features: Mapping[str, float], replace: bool = True
    ) -> None:
        """Store ``features`` of one entity: replace all of them, or merge (``replace=False``).

        An empty mapping still records the entity (an item joins the catalog).
        """
        entity_id = _check_id(entity_id)
        clean = _check_features(features)
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(self.index_key(kind), entity_id)
        if kind == "items":
            pipe.srem(self.deleted_key, entity_id)
        self._queue_hash(pipe, self.key(kind, entity_id), list(clean.items()), replace)
        pipe.execute()
        if kind == "items":
            self._append_changes([entity_id], "put")

    @_guard
    def get_features(self, kind: str, entity_id: str) -> dict[str, float] | None:
        """``{feature: weight}`` of one entity; ``{}`` if put without features; None if unknown."""
        entity_id = _check_id(entity_id)
        raw = self.client.hgetall(self.key(kind, entity_id))
        if raw:
            return _features(raw)
        return {} if self.client.sismember(self.index_key(kind), entity_id) else None

    @_guard
    def delete_features(self, kind: str, entity_id: str) -> bool:
        """Forget one entity's features (an item leaves the catalog); True if it existed."""
        entity_id = _check_id(entity_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.key(kind, entity_id))
        pipe.srem(self.index_key(kind), entity_id)
        deleted, removed = pipe.execute()
        existed = bool(deleted or removed)
        if existed and kind == "items":
            self.client.sadd(self.deleted_key, entity_id)
            self._append_changes([entity_id], "delete")
        return existed

    @_guard
    def deleted_item_ids(self) -> set[str]:
        """Items deleted and not put again since (tombstones)."""
        return {_s(i) for i in self.client.smembers(self.deleted_key)}

    # -- many entities ------------------------------------------------------------------

    @_guard
    def get_many(self, kind: str, ids: Iterable[str]) -> dict[str, dict[str, float]]:
        """``{id: {feature: weight}}`` for the ids with stored features, in one round trip."""
        ids = [_check_id(i) for i in ids]
        if not ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for entity_id in ids:
            pipe.hgetall(self.key(kind, entity_id))
        return {i: _features(raw) for i, raw in zip(ids, pipe.execute(), strict=True) if raw}

    def iter_features(self, kind: str, batch: int = 1000) -> Iterator[tuple[str, dict]]:
        """``(id, {feature: weight})`` for every entity of ``kind``, in no particular order.

        Walks the index set with SSCAN (one key: fine in a cluster) and reads each batch of
        hashes in one pipelined round trip; entities put without features give ``{}``.
        """
        index = self.index_key(kind)
        done: set[str] = set()  # SSCAN may repeat an id while the set is rehashed
        pending: list[str] = []
        with redis_errors("the feature store (Redis)"):
            for raw_id in self.client.sscan_iter(index, count=batch):
                entity_id = _s(raw_id)
                if entity_id in done:
                    continue
                done.add(entity_id)
                pending.append(entity_id)
                if len(pending) >= batch:
                    yield from self._read_batch(kind, pending)
                    pending = []
            if pending:
                yield from self._read_batch(kind, pending)

    def _read_batch(self, kind: str, ids: list[str]) -> list[tuple[str, dict]]:
        pipe = self.client.pipeline(transaction=False)
        for entity_id in ids:
            pipe.hgetall(self.key(kind, entity_id))
        return [(i, _features(raw)) for i, raw in zip(ids, pipe.execute(), strict=True)]

    @_guard
    def count(self, kind: str) -> int:
        """Number of entities of ``kind`` in the index (for items: catalog size)."""
        return int(self.client.scard(self.index_key(kind)))

    @_guard
    def catalog_ids(self) -> list[str]:
        """Sorted ids of every item in the catalog (items put, with or without features)."""
        return sorted({_s(i) for i in self.client.sscan_iter(self.index_key("items"), count=_PAGE)})

    @_guard
    def load_features(self, kind: str, frame: pd.DataFrame, replace: bool = False) -> int:
        """Bulk-write a long frame ``id, feature[, weight]``; return the rows written.

        ``replace=False`` merges into what is stored (a feature in the frame overwrites
        the same feature, others stay); ``replace=True`` replaces, for each entity present
        in the frame, all of its features by the frame's (entities absent from the frame
        are untouched). A repeated ``(id, feature)`` keeps the last weight
        (:func:`hybridrec.io.read_features` has already summed duplicates). Everything is
        checked before anything is written. Sent in pipelines of about 20k fields.
        """
        if len(frame) == 0:
            return 0
        codes, uniques = pd.factorize(frame["id"].astype(str))
        names = frame["feature"].astype(str).to_numpy(object)
        weights = (
            frame["weight"].to_numpy(np.float64)
            if "weight" in frame
            else np.ones(len(frame), np.float64)
        )
        ids = [str(u) for u in uniques]
        if not all(ids) or not all(names):
            raise ValueError("ids and feature names must be non-empty strings")
        if not np.isfinite(weights).all():
            raise ValueError("feature weights must be finite numbers")
        order = np.argsort(codes, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(ids)))])
        names_sorted = names[order].tolist()
        weights_sorted = weights[order].tolist()
        key_of = self.key
        index = self.index_key(kind)

        start = 0
        while start < len(ids):
            stop, fields = start, 0
            while stop < len(ids) and stop - start < _CHUNK_ENTITIES and fields < _CHUNK_FIELDS:
                fields += int(bounds[stop + 1] - bounds[stop])
                stop += 1
            chunk = ids[start:stop]
            pipe = self.client.pipeline(transaction=False)
            pipe.sadd(index, *chunk)
            if kind == "items":
                pipe.srem(self.deleted_key, *chunk)
            for j in range(start, stop):
                lo, hi = int(bounds[j]), int(bounds[j + 1])
                pairs = list(zip(names_sorted[lo:hi], weights_sorted[lo:hi], strict=True))
                self._queue_hash(pipe, key_of(kind, ids[j]), pairs, replace)
            pipe.execute()
            if kind == "items":  # after the hashes, so a consumer never sees a change early
                self._append_changes(chunk, "put")
            start = stop
        return len(frame)

    def _queue_hash(
        self, pipe: Any, key: str, pairs: list[tuple[str, float]], replace: bool
    ) -> None:
        """Queue the writes of one hash: merged field by field, or replaced atomically."""
        flat = [x for pair in pairs for x in pair]
        if replace:
            # One EVAL (DEL + HSET on one key): readers see the old hash or the new one.
            # Sent raw: redis-py cluster pipelines lack eval() but route EVAL by its key.
            pipe.execute_command("EVAL", _REPLACE_HASH, 1, key, *flat)
            return
        for lo in range(0, len(flat), 2 * _CHUNK_FIELDS):
            pipe.hset(key, items=flat[lo : lo + 2 * _CHUNK_FIELDS])

    # -- item change feed ---------------------------------------------------------------

    def _append_changes(self, ids: list[str], op: str) -> None:
        """One feed entry: ``id`` for a single item, ``ids`` (a JSON list) for a bulk chunk."""
        fields = {"id": ids[0]} if len(ids) == 1 else {"ids": json.dumps(ids)}
        self.client.xadd(
            self.changes_key, {**fields, "op": op}, maxlen=self.changes_maxlen, approximate=True
        )

    @_guard
    def latest_change_cursor(self) -> str:
        """Cursor of the newest item change (``"0-0"`` if none): start polling from here."""
        last = self.client.xrevrange(self.changes_key, "+", "-", count=1)
        return _s(last[0][0]) if last else "0-0"

    @_guard
    def item_changes_since(self, cursor: str = "0-0") -> tuple[str, list[tuple[str, str]]]:
        """Item puts/deletes after ``cursor``: ``(new_cursor, [(item_id, op), ...])``.

        ``op`` is ``"put"`` or ``"delete"``, oldest first. If the capped feed no longer
        holds the change at ``cursor`` (the consumer fell too far behind), returns
        ``(latest_cursor, [("*", RESYNC)])``: re-read the whole catalog.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.xrange(self.changes_key, "-", "+", count=1)
        pipe.xrange(self.changes_key, f"({cursor}" if cursor != "0-0" else "-", "+", count=_PAGE)
        first, entries = pipe.execute()
        if cursor != "0-0" and first and _stream_id(_s(first[0][0])) > _stream_id(cursor):
            return self.latest_change_cursor(), [("*", RESYNC)]
        changes: list[tuple[str, str]] = []
        while entries:
            for entry_id, fields in entries:
                f = {_s(k): _s(v) for k, v in fields.items()}
                ids = [f["id"]] if "id" in f else json.loads(f["ids"])
                changes.extend((item_id, f["op"]) for item_id in ids)
                cursor = _s(entry_id)
            if len(entries) < _PAGE:
                break
            entries = self.client.xrange(self.changes_key, f"({cursor}", "+", count=_PAGE)
        return cursor, changes

    # -- interactions -------------------------------------------------------------------

    @_guard
    def add_interactions(self, frame: pd.DataFrame) -> int:
        """Append interactions to the log and the users' seen sets; return how many.

        ``frame``: ``user_id, item_id[, weight][, timestamp]`` (weight 1.0 and the current
        unix second when absent). Checked first, then sent in pipelines of 20k entries.
        """
        n = len(frame)
        if n == 0:
            return 0
        users = frame["user_id"].astype(str).tolist()
        items = frame["item_id"].astype(str).tolist()
        weights = (
            frame["weight"].to_numpy(np.float64) if "weight" in frame else np.ones(n, np.float64)
        )
        stamps = (
            frame["timestamp"].to_numpy(np.int64)
            if "timestamp" in frame
            else np.full(n, int(time.time()), np.int64)
        )
        if not all(users) or not all(items):
            raise ValueError("user and item ids must be non-empty strings")
        if not np.isfinite(weights).all():
            raise ValueError("interaction weights must be finite numbers")
        weight_list, stamp_list = weights.tolist(), stamps.tolist()
        for lo in range(0, n, _CHUNK_FIELDS):
            hi = min(n, lo + _CHUNK_FIELDS)
            pipe = self.client.pipeline(transaction=False)
            seen: dict[str, set[str]] = {}
            for j in range(lo, hi):
                pipe.xadd(
                    self.log_key,
                    {"u": users[j], "i": items[j], "w": weight_list[j], "t": stamp_list[j]},
                    maxlen=self.log_maxlen,
                    approximate=True,
                )
                seen.setdefault(users[j], set()).add(items[j])
            for user_id, item_ids in seen.items():
                pipe.sadd(self.seen_key(user_id), *item_ids)
            pipe.execute()
        return n

    @_guard
    def get_seen(self, user_id: str) -> set[str]:
        """Item ids ``user_id`` interacted with (empty for an unknown user)."""
        return {_s(i) for i in self.client.smembers(self.seen_key(_check_id(user_id)))}

    @_guard
    def read_interactions(self, since: str | None = None, until: str | None = None) -> pd.DataFrame:
        """The log as ``user_id, item_id, weight (float64), timestamp (int64 unix s)``.

        Oldest first; ``since`` is a log cursor (exclusive), e.g. a previous call's
        ``frame.attrs["last_id"]``, which names the newest entry read (``"0-0"`` if none);
        ``until`` (inclusive) stops at a cursor.
        """
        users: list[str] = []
        items: list[str] = []
        weights: list[float] = []
        stamps: list[int] = []
        last = since or "0-0"
        start = f"({since}" if since else "-"
        while True:
            entries = self.client.xrange(self.log_key, start, until or "+", count=_PAGE)
            for entry_id, fields in entries:
                f = {_s(k): v for k, v in fields.items()}
                users.append(_s(f["u"]))
                items.append(_s(f["i"]))
                weights.append(float(f["w"]))
                stamps.append(int(f["t"]))
                last = _s(entry_id)
            if len(entries) < _PAGE:
                break
            start = f"({last}"
        frame = pd.DataFrame(
            {
                "user_id": pd.Series(users, dtype=str),
                "item_id": pd.Series(items, dtype=str),
                "weight": np.asarray(weights, np.float64),
                "timestamp": np.asarray(stamps, np.int64),
            }
        )
        frame.attrs["last_id"] = last
        return frame

    @_guard
    def log_cursor(self) -> str:
        """Cursor of the newest log entry (``"0-0"`` if none): what ``read_interactions``
        would put in ``attrs["last_id"]`` now, without reading the log."""
        last = self.client.xrevrange(self.log_key, "+", "-", count=1)
        return _s(last[0][0]) if last else "0-0"

    @_guard
    def log_length(self) -> int:
        """Entries in the interaction log (after capping)."""
        return int(self.client.xlen(self.log_key))

    # -- serving hot path ---------------------------------------------------------------

    @_guard
    def user_context(self, user_id: str) -> tuple[dict[str, float] | None, set[str]]:
        """``(features or None, seen item ids)`` of one user in one round trip.

        Both keys share the user's hash slot, so this is one round trip in a cluster too.
        ``None`` means no stored features (unknown, or known without features).
        """
        user_id = _check_id(user_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.key("users", user_id))
        pipe.smembers(self.seen_key(user_id))
        raw, seen = pipe.execute()
        return (_features(raw) if raw else None), {_s(i) for i in seen}

    def ping(self) -> bool:
        """True if Redis answers."""
        try:
            with redis_errors():
                return bool(self.client.ping())
        except HybridrecError:
            return False
