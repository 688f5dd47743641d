"""Prometheus metrics of the API.

With several gunicorn workers, ``hybridrec serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a
fresh directory before any worker imports ``prometheus_client``; every worker then writes
its samples to files there and ``/metrics`` (whichever worker answers) aggregates all
workers: counters and histograms summed, gauges reported per worker (``pid`` label).
Without that variable (one process, tests) each app has its own registry.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "multiprocess_dir"]

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
)  # fmt: skip


def multiprocess_dir() -> str | None:
    """The multiprocess directory when this process writes multiprocess samples."""
    from prometheus_client import values

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return None
    # The value class is chosen when prometheus_client is first imported: if that was
    # before the variable was set, this process still keeps samples in memory.
    return path if values.ValueClass is not values.MutexValue else None


class Metrics:
    """Every metric of one serving process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        live = {"multiprocess_mode": "liveall"}
        self.requests = Counter(
            "hybridrec_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "hybridrec_http_request_duration_seconds",
            "Time from request start to response, by route template and method.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.recommendations = Counter(
            "hybridrec_recommendations",
            "Recommendation answers by strategy, user case and degraded flag.",
            ["strategy", "user_case", "degraded"],
            registry=r,
        )
        self.unknown_features = Counter(
            "hybridrec_unknown_features",
            "Feature names outside the model's vocabulary that were ignored.",
            ["side"],
            registry=r,
        )
        self.errors = Counter(
            "hybridrec_errors", "Error responses by error code.", ["code"], registry=r
        )
        self.reloads = Counter(
            "hybridrec_model_reloads",
            "Model loads by result (success, failure).",
            ["result"],
            registry=r,
        )
        self.item_updates = Counter(
            "hybridrec_item_updates",
            "Catalog changes applied to the serving snapshot (put, delete, resync).",
            ["op"],
            registry=r,
        )
        self.store_errors = Counter(
            "hybridrec_store_errors",
            "Feature store (Redis) failures seen by the API, by where they happened.",
            ["where"],
            registry=r,
        )
        self.model_info = Gauge(
            "hybridrec_model_info",
            "1 for the model version this worker serves.",
            ["version"],
            registry=r,
            **live,
        )
        self.model_loaded = Gauge(
            "hybridrec_model_loaded_timestamp_seconds",
            "Unix time when this worker loaded its current model version.",
            registry=r,
            **live,
        )
        self.snapshot_age = Gauge(
            "hybridrec_snapshot_age_seconds",
            "Seconds since this worker built the snapshot of its current model version.",
            registry=r,
            **live,
        )
        self.catalog_items = Gauge(
            "hybridrec_catalog_items",
            "Items this worker can recommend now.",
            registry=r,
            **live,
        )
        self.overlay_items = Gauge(
            "hybridrec_overlay_items",
            "Items served from feature-store features instead of the artifact.",
            registry=r,
            **live,
        )
        self.model_fallback = Gauge(
            "hybridrec_model_fallback",
            "1 while the registry's current version fails to load and this worker serves "
            "an older healthy version instead.",
            registry=r,
            **live,
        )
        self.store_down = Gauge(
            "hybridrec_store_degraded",
            "1 while the feature store is unreachable and answers are degraded.",
            registry=r,
            **live,
        )
        self.retrievals = Counter(
            "hybridrec_retrievals",
            "Personalized answers by the search that gave them (exact, approximate).",
            ["retrieval"],
            registry=r,
        )
        self.retrieval_recall = Gauge(
            "hybridrec_retrieval_recall",
            "Recall@10 of this worker's index against exact scoring, measured on a sample "
            "of users when the model version was loaded (1 when serving exactly).",
            registry=r,
            **live,
        )
        self.retrieval_approximate = Gauge(
            "hybridrec_retrieval_approximate",
            "1 while this worker answers from an approximate index, 0 when exactly.",
            registry=r,
            **live,
        )
        self._version: str | None = None
        self._children: dict[tuple, tuple] = {}  # labels() resolved once per label set

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = ("request", route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
        children[0].inc()
        children[1].observe(seconds)

    def count_recommendation(self, strategy: str, user_case: str, degraded: bool) -> None:
        key = ("recommendation", strategy, user_case, degraded)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.recommendations.labels(
                strategy, user_case, "true" if degraded else "false"
            )
        child.inc()

    def count_retrieval(self, retrieval: str) -> None:
        key = ("retrieval", retrieval)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.retrievals.labels(retrieval)
        child.inc()

    def set_retrieval(self, approximate: bool, recall: float | None) -> None:
        self.retrieval_approximate.set(1 if approximate else 0)
        self.retrieval_recall.set(1.0 if recall is None else recall)

    def set_model(self, version: str, loaded_at: float) -> None:
        if self._version is not None and self._version != version:
            self.model_info.labels(version=self._version).set(0)
        self.model_info.labels(version=version).set(1)
        self.model_loaded.set(loaded_at)
        self._version = version

    def exposition(self) -> bytes:
        """The text exposition: every worker's samples in multiprocess mode."""
        if multiprocess_dir() is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
