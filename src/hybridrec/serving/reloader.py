"""The per-worker background thread that keeps the serving snapshot current.

:class:`ServingState` holds one reference to the current :class:`Snapshot`; requests read
it once and use that snapshot to the end, so a request never sees half a model. Only the
:class:`Reloader` thread replaces it. Each tick (``TICK`` seconds, or at once when woken):

1. while the feature store is marked down, PING it; the first answer ends degraded mode;
2. every ``reload_interval`` seconds (or when asked), read the registry's generation
   counter (one GET); when it moved and the current version differs from the served one,
   load and verify the artifact, build the next snapshot, reconcile it with the store's
   catalog and swap. A failure keeps the old snapshot, logs one structured line and
   counts in ``hybridrec_model_reloads_total{result="failure"}``; the same version is
   retried after ``RETRY_FAILED`` seconds, or at once on a new publish or a forced reload;
3. read the item change feed after the last cursor, fetch the current features of the
   changed items and derive the next snapshot (new items appended, changed items
   re-represented, deleted items masked).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import logs
from ..errors import HybridrecError, StoreUnavailable
from ..store.features import DIGEST_MODULUS, RESYNC, item_digest
from .metrics import Metrics
from .snapshot import Snapshot, release_memory

__all__ = [
    "CatalogPosition",
    "Reloader",
    "ReloadResult",
    "ServingState",
    "log_event",
    "sync_catalog",
]

log = logging.getLogger("hybridrec.serving")

TICK = 0.25  # seconds between change-feed polls: new items are live within half a second
RETRY_FAILED = 30.0  # seconds before a version that failed to load is tried again
FALLBACK_TRIES = 5  # healthy-looking versions tried when the current one fails to load
RECONCILE_CHECK = 1.0  # seconds between cheap catalog checks (clock, size and digest)
RECONCILE_FULL = 300.0  # seconds between full comparisons of every item's sequence


class CatalogPosition:
    """How far a snapshot follows the store's item catalog.

    ``seqs``: per item, the sequence of the state applied (``> 0`` put, ``< 0`` deleted);
    a change-feed entry or a state not newer than it is skipped, so changes apply in
    sequence order whatever order they arrive in. ``clock``: the newest sequence seen.
    ``live`` and ``digest`` summarise the put items as the store does (see
    :func:`~hybridrec.store.features.item_digest`), so that one read compares them.
    """

    def __init__(self, cursor: str, clock: int, seqs: dict[str, int] | None = None):
        self.cursor = cursor
        self.clock = clock
        self.seqs: dict[str, int] = {}
        self.live = 0
        self.digest = 0
        for item_id, seq in (seqs or {}).items():
            self.set(item_id, seq)

    def set(self, item_id: str, seq: int) -> None:
        """Record the state applied for ``item_id`` (``0``: forget it)."""
        old = self.seqs.pop(item_id, 0)
        if old > 0:
            self.live -= 1
            self.digest = (self.digest - item_digest(item_id, old)) % DIGEST_MODULUS
        if seq > 0:
            self.live += 1
            self.digest = (self.digest + item_digest(item_id, seq)) % DIGEST_MODULUS
        if seq:
            self.seqs[item_id] = seq


def _catalog_changes(
    snapshot: Snapshot,
    catalog: dict[str, dict],
    feed: list[tuple[str, str, int]],
    deleted: set[str] = frozenset(),
) -> dict[str, dict | None]:
    """``{item_id: features | None}`` that brings ``snapshot`` in line with the catalog;
    ``deleted``: the store's tombstones (items deleted and not put since)."""
    changes: dict[str, dict | None] = dict(catalog)
    for item_id in deleted:
        if item_id not in catalog and item_id in snapshot:
            changes[item_id] = None
    for item_id, op in {change[0]: change[1] for change in feed}.items():  # the last op
        if op == "delete" and item_id not in catalog:
            changes[item_id] = None
    for item_id in snapshot.store_only_ids():
        if item_id not in catalog:
            changes[item_id] = None
    return changes


