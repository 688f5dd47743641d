"""What titles cost a recommendation request (issue 10 item 12).

The bundled sample (9,125 titles) in a private redis-server over TCP, a model trained on
it (2 epochs: the cost measured here does not depend on quality), the app built by
``create_app`` and driven in-process with Flask's test client (no HTTP server: what is
left is the app's own work). Measured in the same run, interleaved, ``--requests`` each:

- ``GET /v1/users/{u}/recommendations?k=K`` from an app whose store holds the titles
  (served from the worker's metadata cache once fetched: no HMGET while nothing changes);
- the same with the cache off (an HMGET after scoring, as before the cache);
- the same from an app (another key prefix, same data and model) without any metadata;
- ``metadata_of`` of K ids alone (the one HMGET a request adds) and a bare ``PING``.

Prints medians in microseconds and the share of a request that titles cost.

Usage: python benchmarks/bench_metadata.py [--requests 2000] [--k 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import start_redis  # noqa: E402  (the test suite's redis-server starter)
from hybridrec.config import Settings  # noqa: E402
from hybridrec.io.sample import load_sample  # noqa: E402
from hybridrec.modelstore.registry import Registry, publish_model  # noqa: E402
from hybridrec.modelstore.store import ModelStore  # noqa: E402
from hybridrec.serving import create_app  # noqa: E402
from hybridrec.serving.answers import MetadataCache  # noqa: E402
from hybridrec.store.connection import connect, redis_server_binary  # noqa: E402
from hybridrec.store.features import FeatureStore  # noqa: E402
from hybridrec.training.trainer import fit_model  # noqa: E402


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(redis_server_binary(), Path(tmp) / "redis")
        try:
            sample = load_sample()
            model = None
            apps = {}
            for prefix, titles in (("with", True), ("uncached", True), ("without", False)):
                settings = Settings(
                    redis_url=server.url, key_prefix=prefix, model_store=str(Path(tmp) / "m")
                )
                client = connect(settings)
                store = FeatureStore(client, prefix)
                store.load_features("users", sample.user_features)
                store.load_features("items", sample.item_features)
                store.add_interactions(sample.interactions)
                if titles:
                    store.load_metadata(sample.item_metadata)
                    measured = store
                if model is None:
                    users_f = dict(store.iter_features("users"))
                    items_f = dict(store.iter_features("items"))
                    model = fit_model(sample.interactions, users_f, items_f, {"epochs": 2}, seed=0)
                publish_model(ModelStore(settings.model_store), Registry(client, prefix), model)
                app = create_app(settings)
                assert app.extensions["hybridrec"].reloader.wait_ready(60)
                if prefix == "uncached":  # every answer fetches its titles (one HMGET)
                    app.extensions["hybridrec"].metadata_cache = MetadataCache(capacity=0)
                apps[prefix] = app
            users = sorted(sample.interactions["user_id"].unique())
            rng = np.random.default_rng(0)
            picks = [users[i] for i in rng.integers(len(users), size=args.requests)]
            ids = sample.item_metadata["id"].tolist()[: args.k]

            def request(app, user: str) -> float:
                t0 = time.perf_counter()
                body = app.test_client().get(f"/v1/users/{user}/recommendations?k={args.k}")
                elapsed = time.perf_counter() - t0
                assert len(body.get_json()["items"]) == args.k
                return elapsed

            for user in picks[:200]:  # warm up
                for app in apps.values():
                    request(app, user)
            with_titles, uncached, without, hmget, ping = [], [], [], [], []
            samples = {"with": with_titles, "uncached": uncached, "without": without}
            for n, user in enumerate(picks):  # interleaved, in turn first: the same load
                for name in list(samples)[n % 3 :] + list(samples)[: n % 3]:
                    samples[name].append(request(apps[name], user))
                t0 = time.perf_counter()
                measured.metadata_of(ids)
                hmget.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                measured.client.ping()
                ping.append(time.perf_counter() - t0)
            first = apps["with"].test_client().get(f"/v1/users/{users[0]}/recommendations")
            assert "title" in first.get_json()["items"][0]
            a, b, h = median_us(with_titles), median_us(without), median_us(hmget)
            u = median_us(uncached)
            print(f"{args.requests} requests each, k={args.k}, medians in microseconds")
            print(f"  request, titles stored          {a:8.0f}   (the worker's metadata cache)")
            print(f"  request, titles, cache off      {u:8.0f}   (an HMGET per answer)")
            print(f"  request, no metadata stored     {b:8.0f}")
            print(f"  cache vs an HMGET per answer: {a - u:+.0f} us ({u / a:.2f}x)")
            print(f"  metadata_of({args.k} ids) alone       {h:8.0f}")
            print(f"  PING                            {median_us(ping):8.0f}")
            print(f"  titles stored vs none: {a - b:+.0f} us ({a / b:.2f}x)")
            print(f"  the HMGET round trip is {h / a:.1%} of a request with titles")
            for app in apps.values():
                app.extensions["hybridrec"].close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
