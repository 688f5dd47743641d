"""Recent traffic from the service's own Prometheus metrics: request rate and latency
quantiles over the last minutes, for ``GET /v1/stats`` and the web console.

Prometheus counters only grow, so each worker keeps a short history: a background thread
reads the metrics of every worker (the same numbers ``/metrics`` shows, summed over
workers) every ``interval`` seconds and keeps the last hour of samples. The rate and the
latency quantiles of one interval come from the difference of two samples, as
Prometheus' ``rate()`` and ``histogram_quantile()`` compute them. No Flask here.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .metrics import Metrics, multiprocess_dir

__all__ = ["Sample", "TrafficSampler", "histogram_quantile", "read_sample", "traffic_points"]

LATENCY_ROUTES = frozenset(
    {
        "/v1/users/<user_id>/recommendations",
        "/v1/recommendations",
        "/v1/items/<item_id>/similar",
    }
)
"""Routes whose latency the quantiles describe (the answers users wait for)."""

_NOT_TRAFFIC = frozenset({"/v1/stats"})  # the console's own polling


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q``-quantile (0..1) of a histogram, as Prometheus estimates it.

    ``buckets``: ``(upper bound, cumulative count)`` sorted by bound, the last bound
    ``inf``. The quantile is interpolated linearly inside the bucket that holds it (the
    first bucket starts at 0); one in the ``inf`` bucket is the largest finite bound.
    None when the histogram is empty.
    """
    if not buckets or not 0 <= q <= 1:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


@dataclass(frozen=True)
class Sample:
    """Cumulative counts at ``t`` (unix seconds), summed over workers."""

    t: float
    requests: float = 0.0
    client_errors: float = 0.0
    server_errors: float = 0.0
    latency: tuple[tuple[float, float], ...] = ()  # (upper bound, cumulative count)
    reloads: dict[str, float] = field(default_factory=dict)  # result -> count
    item_updates: dict[str, float] = field(default_factory=dict)  # op -> count
    workers: tuple[dict[str, Any], ...] = ()  # per-worker gauges (pid, version, ...)


def _families(metrics: Metrics) -> Iterable[Any]:
    """The metric families of every worker (multiprocess) or of this process."""
    if multiprocess_dir() is None:
        return metrics.registry.collect()
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry.collect()


def read_sample(metrics: Metrics, now: float | None = None) -> Sample:
    """The current totals of ``metrics`` (all workers in multiprocess mode)."""
    requests = client = server = 0.0
    buckets: dict[float, float] = {}
    reloads: dict[str, float] = {}
    updates: dict[str, float] = {}
    workers: dict[str, dict[str, Any]] = {}
    for family in _families(metrics):
        for s in family.samples:
            labels = s.labels
            if s.name == "hybridrec_http_requests_total":
                route = labels.get("route", "")
                if not route.startswith("/v1/") or route in _NOT_TRAFFIC:
                    continue
                requests += s.value
                status = labels.get("status", "")
                if status.startswith("4"):
                    client += s.value
                elif status.startswith("5"):
                    server += s.value
            elif s.name == "hybridrec_http_request_duration_seconds_bucket":
                if labels.get("route") in LATENCY_ROUTES:
                    bound = float(labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + s.value
            elif s.name == "hybridrec_model_reloads_total":
                result = labels.get("result", "")
                reloads[result] = reloads.get(result, 0.0) + s.value
            elif s.name == "hybridrec_item_updates_total":
                op = labels.get("op", "")
                updates[op] = updates.get(op, 0.0) + s.value
            elif s.name in _WORKER_GAUGES:
                pid = labels.get("pid", str(os.getpid()))
                worker = workers.setdefault(pid, {"pid": int(pid) if pid.isdigit() else None})
                if s.name == "hybridrec_model_info":
                    if s.value == 1:
                        worker["model_version"] = labels.get("version")
                else:
                    worker[_WORKER_GAUGES[s.name]] = s.value
    return Sample(
        t=time.time() if now is None else now,
        requests=requests,
        client_errors=client,
        server_errors=server,
        latency=tuple(sorted(buckets.items())),
        reloads=reloads,
        item_updates=updates,
        workers=tuple(workers[p] for p in sorted(workers)),
    )


_WORKER_GAUGES = {
    "hybridrec_model_info": "model_version",
    "hybridrec_catalog_items": "catalog_items",
    "hybridrec_snapshot_age_seconds": "snapshot_age_seconds",
    "hybridrec_store_degraded": "degraded",
}


def _delta_buckets(new: Sample, old: Sample) -> list[tuple[float, float]]:
    before = dict(old.latency)
    return [(b, max(0.0, c - before.get(b, 0.0))) for b, c in new.latency]


def traffic_points(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """One point per pair of consecutive samples: rates per second and latency
    quantiles in milliseconds over that interval (None without requests).

    A counter that went down (a worker restarted in single-process mode) counts as 0.
    """
    points = []
    for old, new in zip(samples, samples[1:]):
        span = new.t - old.t
        if span <= 0:
            continue
        delta = _delta_buckets(new, old)
        p50, p99 = (histogram_quantile(q, delta) for q in (0.5, 0.99))
        points.append(
            {
                "t": round(new.t, 3),
                "requests_per_second": max(0.0, new.requests - old.requests) / span,
                "client_errors_per_second": max(0.0, new.client_errors - old.client_errors) / span,
                "server_errors_per_second": max(0.0, new.server_errors - old.server_errors) / span,
                "p50_ms": None if p50 is None else round(p50 * 1000, 3),
                "p99_ms": None if p99 is None else round(p99 * 1000, 3),
            }
        )
    return points


class TrafficSampler:
    """A daemon thread that samples ``metrics`` every ``interval`` seconds and keeps
    ``keep`` seconds of samples; ``stop()`` ends it."""

    def __init__(self, metrics: Metrics, interval: float = 5.0, keep: float = 3600.0):
        self.metrics = metrics
        self.interval = interval
        self._samples: deque[Sample] = deque(maxlen=max(2, int(keep / interval) + 1))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> TrafficSampler:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hybridrec-traffic", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.take()
            except Exception:  # noqa: BLE001 - a bad metrics file must not end the thread
                pass
            self._stop.wait(self.interval)

    def take(self) -> Sample:
        """Sample now and keep it."""
        sample = read_sample(self.metrics)
        with self._lock:
            self._samples.append(sample)
        return sample

    def recent(self, seconds: float) -> list[Sample]:
        """Samples of the last ``seconds`` (plus the one before, so that the first
        interval is whole), oldest first."""
        with self._lock:
            samples = list(self._samples)
        if not samples:
            return []
        since = samples[-1].t - seconds
        first = next((n for n, s in enumerate(samples) if s.t >= since), len(samples) - 1)
        return samples[max(0, first - 1) :]