def sync_catalog(snapshot: Snapshot, feature_store) -> tuple[Snapshot, CatalogPosition]:
    """``snapshot`` brought in line with the store's whole item catalog, and the position
    to follow the change feed from; raises :class:`HybridrecError` when the store is down.

    Tombstones of items the model knows are retired (kept past the tombstone cap).
    """
    clock, _, cursor, _ = feature_store.item_position()  # first: later changes are replayed
    live, tombstones = feature_store.item_sequences()
    states = feature_store.item_states(list(live))
    _, feed = feature_store.item_changes_since("0-0")
    catalog = {i: f for i, (seq, f) in states.items() if seq > 0}
    seqs = {i: -seq for i, seq in tombstones.items()}
    seqs.update({i: seq for i, (seq, _) in states.items() if seq != 0})
    deleted = {i for i, seq in seqs.items() if seq < 0}
    known = snapshot.model.item_space_.entities
    retire = [i for i in deleted if i in known]
    if retire:
        feature_store.retire_items(retire)
    position = CatalogPosition(cursor, clock, seqs)
    return snapshot.with_items(_catalog_changes(snapshot, catalog, feed, deleted)), position


def log_event(level: int, event: str, **fields: Any) -> None:
    """One structured (JSON) log line of the serving logger."""
    logs.log_event(log, level, event, **fields)


class ServingState:
    """What requests read: the current snapshot and whether the store answers.

    ``fallback`` is None while the registry's current version is served (or nothing is);
    otherwise ``{"registry_version", "reason", "since"}``: that version fails to load and
    an older healthy one is served instead.
    """

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.store_down_since: float | None = None  # time.monotonic() of the failure
        self.fallback: dict[str, Any] | None = None

    @property
    def store_ok(self) -> bool:
        return self.store_down_since is None

    def mark_store_down(self) -> None:
        if self.store_down_since is None:
            self.store_down_since = time.monotonic()


@dataclass(frozen=True)
class ReloadResult:
    """Outcome of a reload asked through :meth:`Reloader.reload_now`."""

    version: str | None  # the version served afterwards
    changed: bool  # a new version was swapped in
    error: str | None = None


