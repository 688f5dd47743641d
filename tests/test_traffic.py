"""Recent traffic for /v1/stats: histogram quantiles (property-based, against the exact
quantile of the observations), and rates and quantiles from real Metrics samples."""

from __future__ import annotations

import bisect
import math

from hypothesis import given
from hypothesis import strategies as st

from hybridrec.serving.metrics import _LATENCY_BUCKETS, Metrics
from hybridrec.serving.traffic import (
    Sample,
    TrafficSampler,
    histogram_quantile,
    read_sample,
    traffic_points,
)

BOUNDS = (*_LATENCY_BUCKETS, math.inf)


def _histogram(values: list[float]) -> list[tuple[float, float]]:
    """Cumulative buckets of ``values`` as Prometheus counts them (``le``)."""
    counts = [0] * len(BOUNDS)
    for x in values:
        counts[bisect.bisect_left(BOUNDS, x)] += 1
    out, total = [], 0
    for bound, n in zip(BOUNDS, counts):
        total += n
        out.append((bound, float(total)))
    return out


latencies = st.lists(st.floats(0.0001, 5.0), min_size=1, max_size=200)


@given(latencies, st.floats(0.01, 0.99))
def test_the_estimate_lies_in_the_bucket_of_the_true_quantile(values, q):
    estimate = histogram_quantile(q, _histogram(values))
    ordered = sorted(values)
    rank = math.ceil(q * len(ordered))  # the observation at rank q*n, 1-based
    true = ordered[max(rank, 1) - 1]
    index = bisect.bisect_left(BOUNDS, true)
    lower = 0.0 if index == 0 else BOUNDS[index - 1]
    upper = BOUNDS[index]
    if math.isinf(upper):  # Prometheus answers the largest finite bound
        assert estimate == BOUNDS[-2]
    else:
        assert lower - 1e-12 <= estimate <= upper + 1e-12


@given(latencies, st.floats(0, 1), st.floats(0, 1))
def test_quantiles_grow_with_q(values, a, b):
    low, high = sorted((a, b))
    buckets = _histogram(values)
    assert histogram_quantile(low, buckets) <= histogram_quantile(high, buckets) + 1e-12


def test_an_empty_histogram_has_no_quantile():
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.5, []) is None


def test_rates_and_latency_come_from_the_difference_of_two_samples():
    metrics = Metrics()
    route = "/v1/users/<user_id>/recommendations"
    for _ in range(10):  # before the first sample: not in the interval
        metrics.observe_request(route, "GET", 200, 0.2)
    first = read_sample(metrics, now=100.0)
    for _ in range(98):
        metrics.observe_request(route, "GET", 200, 0.004)
    metrics.observe_request(route, "GET", 404, 0.004)
    metrics.observe_request("/v1/items/<item_id>/features", "PUT", 503, 0.02)
    metrics.observe_request("/v1/stats", "GET", 200, 0.001)  # the console's polling: not traffic
    metrics.observe_request("/metrics", "GET", 200, 0.001)  # not an API route
    second = read_sample(metrics, now=110.0)
    (point,) = traffic_points([first, second])
    assert point["t"] == 110.0
    assert point["requests_per_second"] == 10.0  # 100 requests in 10 s
    assert point["client_errors_per_second"] == 0.1
    assert point["server_errors_per_second"] == 0.1
    assert 3.0 < point["p50_ms"] <= 5.0  # every recommendation took 4 ms: bucket 3..5 ms
    assert 3.0 < point["p99_ms"] <= 5.0  # the 20 ms PUT is not a recommendation route


def test_a_quiet_interval_has_no_latency_and_zero_rates():
    metrics = Metrics()
    a, b = read_sample(metrics, now=1.0), read_sample(metrics, now=6.0)
    (point,) = traffic_points([a, b])
    assert point["requests_per_second"] == 0.0
    assert point["p50_ms"] is None and point["p99_ms"] is None


def test_counters_that_go_back_count_as_zero():
    old = Sample(t=0.0, requests=50.0, latency=((0.1, 50.0), (math.inf, 50.0)))
    new = Sample(t=5.0, requests=3.0, latency=((0.1, 3.0), (math.inf, 3.0)))
    (point,) = traffic_points([old, new])
    assert point["requests_per_second"] == 0.0 and point["p50_ms"] is None


def test_the_sampler_keeps_a_window_and_reads_worker_gauges():
    metrics = Metrics()
    metrics.set_model("v1", 123.0)
    metrics.catalog_items.set(42)
    sampler = TrafficSampler(metrics, interval=60.0, keep=180.0)
    for _ in range(6):
        sampler.take()
    assert len(sampler.recent(3600)) == 4  # keep / interval + 1
    sample = sampler.recent(1)[-1]
    (worker,) = sample.workers
    assert worker["model_version"] == "v1" and worker["catalog_items"] == 42
    metrics.reloads.labels(result="failure").inc()
    assert read_sample(metrics).reloads["failure"] == 1
