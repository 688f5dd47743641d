"""The model registry in Redis: which version serves, the history, status and metrics.

Keys, all under the hash tag ``{P:registry}`` (one slot, so the Lua scripts that move the
pointer are atomic in a Redis Cluster too)::

    {P:registry}:current     string  the serving version
    {P:registry}:history     list    pointer moves, oldest first (last 1000)
    {P:registry}:generation  string  counter, +1 at each pointer move: cheap to poll
    {P:registry}:versions    zset    version -> first recorded (unix ms)
    {P:registry}:status      hash    version -> candidate | published | refused | rolled_back
    {P:registry}:v:<version> hash    field -> JSON value (metrics, created_at, ...)

Each pointer move also publishes ``"<generation> <version>"`` on the channel
``P:registry:changes``. Values are JSON text, never pickles.

The service functions :func:`publish_model`, :func:`promote_model` and
:func:`rollback_model` keep the order that makes a crash harmless: the whole artifact is
written, synced, renamed and verified in the model store before the pointer moves, so the
pointer always names a whole, loadable version.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import HybridrecError
from ..store.connection import redis_errors
from .store import ModelStore

__all__ = [
    "Registry",
    "RegistryError",
    "STATUSES",
    "promote_model",
    "publish_model",
    "rollback_model",
    "store_model",
]

STATUSES = ("candidate", "published", "refused", "rolled_back")
HISTORY_MAX = 1000
_guard = redis_errors("the model registry (Redis)")

# KEYS: current, history, generation, versions, status
# ARGV: version, now_ms, mode (publish | promote | force), channel, history_max
# -> {generation, outcome}; outcome: moved | same | unknown | refused
_MOVE = """
local v, mode = ARGV[1], ARGV[3]
if mode ~= 'publish' then
  if not redis.call('ZSCORE', KEYS[4], v) then return {0, 'unknown'} end
  if mode ~= 'force' and redis.call('HGET', KEYS[5], v) == 'refused' then
    return {0, 'refused'}
  end
end
redis.call('ZADD', KEYS[4], 'NX', ARGV[2], v)
redis.call('HSET', KEYS[5], v, 'published')
if redis.call('GET', KEYS[1]) == v then
  return {tonumber(redis.call('GET', KEYS[3]) or '0'), 'same'}
