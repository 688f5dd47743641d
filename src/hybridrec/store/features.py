"""The feature store: entity features, item catalog, seen items and the interaction log.

Key layout under the prefix ``P`` (``Settings.key_prefix``); ``{...}`` is a Redis Cluster
hash tag, so all keys of one tag live in one slot and a script may touch them together
(the kind letter inside a user's tag keeps it non-empty for an id such as ``"}x"``)::

    P:{u:<user_id>}:f      hash   feature -> weight (a float as a decimal string)
    P:{u:<user_id>}:seen   set    item ids the user interacted with
    P:users:ids            set    ids of users put (the index iteration walks)
    {P:items}:f:<item_id>  hash   feature -> weight
    {P:items}:live         hash   item id -> sequence of its last put: the item catalog
    {P:items}:deleted      zset   item id -> sequence of its delete (tombstones), capped
    {P:items}:retired      zset   the same, for items a served model knows: never capped
    {P:items}:clock        string the last sequence given to an item write
    {P:items}:digest       string sum of item_digest(id, seq) over the catalog, mod 2^52
    {P:items}:changes      stream fields op ("put" | "delete"), seq, and id, or ids (a JSON
                                  list of the ids of one bulk-load chunk); ~100k entries
    P:log                  stream fields u, i, w, t (user, item, weight, unix seconds);
                                  capped at ``log_maxlen`` (approximate MAXLEN ~)
    P:items:meta           hash   item id -> metadata JSON (``store/metadata.py``)
    P:items:meta:gen       string incremented after every metadata write

Every item write is one atomic step on the ``{P:items}`` slot (in a cluster too): a
delete is one Lua script; a put is one MULTI/EXEC transaction that writes the hashes and
then runs a small booking script. Either takes the next sequence from the clock and
writes the features, the catalog entry, the tombstone and the change-feed entry together,
so the feed's order is the order of the states and an item's state always carries the
sequence of the write that made it. Readers of the feed compare sequences per item (see
:mod:`hybridrec.serving.reloader`). The catalog is therefore one slot of a cluster;
users, their seen sets and their features spread.

A user's replace deletes and rewrites the hash in one Lua script (one key), so a reader
sees the old features or the new ones, never a mix or nothing. User writes add an id to
the index set before writing its hash and remove it after deleting the hash, so the
index is always a superset of the users with features. Values are plain strings.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..errors import HybridrecError
from .connection import redis_errors
from .log import clean_interactions, parse_log_entries
from .metadata import ItemMetadata
from .metadata import generation as metadata_gen

__all__ = ["DIGEST_MODULUS", "FeatureStore", "KINDS", "RESYNC", "item_digest"]

KINDS = ("users", "items")
RESYNC = "resync"
"""Op of the single ``("*", RESYNC, 0)`` change returned when the change feed was trimmed
past a consumer's cursor: changes were lost, re-read the whole catalog."""

_LETTER = {"users": "u", "items": "i"}
_CHUNK_FIELDS = 20_000  # hash fields (or log entries) sent per pipeline round trip
_CHUNK_ENTITIES = 2_000
# items go in transactions, during which Redis serves no one else: a quarter of that
_ITEM_CHUNK_FIELDS, _ITEM_CHUNK_ENTITIES = _CHUNK_FIELDS // 4, _CHUNK_ENTITIES // 4
_PAGE = 5_000  # entries per XRANGE / ids per SSCAN batch
_LOG_PAGE = 50_000  # log entries per XRANGE when reading the whole log
_guard = redis_errors("the feature store (Redis)")
_REPLACE_HASH = """
redis.call('DEL', KEYS[1])
for i = 1, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return #ARGV / 2
"""
TOMBSTONES_MAX = 10_000
"""Tombstones of items no served model knows are capped at this many (the newest kept)."""