class Reloader:
    """The background thread of one worker; ``start()`` it, ``stop()`` it."""

    def __init__(
        self,
        state: ServingState,
        *,
        registry: Any,
        model_store: Any,
        feature_store: Any,
        metrics: Metrics,
        reload_interval: float = 2.0,
        tick: float = TICK,
        on_swap: Callable[[Snapshot], None] | None = None,
        reconcile_interval: float = RECONCILE_CHECK,
        snapshot_options: dict | None = None,
    ):
        self.state = state
        self.registry = registry
        self.model_store = model_store
        self.feature_store = feature_store
        self.metrics = metrics
        self.reload_interval = reload_interval
        self.tick = tick
        self.on_swap = on_swap
        self.reconcile_interval = reconcile_interval
        # Snapshot.from_model options (retrieval: approximate, min_recall, ...)
        self.snapshot_options = dict(snapshot_options or {})
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Condition()
        self._requests = 0  # reload requests asked ...
        self._served = 0  # ... and handled
        self._last_result = ReloadResult(None, False)
        self._force = False
        self._generation: object = object()  # never equal to a real generation
        self._next_registry_check = 0.0
        self._failed: dict[str, float] = {}  # version -> monotonic time of the failure
        self._position: CatalogPosition | None = None  # None: full catalog sync needed
        self._next_check = 0.0  # monotonic time of the next catalog check ...
        self._next_reconcile = 0.0  # ... and of the next full reconciliation
        self._thread: threading.Thread | None = None
        self._item_polls = 0  # change-feed polls finished (guarded by _done)

    # -- control --------------------------------------------------------------------------

    def start(self) -> Reloader:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="hybridrec-reloader", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Poll the change feed now (after a local item write)."""
        self._wake.set()

    def catch_up(self, timeout: float = 1.0) -> bool:
        """Wait until a change-feed poll that started after this call has finished.

        For a lookup of an item this worker does not know yet: an item put through
        another worker a moment ago is then found, without waiting for the next tick.
        """
        with self._done:
            target = self._item_polls + 2  # the poll under way may predate the call
        self._wake.set()
        deadline = time.monotonic() + timeout
        with self._done:
            while self._item_polls < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._done.wait(left)
                self._wake.set()
        return True

    def reload_now(self, timeout: float = 60.0, *, force: bool = False) -> ReloadResult:
        """Check the registry now and wait for the outcome.

        ``force`` reloads even when the served version is current (a fresh snapshot).
        """
        with self._done:
            self._requests += 1
            ticket = self._requests
            self._force = self._force or force
        self._wake.set()
        deadline = time.monotonic() + timeout
        with self._done:
            while self._served < ticket:
                left = deadline - time.monotonic()
                if left <= 0:
                    return ReloadResult(self._version(), False, "timed out waiting for reload")
                self._done.wait(left)
            return self._last_result

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Block until a snapshot is served; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.state.snapshot is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _version(self) -> str | None:
        snap = self.state.snapshot
        return None if snap is None else snap.version

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick_once()
            except Exception as exc:  # the thread must survive anything
                log_event(logging.ERROR, "reloader_error", error=repr(exc))
            finally:
                with self._done:
                    self._item_polls += 1
                    self._done.notify_all()
            self._wake.wait(self.tick)
            self._wake.clear()

    def _tick_once(self) -> None:
        if not self.state.store_ok:
            self._probe_store()
        with self._done:
            asked, force = self._requests, self._force
            self._force = False
        now = time.monotonic()
        if asked > self._served or now >= self._next_registry_check:
            self._next_registry_check = now + self.reload_interval
            result = self._check_registry(asked=asked > self._served, force=force)
            with self._done:
                self._last_result = result
                self._served = asked
                self._done.notify_all()
        if self.state.snapshot is not None and self.state.store_ok:
            self._follow_items()
        self._update_gauges()

    def _probe_store(self) -> None:
        try:
            answered = self.feature_store.ping()
        except HybridrecError:  # not even connected yet
            answered = False
        if answered:
            down = self.state.store_down_since
            self.state.store_down_since = None
            self.metrics.store_down.set(0)
            self._position = None  # the store may have lost or changed data: full sync
            log_event(
                logging.WARNING,
                "store_recovered",
                down_seconds=round(time.monotonic() - down, 3) if down else None,
            )

    def store_failed(self, where: str, exc: Exception) -> None:
        """Count a feature-store failure; an unreachable store starts degraded mode."""
        self.metrics.store_errors.labels(where=where).inc()
        if not isinstance(exc, StoreUnavailable):  # e.g. a key of the wrong type
            log_event(logging.ERROR, "store_error", where=where, error=str(exc))
            return
        if self.state.store_ok:
            log_event(logging.WARNING, "store_unavailable", where=where, error=str(exc))
        self.state.mark_store_down()
        self.metrics.store_down.set(1)

    # -- model versions ---------------------------------------------------------------------

    def _check_registry(self, *, asked: bool, force: bool) -> ReloadResult:
        """Load the registry's current version if it is new (``asked``: check now and
        retry a failed version; ``force``: reload even the served version)."""
        served = self._version()
        now = time.monotonic()
        retry_due = served is None or any(now - t >= RETRY_FAILED for t in self._failed.values())
        try:
            generation = self.registry.generation()
            published = generation != self._generation
            if not (published or asked or force or retry_due):
                return ReloadResult(served, False)
            version = self.registry.current()
        except HybridrecError as exc:  # StoreUnavailable included
            self.store_failed("registry", exc)
            return ReloadResult(served, False, "the registry (Redis) is unavailable")  # log: why
        self._generation = generation
        if version is None:
            return ReloadResult(served, False, None if served else "no model is published yet")
        if version == served and not force:
            self._end_fallback(version)
            return ReloadResult(served, False)
        failed_at = self._failed.get(version)
        if failed_at is not None and not (published or asked) and now - failed_at < RETRY_FAILED:
            return ReloadResult(served, False, f"version {version} failed to load")
        result = self._load(version, previous=served, current=True)
        if result.error is not None and served is None:
            result = self._fall_back(version, result.error)
        elif result.error is not None:
            self._start_fallback(version, served, result.error)
        return result

    # -- a current version that fails to load ------------------------------------------------

    def _fall_back(self, failed: str, error: str) -> ReloadResult:
        """Nothing served and the current version ``failed``: serve the newest healthy
        published version instead (a few are tried), and keep watching the registry."""
        try:
            candidates = self.registry.fallback_candidates(exclude=failed)
        except HybridrecError as exc:
            self.store_failed("registry", exc)
            return ReloadResult(None, False, error)
        now = time.monotonic()
        tried = 0
        for version in candidates:
            if tried == FALLBACK_TRIES:
                break
            if now - self._failed.get(version, -RETRY_FAILED) < RETRY_FAILED:
                continue  # failed a moment ago
            tried += 1
            if self._load(version, previous=None, fallback_for=(failed, error)).error is None:
                return ReloadResult(
                    version, True, f"version {failed} failed to load; serving {version}"
                )
        return ReloadResult(None, False, error)

    def _start_fallback(self, failed: str, serving: str, error: str) -> None:
        current = self.state.fallback
        if current is None or current["registry_version"] != failed:
            log_event(
                logging.ERROR,
                "model_fallback",
                registry_version=failed,
                serving=serving,
                error=error,
            )
            self.state.fallback = {
                "registry_version": failed,
                # the class only: the message names files, which HTTP bodies must not
                "reason": f"fails to load ({error.partition(':')[0]}); the log says why",
                "since": time.time(),
            }
        self.metrics.model_fallback.set(1)

    def _end_fallback(self, version: str) -> None:
        if self.state.fallback is None:
            return
        log_event(
            logging.WARNING,
            "model_fallback_ended",
            registry_version=self.state.fallback["registry_version"],
            serving=version,
        )
        self.state.fallback = None
        self.metrics.model_fallback.set(0)

    def _load(
        self,
        version: str,
        previous: str | None,
        current: bool = False,
        fallback_for: tuple[str, str] | None = None,
    ) -> ReloadResult:
        """Load ``version`` and swap it in; ``current``: it is the registry's current
        version, so a fallback ends with the same swap (a request never sees the new
        version still marked as a fallback); ``fallback_for`` ``(failed version,
        error)``: it stands in for the registry's version, marked so before the swap (a
        request never sees the stand-in unmarked)."""
        started = time.perf_counter()
        try:
            model = self.model_store.load(version)
            # a local artifact's directory holds the mapped serving files (items, index)
            local = getattr(self.model_store, "is_local", False)
            directory = self.model_store.path(version) if local else None
            snapshot = Snapshot.from_model(
                model, version=version, directory=directory, **self.snapshot_options
            )
        except Exception as exc:  # any failure keeps the old snapshot
            self._failed[version] = time.monotonic()
            self.metrics.reloads.labels(result="failure").inc()
            log_event(
                logging.ERROR,
                "model_load_failed",
                version=version,
                serving=previous,
                error=f"{type(exc).__name__}: {exc}",
            )
            return ReloadResult(previous, False, f"{type(exc).__name__}: {exc}")
        self._failed.pop(version, None)
        loaded = time.perf_counter()
        snapshot, position = self._sync_catalog(snapshot)
        if current:
            self._end_fallback(version)
        elif fallback_for is not None:
            self._start_fallback(fallback_for[0], version, fallback_for[1])
        self._swap(snapshot)
        self._position = position
        release_memory()
        self.metrics.reloads.labels(result="success").inc()
        self.metrics.set_model(version, snapshot.loaded_at)
        info = snapshot.retrieval
        self.metrics.set_retrieval(info.kind == "approximate", info.recall)
        log_event(
            logging.INFO,
            "model_loaded",
            version=version,
            previous=previous,
            items=snapshot.n_items,
            overlay_items=snapshot.overlay_items,
            load_seconds=round(loaded - started, 3),
            catalog_seconds=round(time.perf_counter() - loaded, 3),
            catalog_synced=position is not None,
            retrieval=info.as_dict(),
        )
        return ReloadResult(version, version != previous)

    def _swap(self, snapshot: Snapshot) -> None:
        self.state.snapshot = snapshot  # one reference: requests see old or new, whole
        if self.on_swap is not None:
            self.on_swap(snapshot)

    # -- the catalog ------------------------------------------------------------------------

    def _sync_catalog(self, snapshot: Snapshot) -> tuple[Snapshot, CatalogPosition | None]:
        """Apply the whole catalog to ``snapshot``; ``(snapshot, position or None)``.

        Items in the catalog get their current features; a model item with a tombstone,
        or whose last change in the feed is a delete, disappears, and so does an item only
        the store knew that left the catalog. Without the store, the artifact's items are
        served as trained and the sync is retried (position None).
        """
        try:
            synced, position = sync_catalog(snapshot, self.feature_store)
        except HybridrecError as exc:
            self.store_failed("catalog", exc)
            return snapshot, None
        self._next_reconcile = time.monotonic() + RECONCILE_FULL
        return synced, position

    def _follow_items(self) -> None:
        snap = self.state.snapshot
        if snap is None:
            return
        if self._position is None:  # no sync yet for this snapshot, or the store came back
            synced, position = self._sync_catalog(snap)
            if position is not None:
                if synced is not snap:
                    self._swap(synced)
                self._position = position
                self.metrics.item_updates.labels(op=RESYNC).inc()
            return
        position = self._position
        fs = self.feature_store
        try:
            cursor, feed = fs.item_changes_since(position.cursor)
            if feed and feed[0][1] == RESYNC:  # the capped feed lost changes
                self._reconcile(snap, "feed_trimmed")
                return
            newest: dict[str, int] = {}
            for item_id, _op, seq in feed:
                newest[item_id] = max(seq, newest.get(item_id, 0))
            stale = [i for i, seq in newest.items() if seq > abs(position.seqs.get(i, 0))]
            states = fs.item_states(stale) if stale else {}
            self._apply(snap, states)
        except HybridrecError as exc:
            self.store_failed("item_changes", exc)
            return
        position.cursor = cursor
        position.clock = max(position.clock, max(newest.values(), default=0))
        now = time.monotonic()
        if now >= self._next_reconcile:
            self._reconcile(self.state.snapshot, "periodic")
        elif now >= self._next_check:
            self._next_check = now + self.reconcile_interval
            self._check_catalog()

    def _apply(
        self,
        snap: Snapshot,
        states: dict[str, tuple[int, dict | None]],
        force: bool = False,
    ) -> int:
        """Apply item states newer than the ones applied (all of them with ``force``);
        return how many changed the snapshot's view."""
        position = self._position
        seqs = position.seqs
        changes: dict[str, dict | None] = {}
        for item_id, (seq, features) in states.items():
            if not force and seq != 0 and abs(seq) <= abs(seqs.get(item_id, 0)):
                continue  # this state, or a newer one, is applied already
            changes[item_id] = features if seq > 0 else None
            position.set(item_id, seq)  # 0: unknown to the store (its tombstone expired)
        if not changes:
            return 0
        nxt = snap.with_items(changes)
        if nxt is not snap:
            self._swap(nxt)
        known = snap.model.item_space_.entities
        retire = [i for i, f in changes.items() if f is None and i in known]
        if retire:  # workers that start later must retire these model items too
            self.feature_store.retire_items(retire)
        for op, n in Counter(
            "put" if f is not None else "delete" for f in changes.values()
        ).items():
            self.metrics.item_updates.labels(op=op).inc(n)
        return len(changes)

    def _check_catalog(self) -> None:
        """The cheap check: when the feed is quiet, the store's clock and catalog size must
        match what this worker applied; otherwise reconcile at once."""
        position = self._position
        try:
            clock, size, cursor, digest = self.feature_store.item_position()
        except HybridrecError as exc:
            self.store_failed("catalog_check", exc)
            return
        if clock < position.clock:
            self._reconcile(self.state.snapshot, "store_went_back")
        elif cursor == position.cursor and (clock, size, digest) != (
            position.clock,
            position.live,
            position.digest,
        ):
            self._reconcile(self.state.snapshot, "mismatch")

    def _reconcile(self, snap: Snapshot | None, reason: str) -> None:
        """Compare every item's sequence with the store's and re-read those that differ;
        heals whatever made this worker diverge (a lost feed, a store restored from an
        older copy). Costs one scan of the catalog's sequences, no features."""
        position = self._position
        if snap is None or position is None:
            return
        started = time.perf_counter()
        self._next_reconcile = time.monotonic() + RECONCILE_FULL
        fs = self.feature_store
        try:
            clock, _, cursor, _ = fs.item_position()
            live, tombstones = fs.item_sequences()
            seqs = position.seqs
            differ = {i for i, seq in live.items() if seqs.get(i) != seq}
            differ.update(i for i, seq in seqs.items() if seq > 0 and i not in live)
            differ.update(i for i, seq in tombstones.items() if seqs.get(i) != -seq and i in snap)
            states = fs.item_states(sorted(differ)) if differ else {}
            healed = self._apply(snap, states, force=True)
        except HybridrecError as exc:
            self.store_failed("reconcile", exc)
            return
        for item_id in [i for i, seq in seqs.items() if seq < 0 and i not in tombstones]:
            position.set(item_id, 0)  # forgotten by the store: keeps this map bounded too
        position.cursor, position.clock = cursor, clock
        if healed:
            self.metrics.item_updates.labels(op="reconcile").inc(healed)
        if healed or reason != "periodic":
            log_event(
                logging.WARNING if healed else logging.INFO,
                "catalog_reconciled",
                reason=reason,
                healed=healed,
                seconds=round(time.perf_counter() - started, 3),
            )

    def _update_gauges(self) -> None:
        snap = self.state.snapshot
        if snap is None:
            return
        self.metrics.snapshot_age.set(time.time() - snap.loaded_at)
        self.metrics.catalog_items.set(snap.n_items)
        self.metrics.overlay_items.set(snap.overlay_items)