end
redis.call('SET', KEYS[1], v)
redis.call('RPUSH', KEYS[2], v)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
local gen = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[4], gen .. ' ' .. v)
return {gen, 'moved'}
"""

# KEYS: current, history, generation, status
# ARGV: expected target ('' = any), channel
# -> {generation, outcome, target}; outcome: moved | none | conflict
_ROLLBACK = """
local cur = redis.call('GET', KEYS[1])
local hist = redis.call('LRANGE', KEYS[2], 0, -1)
local i = #hist
while i > 0 and hist[i] == cur do i = i - 1 end
if i == 0 then return {0, 'none', ''} end
local target = hist[i]
if ARGV[1] ~= '' and ARGV[1] ~= target then return {0, 'conflict', target} end
redis.call('LTRIM', KEYS[2], 0, i - 1)
redis.call('SET', KEYS[1], target)
if cur then redis.call('HSET', KEYS[4], cur, 'rolled_back') end
redis.call('HSET', KEYS[4], target, 'published')
local gen = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[2], gen .. ' ' .. target)
return {gen, 'moved', target}
"""


class RegistryError(HybridrecError):
    """A registry operation is not possible (unknown or refused version, no history)."""


def _s(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


class Registry:
    """The current model version and its history, shared by every process through Redis.

    ``client`` is a redis-py ``Redis`` or ``RedisCluster``; Redis being unreachable
    raises :class:`~hybridrec.errors.StoreUnavailable`.
    """

    def __init__(self, client: Any, prefix: str = "hybridrec"):
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"key prefix {prefix!r} must be non-empty and without braces")
        self.client = client
        self.prefix = prefix
        tag = f"{{{prefix}:registry}}"
        self._current = f"{tag}:current"
        self._history = f"{tag}:history"
        self._generation = f"{tag}:generation"
        self._versions = f"{tag}:versions"
        self._status = f"{tag}:status"
        self._info_prefix = f"{tag}:v:"
        self.channel = f"{prefix}:registry:changes"
        self._move = client.register_script(_MOVE) if client is not None else None
        self._rollback = client.register_script(_ROLLBACK) if client is not None else None

    # -- reading ------------------------------------------------------------------------

    @_guard
    def current(self) -> str | None:
        """The serving version, or None before the first publish."""
        return _s(self.client.get(self._current))

    @_guard
    def generation(self) -> int:
        """Number of pointer moves so far: poll it, reload when it changes."""
        return int(self.client.get(self._generation) or 0)

    @_guard
    def history(self) -> list[str]:
        """Versions the pointer moved to, oldest first (rollbacks pop the newest)."""
        return [_s(v) for v in self.client.lrange(self._history, 0, -1)]

    @_guard
    def info(self, version: str) -> dict[str, Any] | None:
        """What was recorded about ``version`` (status, metrics, ...), or None if unknown."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zscore(self._versions, version)
        pipe.hget(self._status, version)
        pipe.hgetall(self._info_prefix + version)
        pipe.get(self._current)
        recorded, status, fields, current = pipe.execute()
        if recorded is None:
            return None
        return self._entry(version, recorded, status, fields, _s(current))

    @staticmethod
    def _entry(version: str, recorded: Any, status: Any, fields: dict, current: str | None):
        out: dict[str, Any] = {_s(k): json.loads(v) for k, v in fields.items()}
        out.update(
            version=version,
            status=_s(status) or "candidate",
            current=version == current,
            recorded_at=round(float(recorded) / 1000, 3),
        )
        return out

    @_guard
    def versions(self) -> list[dict[str, Any]]:
        """Every recorded version's info (plus ``version``, ``current``), oldest first."""
        listed = self.client.zrange(self._versions, 0, -1, withscores=True)
        if not listed:
            return []
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self._current)
        pipe.hgetall(self._status)
        for version, _score in listed:
            pipe.hgetall(self._info_prefix + _s(version))
        current, statuses, *infos = pipe.execute()
        statuses = {_s(k): _s(v) for k, v in statuses.items()}
        return [
            self._entry(_s(v), score, statuses.get(_s(v)), fields, _s(current))
            for (v, score), fields in zip(listed, infos, strict=True)
        ]

    @_guard
    def fallback_candidates(self, exclude: str | None = None) -> list[str]:
        """Versions to serve when the current one cannot be loaded, best first: those the
        pointer moved to, most recent first, then the other published ones, newest first.
        Refused and rolled-back versions are left out, and so is ``exclude``."""
        listed = {v["version"]: v for v in self.versions()}
        ok = {v for v, info in listed.items() if info["status"] == "published" and v != exclude}
        order = [v for v in reversed(self.history()) if v in ok]
        order += sorted(ok, key=lambda v: listed[v]["recorded_at"], reverse=True)
        return list(dict.fromkeys(order))

    # -- writing ------------------------------------------------------------------------

    @_guard
    def record(self, version: str, info: dict[str, Any]) -> None:
        """Record or update what is known about ``version``: fields merge, JSON-encoded.

        ``info["status"]`` (optional) is one of :data:`STATUSES`.
        """
        fields = dict(info)
        status = fields.pop("status", None)
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        for reserved in ("version", "current", "recorded_at"):
            fields.pop(reserved, None)
        pipe = self.client.pipeline(transaction=True)  # one slot: MULTI is fine in a cluster
        pipe.zadd(self._versions, {version: int(time.time() * 1000)}, nx=True)
        if status is not None:
            pipe.hset(self._status, version, status)
        if fields:
            pipe.hset(
                self._info_prefix + version,
                mapping={k: json.dumps(v, sort_keys=True) for k, v in fields.items()},
            )
        pipe.execute()

    def publish(self, version: str, info: dict[str, Any] | None = None) -> int:
        """Record ``info`` and make ``version`` current; return the new generation.

        The caller has verified the artifact (see :func:`publish_model`).
        """
        self.record(version, {**(info or {}), "published_at": time.time()})
        return self._move_to(version, "publish")

    def promote(self, version: str, force: bool = False) -> int:
        """Make a recorded ``version`` current; a refused one only with ``force``."""
        return self._move_to(version, "force" if force else "promote")

    @_guard
    def _move_to(self, version: str, mode: str) -> int:
        keys = [self._current, self._history, self._generation, self._versions, self._status]
        args = [version, int(time.time() * 1000), mode, self.channel, HISTORY_MAX]
        generation, outcome = self._move(keys=keys, args=args)
        outcome = _s(outcome)
        if outcome == "unknown":
            raise RegistryError(
                f"model version {version!r} is not in the registry; `hybridrec models list` "
                "shows the known versions"
            )
        if outcome == "refused":
            raise RegistryError(
                f"model version {version!r} was refused by the quality gate; promote it "
                "anyway with --force"
            )
        return int(generation)

    @_guard
    def rollback_target(self) -> str | None:
        """The version :meth:`rollback` would move to, or None."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self._current)
        pipe.lrange(self._history, 0, -1)
        current, history = pipe.execute()
        current = _s(current)
        earlier = [_s(v) for v in history]
        while earlier and earlier[-1] == current:
            earlier.pop()
        return earlier[-1] if earlier else None

    @_guard
    def rollback(self, expect: str | None = None) -> str:
        """Move the pointer back to the previous distinct version in history; return it.

        With ``expect``, fail instead of moving if that is no longer the target (someone
        moved the pointer meanwhile).
        """
        keys = [self._current, self._history, self._generation, self._status]
        _gen, outcome, target = self._rollback(keys=keys, args=[expect or "", self.channel])
        outcome, target = _s(outcome), _s(target)
        if outcome == "none":
            raise RegistryError(
                "nothing to roll back to: the history has no version before the current one"
            )
        if outcome == "conflict":
            raise RegistryError(
                f"the registry changed meanwhile (rollback would now go to {target!r}, "
                f"not {expect!r}); check `hybridrec models list` and retry"
            )
        return target


# ---------------------------------------------------------------------- service layer


def store_model(
    model_store: ModelStore,
    registry: Registry,
    model: Any,
    metrics: dict | None = None,
    *,
    extra: dict | None = None,
    version: str | None = None,
    status: str = "candidate",
    info: dict | None = None,
) -> dict[str, Any]:
    """Write a verified artifact, record it (``candidate`` or ``refused``); return the manifest."""
    manifest = model_store.write(model, metrics=metrics, extra=extra, version=version)
    registry.record(manifest["version"], {**_summary(manifest), **(info or {}), "status": status})
    return manifest


def publish_model(
    model_store: ModelStore,
    registry: Registry,
    model: Any,
    metrics: dict | None = None,
    *,
    extra: dict | None = None,
    version: str | None = None,
    info: dict | None = None,
) -> dict[str, Any]:
    """Write, sync, rename and verify the artifact, record it, then move the pointer.

    A crash before the last step leaves the pointer on the previous whole version.
    """
    manifest = store_model(
        model_store, registry, model, metrics, extra=extra, version=version, info=info
    )
    registry.publish(manifest["version"])
    return manifest


def promote_model(
    model_store: ModelStore, registry: Registry, version: str, force: bool = False
) -> int:
    """Verify ``version``'s artifact, then make it current; return the generation.

    A whole artifact the registry has not recorded (a crash after writing) is recorded
    from its manifest first.
    """
    manifest = model_store.verify(version)
    if registry.info(version) is None:
        registry.record(version, {**_summary(manifest), "status": "candidate"})
    return registry.promote(version, force=force)


def rollback_model(model_store: ModelStore, registry: Registry) -> str:
    """Verify the previous version's artifact, then move the pointer back to it."""
    target = registry.rollback_target()
    if target is None:
        raise RegistryError(
            "nothing to roll back to: the history has no version before the current one"
        )
    model_store.verify(target)
    return registry.rollback(expect=target)


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "metrics": manifest.get("metrics", {}),
        "created_at": manifest.get("created_at"),
        "sizes": manifest.get("sizes", {}),
        "hyperparameters": manifest.get("hyperparameters", {}),
    }