# Item scripts. KEYS[1..6] are always: live, deleted, retired, clock, changes, digest;
# then the feature hashes of the items named in ARGV, in order. All keys share the
# {P:items} slot. The digest is the sum, modulo 2^52, of item_digest(id, seq) over the
# live items (the first 13 hex digits of sha1("<id>\n<seq>")): a reader that applied
# the same states computes the same sum, so one GET tells whether it diverged.
_DIGEST = """
local M = 4503599627370496
local function h(id, seq)
  return tonumber(string.sub(redis.sha1hex(id .. '\\n' .. seq), 1, 13), 16)
end
"""

# Book items as put under one new sequence: catalog entries, digest, tombstones removed,
# one feed entry. Expects a table `done` of the ids. ARGV: (unused), changes maxlen, feed
# field ('id' | 'ids'), feed value, then the ids -> the sequence
_BOOK = """
local seq = redis.call('INCR', KEYS[4])
local digest = tonumber(redis.call('GET', KEYS[6]) or '0')
for _, id in ipairs(done) do
  local old = redis.call('HGET', KEYS[1], id)
  if old then digest = (digest - h(id, old)) % M end
  redis.call('HSET', KEYS[1], id, seq)
  digest = (digest + h(id, seq)) % M
end
for i = 1, #done, 1000 do
  redis.call('ZREM', KEYS[2], unpack(done, i, math.min(i + 999, #done)))
  redis.call('ZREM', KEYS[3], unpack(done, i, math.min(i + 999, #done)))
end
redis.call('SET', KEYS[6], string.format('%.0f', digest))
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[2], '*', ARGV[3], ARGV[4], 'op', 'put', 'seq', seq)
return seq
"""

# Put items whose features the same MULTI/EXEC transaction has just written (so readers
# see the features and the booking together, or neither).
_PUT_ITEMS = _DIGEST + "local done = {unpack(ARGV, 5)}\n" + _BOOK

# Adopt items of an earlier layout (KEYS[7..]: staged hash, final hash, per id), those not
# in the catalog only: the staged hash becomes the item's features.
_ADOPT_ITEMS = (
    _DIGEST
    + """
local done = {}
for j = 5, #ARGV do
  local id, staged, final = ARGV[j], KEYS[2 * j - 3], KEYS[2 * j - 2]
  if redis.call('HEXISTS', KEYS[1], id) == 0 then
    redis.call('DEL', final)
    if redis.call('EXISTS', staged) == 1 then redis.call('RENAME', staged, final) end
    done[#done + 1] = id
  else
    redis.call('DEL', staged)
  end
end
if #done == 0 then return 0 end
"""
    + _BOOK
)

# Delete one item. ARGV: id, changes maxlen, tombstones max -> the sequence (0: unknown)
_DELETE_ITEM = (
    _DIGEST
    + """
local id = ARGV[1]
local old = redis.call('HGET', KEYS[1], id)
local existed = redis.call('HDEL', KEYS[1], id) + redis.call('DEL', KEYS[7])
if existed == 0 then return 0 end
if old then
  local digest = tonumber(redis.call('GET', KEYS[6]) or '0')
  redis.call('SET', KEYS[6], string.format('%.0f', (digest - h(id, old)) % M))
end
local seq = redis.call('INCR', KEYS[4])
if redis.call('ZSCORE', KEYS[3], id) then
  redis.call('ZADD', KEYS[3], seq, id)
else
  redis.call('ZADD', KEYS[2], seq, id)
  local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1) end
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[2], '*', 'id', id, 'op', 'delete', 'seq', seq)
return seq
"""
)

# The state of items. ARGV: ids -> per item {seq, {field, weight, ...}}: seq > 0 live
# (put at seq), < 0 deleted at -seq, 0 unknown (never put, or its tombstone is gone)
_READ_ITEMS = """
local out = {}
for j = 1, #ARGV do
  local id = ARGV[j]
  local seq = redis.call('HGET', KEYS[1], id)
  if seq then
    out[j] = {tonumber(seq), redis.call('HGETALL', KEYS[6 + j])}
  else
    local gone = redis.call('ZSCORE', KEYS[2], id) or redis.call('ZSCORE', KEYS[3], id)
    out[j] = {gone and -tonumber(gone) or 0, {}}
  end
end
return out
"""

# Where the catalog stands: {clock, catalog size, newest feed entry id or '', digest}
_POSITION = """
local last = redis.call('XREVRANGE', KEYS[5], '+', '-', 'COUNT', 1)
return {tonumber(redis.call('GET', KEYS[4]) or '0'), redis.call('HLEN', KEYS[1]),
        last[1] and last[1][1] or '', redis.call('GET', KEYS[6]) or '0'}
"""


def item_digest(item_id: str, seq: int) -> int:
    """The share of one live item in the catalog digest (see the item scripts)."""
    text = f"{item_id}\n{seq}".encode()
    return int(hashlib.sha1(text, usedforsecurity=False).hexdigest()[:13], 16)


DIGEST_MODULUS = 1 << 52

# Tombstones of an earlier layout. ARGV: ids; those in the catalog since are skipped
_TOMBSTONE_ABSENT = """
local seq = redis.call('INCR', KEYS[4])
for j = 1, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[j]) == 0 then
    redis.call('ZADD', KEYS[2], 'NX', seq, ARGV[j])
  end
end
return seq
"""

# Keep the tombstones of items a served model knows. ARGV: ids -> how many moved
_RETIRE = """
local n = 0
for j = 1, #ARGV do
  local seq = redis.call('ZSCORE', KEYS[2], ARGV[j])
  if seq then
    redis.call('ZREM', KEYS[2], ARGV[j])
    redis.call('ZADD', KEYS[3], seq, ARGV[j])
    n = n + 1
  end
end
return n
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
        tombstones_max: int = TOMBSTONES_MAX,
    ):
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"key prefix {prefix!r} must be non-empty and without braces")
        self.client = client
        self.prefix = prefix
        self.log_maxlen = log_maxlen
        self.changes_maxlen = changes_maxlen
        self.tombstones_max = tombstones_max
        self.log_key = f"{prefix}:log"
        tag = f"{{{prefix}:items}}"
        self._item_prefix = f"{tag}:f:"
        self.live_key = f"{tag}:live"
        # Tombstones: items deleted and not put since. They let a worker that starts later
        # retire model items whose delete has already left the capped change feed, so
        # only items a model knows need one: workers move those to ``retired_key`` (kept)
        # when they load a model or apply a delete; the rest are capped.
        self.deleted_key = f"{tag}:deleted"
        self.retired_key = f"{tag}:retired"
        self.clock_key = f"{tag}:clock"
        self.changes_key = f"{tag}:changes"
        self.digest_key = f"{tag}:digest"
        self._item_keys = [
            self.live_key,
            self.deleted_key,
            self.retired_key,
            self.clock_key,
            self.changes_key,
            self.digest_key,
        ]
        self._scripts: dict[str, Any] = {}
        self._layout_checked = False

    # -- keys -------------------------------------------------------------------------

    def key(self, kind: str, entity_id: str) -> str:
        """Key of the features hash of one entity."""
        try:
            letter = _LETTER[kind]
        except KeyError:
            raise ValueError(f"kind must be 'users' or 'items', not {kind!r}") from None
        if kind == "items":
            return self._item_prefix + entity_id
        return f"{self.prefix}:{{{letter}:{entity_id}}}:f"

    def seen_key(self, user_id: str) -> str:
        """Key of the set of items ``user_id`` interacted with."""
        return f"{self.prefix}:{{u:{user_id}}}:seen"

    def index_key(self, kind: str) -> str:
        """Key of the ids of ``kind``: a set for users, for items the catalog hash
        (id -> sequence)."""
        self.key(kind, "x")  # validates kind
        return self.live_key if kind == "items" else f"{self.prefix}:{kind}:ids"

    def _script(self, source: str) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        return script

    def _items_script(self, source: str, ids: list[str], args: list[Any]) -> Any:
        """Run an item script: the common keys, then the feature hash of each of ``ids``."""
        if not self._layout_checked:
            self._upgrade_layout()
        keys = self._item_keys + [self._item_prefix + i for i in ids]
        return self._script(source)(keys=keys, args=args)

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
        if kind == "items":
            self._put_items([(entity_id, list(clean.items()))], replace)
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(self.index_key(kind), entity_id)
        self._queue_hash(pipe, self.key(kind, entity_id), list(clean.items()), replace)
        pipe.execute()

    @_guard
    def get_features(self, kind: str, entity_id: str) -> dict[str, float] | None:
        """``{feature: weight}`` of one entity; ``{}`` if put without features; None if unknown."""
        entity_id = _check_id(entity_id)
        if kind == "items":
            seq, features = self.item_states([entity_id])[entity_id]
            return features if seq > 0 else None
        raw = self.client.hgetall(self.key(kind, entity_id))
        if raw:
            return _features(raw)
        return {} if self.client.sismember(self.index_key(kind), entity_id) else None

    @_guard
    def delete_features(self, kind: str, entity_id: str) -> bool:
        """Forget one entity's features (an item leaves the catalog); True if it existed."""
        entity_id = _check_id(entity_id)
        if kind == "items":
            args = [entity_id, self.changes_maxlen, self.tombstones_max]
            return bool(self._items_script(_DELETE_ITEM, [entity_id], args))
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.key(kind, entity_id))
        pipe.srem(self.index_key(kind), entity_id)
        deleted, removed = pipe.execute()
        return bool(deleted or removed)

    # -- item states (what serving workers follow) --------------------------------------

    @_guard
    def item_states(self, ids: Iterable[str]) -> dict[str, tuple[int, dict[str, float] | None]]:
        """``{id: (seq, features)}`` read atomically per batch: ``seq > 0`` the item is in
        the catalog since the write of that sequence; ``seq < 0`` it was deleted by write
        ``-seq`` (features None); ``0`` unknown (never put, or its tombstone expired)."""
        ids = [_check_id(i) for i in ids]
        out: dict[str, tuple[int, dict[str, float] | None]] = {}
        for lo in range(0, len(ids), _ITEM_CHUNK_ENTITIES):  # a script holds Redis too
            batch = ids[lo : lo + _ITEM_CHUNK_ENTITIES]
            states = self._items_script(_READ_ITEMS, batch, batch)
            for item_id, (seq, flat) in zip(batch, states, strict=True):
                seq = int(seq)
                features = (
                    {_s(flat[k]): float(flat[k + 1]) for k in range(0, len(flat), 2)}
                    if seq > 0
                    else None
                )
                out[item_id] = (seq, features)
        return out

    @_guard
    def item_position(self) -> tuple[int, int, str, int]:
        """``(clock, catalog size, newest feed cursor or "0-0", digest)`` read atomically:
        the clock is the sequence of the newest item write, the digest the sum of
        :func:`item_digest` over the catalog modulo :data:`DIGEST_MODULUS`."""
        clock, size, last, digest = self._items_script(_POSITION, [], [])
        return int(clock), int(size), _s(last) or "0-0", int(digest)

    @_guard
    def item_sequences(self) -> tuple[dict[str, int], dict[str, int]]:
        """``({live id: seq}, {tombstoned id: seq})``: the whole catalog's sequences, for
        reconciliation (no features read)."""
        if not self._layout_checked:
            self._upgrade_layout()
        live: dict[str, int] = {}
        for item_id, seq in self.client.hscan_iter(self.live_key, count=_PAGE):
            live[_s(item_id)] = int(seq)
        return live, self._tombstones()

    def _tombstones(self) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrange(self.deleted_key, 0, -1, withscores=True)
        pipe.zrange(self.retired_key, 0, -1, withscores=True)
        deleted, retired = pipe.execute()
        return {_s(i): int(seq) for i, seq in [*deleted, *retired]}

    @_guard
    def deleted_item_ids(self) -> set[str]:
        """Items deleted and not put again since (tombstones)."""
        return set(self._tombstones())

    @_guard
    def retire_items(self, ids: Iterable[str]) -> int:
        """Keep the tombstones of ``ids`` (items a served model knows) out of the cap;
        return how many were moved. Ids without a tombstone are ignored."""
        ids = [_check_id(i) for i in ids]
        moved = 0
        for lo in range(0, len(ids), _PAGE):
            batch = ids[lo : lo + _PAGE]
            moved += int(self._items_script(_RETIRE, [], batch))
        return moved

    # -- many entities ------------------------------------------------------------------

    @_guard
    def get_many(self, kind: str, ids: Iterable[str]) -> dict[str, dict[str, float]]:
        """``{id: {feature: weight}}`` for the ids with stored features, in one round trip."""
        ids = [_check_id(i) for i in ids]
        if not ids:
            return {}
        if kind == "items":
            return {i: f for i, (_, f) in self.item_states(ids).items() if f}
        pipe = self.client.pipeline(transaction=False)
        for entity_id in ids:
            pipe.hgetall(self.key(kind, entity_id))
        return {i: _features(raw) for i, raw in zip(ids, pipe.execute(), strict=True) if raw}

    def iter_features(self, kind: str, batch: int = 1000) -> Iterator[tuple[str, dict]]:
        """``(id, {feature: weight})`` for every entity of ``kind``, in no particular order.

        Walks the index with SSCAN/HSCAN (one key: fine in a cluster) and reads each batch
        of hashes in one round trip; entities put without features give ``{}``.
        """
        index = self.index_key(kind)
        done: set[str] = set()  # a scan may repeat an id while the index is rehashed
        pending: list[str] = []
        with redis_errors("the feature store (Redis)"):
            if kind == "items" and not self._layout_checked:
                self._upgrade_layout()
            scan = (
                (pair[0] for pair in self.client.hscan_iter(index, count=batch))
                if kind == "items"
                else self.client.sscan_iter(index, count=batch)
            )
            for raw_id in scan:
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
        if kind == "items":  # an item deleted since the scan is left out
            return [(i, f) for i, (_, f) in self.item_states(ids).items() if f is not None]
        pipe = self.client.pipeline(transaction=False)
        for entity_id in ids:
            pipe.hgetall(self.key(kind, entity_id))
        return [(i, _features(raw)) for i, raw in zip(ids, pipe.execute(), strict=True)]

    @_guard
    def count(self, kind: str) -> int:
        """Number of entities of ``kind`` in the index (for items: catalog size)."""
        if kind == "items":
            return self.item_position()[1]
        return int(self.client.scard(self.index_key(kind)))

    @_guard
    def catalog_ids(self) -> list[str]:
        """Sorted ids of every item in the catalog (items put, with or without features)."""
        return sorted(self.item_sequences()[0])

    @_guard
    def load_features(self, kind: str, frame: pd.DataFrame, replace: bool = False) -> int:
        """Bulk-write a long frame ``id, feature[, weight]``; return the rows written.

        ``replace=False`` merges into what is stored (a feature in the frame overwrites
        the same feature, others stay); ``replace=True`` replaces, for each entity present
        in the frame, all of its features by the frame's (entities absent from the frame
        are untouched). A repeated ``(id, feature)`` keeps the last weight
        (:func:`hybridrec.io.read_features` has already summed duplicates). Everything is
        checked before anything is written. Sent in pipelines of about 20k fields (items:
        transactions of about 5k fields, each with one feed entry).
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

        most_entities, most_fields = (
            (_ITEM_CHUNK_ENTITIES, _ITEM_CHUNK_FIELDS)
            if kind == "items"
            else (_CHUNK_ENTITIES, _CHUNK_FIELDS)
        )
        start = 0
        while start < len(ids):
            stop, fields = start, 0
            while stop < len(ids) and stop - start < most_entities and fields < most_fields:
                fields += int(bounds[stop + 1] - bounds[stop])
                stop += 1
            chunk = []
            for j in range(start, stop):
                lo, hi = int(bounds[j]), int(bounds[j + 1])
                pairs = list(zip(names_sorted[lo:hi], weights_sorted[lo:hi], strict=True))
                chunk.append((ids[j], pairs))
            if kind == "items":  # one transaction per chunk: hashes, catalog and feed
                self._put_items(chunk, replace)
            else:
                pipe = self.client.pipeline(transaction=False)
                pipe.sadd(index, *ids[start:stop])
                for entity_id, pairs in chunk:
                    self._queue_hash(pipe, key_of(kind, entity_id), pairs, replace)
                pipe.execute()
            start = stop
        return len(frame)

    def _put_items(self, items: list[tuple[str, list[tuple[str, float]]]], replace: bool) -> int:
        """Put items ``[(id, [(feature, weight), ...])]`` in one MULTI/EXEC transaction
        (the hashes, then the booking script); return the sequence."""
        if not self._layout_checked:
            self._upgrade_layout()
        pipe = self.client.pipeline(transaction=True)  # one slot: fine in a cluster
        for item_id, pairs in items:
            key = self._item_prefix + item_id
            if replace:
                pipe.delete(key)
            flat = [x for pair in pairs for x in pair]
            for lo in range(0, len(flat), 2 * _CHUNK_FIELDS):
                pipe.hset(key, items=flat[lo : lo + 2 * _CHUNK_FIELDS])
        self._queue_booking(pipe, _PUT_ITEMS, [item_id for item_id, _ in items], [])
        return int(pipe.execute()[-1])

    def _queue_booking(self, pipe: Any, script: str, ids: list[str], keys: list[str]) -> None:
        # EVAL, not EVALSHA: an unknown script inside MULTI would fail after the writes
        feed = ("id", ids[0]) if len(ids) == 1 else ("ids", json.dumps(ids))
        keys = self._item_keys + keys
        args = ["", self.changes_maxlen, *feed, *ids]
        pipe.execute_command("EVAL", script, len(keys), *keys, *args)

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

    # -- layout upgrade -------------------------------------------------------------------

    def _upgrade_layout(self) -> None:
        """Move items written by an earlier release (index ``P:items:ids``, hashes
        ``P:{i:<id>}:f``, tombstones set ``P:items:deleted``) to the current layout, once
        per store object; safe to run from several processes at once (an item already in
        the current layout wins). Stop every older process first: their writes would go
        to the old keys."""
        p = self.prefix
        old_index, old_deleted = f"{p}:items:ids", f"{p}:items:deleted"
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(old_index)
        pipe.exists(old_deleted)
        if not any(pipe.execute()):
            self._layout_checked = True
            return
        self._layout_checked = True  # the scripts below check it again otherwise
        while True:
            batch = [_s(i) for i in self.client.srandmember(old_index, _ITEM_CHUNK_ENTITIES) or []]
            if not batch:
                break
            old_keys = [f"{p}:{{i:{i}}}:f" for i in batch]
            pipe = self.client.pipeline(transaction=False)
            for key in old_keys:
                pipe.hgetall(key)
            raws = pipe.execute()
            stage = f"{self.live_key}:stage:{uuid.uuid4().hex}:"
            pipe = self.client.pipeline(transaction=True)
            for item_id, raw in zip(batch, raws, strict=True):
                if raw:
                    pipe.hset(stage + item_id, mapping=raw)
                    pipe.expire(stage + item_id, 3600)  # if this process dies meanwhile
            pairs = [[stage + i, self._item_prefix + i] for i in batch]
            self._queue_booking(pipe, _ADOPT_ITEMS, batch, [k for pair in pairs for k in pair])
            pipe.execute()
            pipe = self.client.pipeline(transaction=False)
            pipe.srem(old_index, *batch)
            for key in old_keys:
                pipe.delete(key)
            pipe.execute()
        gone = [_s(i) for i in self.client.smembers(old_deleted)]
        for lo in range(0, len(gone), _PAGE):
            self._items_script(_TOMBSTONE_ABSENT, [], gone[lo : lo + _PAGE])
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(old_deleted)
        pipe.delete(f"{p}:items:changes")
        pipe.execute()

    # -- item change feed ---------------------------------------------------------------

    @_guard
    def latest_change_cursor(self) -> str:
        """Cursor of the newest item change (``"0-0"`` if none): start polling from here."""
        return self.item_position()[2]

    @_guard
    def item_changes_since(self, cursor: str = "0-0") -> tuple[str, list[tuple[str, str, int]]]:
        """Item puts/deletes after ``cursor``: ``(new_cursor, [(item_id, op, seq), ...])``.

        ``op`` is ``"put"`` or ``"delete"``, oldest first; ``seq`` is the sequence of the
        write (one bulk-load chunk shares one). If the capped feed no longer holds the
        change at ``cursor`` (the consumer fell too far behind), returns
        ``(latest_cursor, [("*", RESYNC, 0)])``: re-read the whole catalog.
        """
        if not self._layout_checked:
            self._upgrade_layout()
        pipe = self.client.pipeline(transaction=False)
        pipe.xrange(self.changes_key, "-", "+", count=1)
        pipe.xrange(self.changes_key, f"({cursor}" if cursor != "0-0" else "-", "+", count=_PAGE)
        first, entries = pipe.execute()
        if cursor != "0-0" and first and _stream_id(_s(first[0][0])) > _stream_id(cursor):
            return self.latest_change_cursor(), [("*", RESYNC, 0)]
        changes: list[tuple[str, str, int]] = []
        while entries:
            for entry_id, fields in entries:
                f = {_s(k): _s(v) for k, v in fields.items()}
                ids = [f["id"]] if "id" in f else json.loads(f["ids"])
                seq = int(f.get("seq", 0))
                changes.extend((item_id, f["op"], seq) for item_id in ids)
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
    def read_interactions(
        self, since: str | None = None, until: str | None = None, *, raw: bool = False
    ) -> pd.DataFrame:
        """The log as ``user_id, item_id, weight (float64), timestamp (int64 unix s)``
        and the entry ids ``log_ms, log_seq`` (int64).

        Oldest first; ``since`` is a log cursor (exclusive), e.g. a previous call's
        ``frame.attrs["last_id"]``, which names the newest entry read (``"0-0"`` if none);
        ``until`` (inclusive) stops at a cursor. Rows training cannot use (a weight not
        finite in float32, negative or not a number, a missing id or timestamp) are
        skipped and counted in ``attrs["skipped"]`` (:func:`~.log.clean_interactions`);
        ``raw=True`` keeps them, unparsed values as NaN.
        """
        pages = []
        last = since or "0-0"
        start = f"({since}" if since and since != "0-0" else "-"
        while True:
            entries = self.client.xrange(self.log_key, start, until or "+", count=_LOG_PAGE)
            if entries:
                pages.append(parse_log_entries(entries))
                last = _s(entries[-1][0])
            if len(entries) < _LOG_PAGE:
                break
            start = f"({last}"
        frame = pd.concat(pages, ignore_index=True) if pages else parse_log_entries([])
        frame.attrs["last_id"] = last
        return frame if raw else clean_interactions(frame)

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
        features, seen, _ = self.user_context_and_generation(user_id, generation=False)
        return features, seen

    @_guard
    def user_context_and_generation(
        self, user_id: str, *, generation: bool = True
    ) -> tuple[dict[str, float] | None, set[str], int]:
        """:meth:`user_context` and the item metadata generation (``store/metadata.py``)
        in the same pipeline (one round trip on one server; the counter is another slot
        in a cluster)."""
        user_id = _check_id(user_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.key("users", user_id))
        pipe.smembers(self.seen_key(user_id))
        if generation:
            pipe.get(self.metadata_generation_key)
        raw, seen, *gen = pipe.execute()
        return (
            (_features(raw) if raw else None),
            {_s(i) for i in seen},
            metadata_gen(gen[0] if gen else None),
        )

    def ping(self) -> bool:
        """True if Redis answers."""
        try:
            with redis_errors():
                return bool(self.client.ping())
        except HybridrecError:
            return False
