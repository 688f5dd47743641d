"""Serving throughput and latency: hybridrec's API vs the seed's way vs a bare Flask endpoint.

For each synthetic catalog (10k items / 20k users and 100k items / 50k users; 64
components; every user and item has features, both sides have indicators) this script

1. fits a model (one epoch: speed does not depend on quality), loads the features and
   interactions into an embedded Redis and publishes the model;
2. serves, one after the other and with the same gunicorn settings (``--workers`` sync
   workers, BLAS pinned to one thread per worker):
   - **hybridrec**: ``hybridrec serve`` (store round trip, snapshot scoring, top-k, seen
     items excluded);
   - **seed**: a Flask handler that calls ``LightFM.predict`` over all items with the item
     feature matrix on every request, then takes the top k (no store round trip at all:
     a conservative baseline);
   - **bare**: a Flask handler on the same route returning a constant (the framework's
     ceiling on this machine);
3. drives each with ``wrk`` (``--connections`` connections, random known users, ``k=10``)
   for ``--duration`` seconds after a warm-up, and prints req/s, p50/p99 and the ratios.

Run: ``python benchmarks/bench_serving.py`` (about 3 minutes; needs ``wrk``:
``apt-get install -y wrk``). ``--quick`` does the small catalog with short runs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SIZES = {"10k": (10_000, 20_000), "100k": (100_000, 50_000)}
N_ITEM_VOCAB, N_USER_VOCAB = 2_000, 200
PER_USER = 5
HERE = Path(__file__).resolve()


# -- data and model ----------------------------------------------------------------------------


def synthetic(n_items: int, n_users: int, seed: int = 0):
    """Interactions (popularity-skewed) and long feature frames for users and items."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    items = rng.choice(n_items, size=n_users * PER_USER, p=popularity)
    users = np.repeat(np.arange(n_users), PER_USER)
    interactions = pd.DataFrame(
        {"user_id": [f"u{u}" for u in users], "item_id": [f"i{i}" for i in items]}
    ).drop_duplicates()
    item_features = pd.DataFrame(
        {
            "id": [f"i{i}" for i in np.repeat(np.arange(n_items), 3)],
            "feature": [f"f{j}" for j in rng.integers(0, N_ITEM_VOCAB, n_items * 3)],
            "weight": 1.0,
        }
    ).drop_duplicates(["id", "feature"])
    user_features = pd.DataFrame(
        {
            "id": [f"u{u}" for u in np.repeat(np.arange(n_users), 2)],
            "feature": [f"g{j}" for j in rng.integers(0, N_USER_VOCAB, n_users * 2)],
            "weight": 1.0,
        }
    ).drop_duplicates(["id", "feature"])
    return interactions, user_features, item_features


def prepare(root: Path, n_items: int, n_users: int, epochs: int = 20) -> dict:
    """Fit, load the store and publish; return the environment for ``hybridrec serve``."""
    from hybridrec.config import Settings
    from hybridrec.model import HybridLightFM
    from hybridrec.modelstore.registry import Registry, publish_model
    from hybridrec.modelstore.store import ModelStore
    from hybridrec.store.connection import connect
    from hybridrec.store.features import FeatureStore

    settings = Settings(data_dir=root / ".hybridrec", model_store=str(root / "models"))
    t0 = time.perf_counter()
    interactions, user_features, item_features = synthetic(n_items, n_users)
    # How well the snapshot's bounded scan prunes depends on the model: a barely trained
    # one (epochs=1) is bias-dominated and prunes to a few dozen items; a fully trained
    # one does not, and the snapshot then picks the full product (see Snapshot.from_model).
    model = HybridLightFM(no_components=64, epochs=epochs, random_state=0).fit(
        interactions, user_features, item_features, num_threads=2
    )
    fitted = time.perf_counter()
    client = connect(settings)
    store = FeatureStore(client, settings.key_prefix)
    store.load_features("users", user_features, replace=True)
    store.load_features("items", item_features, replace=True)
    store.add_interactions(interactions)
    manifest = publish_model(ModelStore(settings.model_store), Registry(client), model)
    client.close()
    print(
        f"  fit {fitted - t0:.1f} s, store and publish {time.perf_counter() - fitted:.1f} s "
        f"({len(interactions)} interactions)",
        flush=True,
    )
    return {
        "HYBRIDREC_DATA_DIR": str(settings.data_dir),
        "HYBRIDREC_MODEL_STORE": settings.model_store,
        "artifact": ModelStore(settings.model_store).path(manifest["version"]),
    }


# -- the two reference servers ------------------------------------------------------------------


def seed_app(artifact: str):
    """The seed's way: ``LightFM.predict`` over every item, per request."""
    from flask import Flask, jsonify, request
    from lightfm import LightFM

    from hybridrec.modelstore.artifact import load_model

    model = load_model(artifact, with_optimizer=True)  # LightFM.predict checks its state
    n_items = len(model.item_space_.entities)
    all_items = np.arange(n_items, dtype=np.int32)
    external = model.item_space_.entities.external
    app = Flask("seed")

    @app.get("/v1/users/<user_id>/recommendations")
    def recommendations(user_id: str):
        k = int(request.args.get("k", 10))
        user = model.user_space_.entities.get(user_id)
        scores = LightFM.predict(
            model,
            np.full(n_items, user, dtype=np.int32),
            all_items,
            item_features=model.item_matrix_,
            user_features=model.user_matrix_,
            num_threads=1,
        )
        top = np.argpartition(-scores, k)[:k]
        top = top[np.argsort(-scores[top])]
        return jsonify(
            {
                "user_id": user_id,
                "items": [{"item_id": external[i], "score": float(scores[i])} for i in top],
            }
        )

    return app


def bare_app():
    from flask import Flask, jsonify

    app = Flask("bare")
    answer = {"user_id": None, "items": [], "strategy": "constant"}

    @app.get("/v1/users/<user_id>/recommendations")
    def recommendations(user_id: str):
        return jsonify(answer)

    return app


def run_reference(kind: str, port: int, workers: int, artifact: str | None) -> None:
    from functools import partial

    from hybridrec.serving.server import run_app

    # hybridrec serve's default server and worker start-up (BLAS pinned, JSON logs)
    run_app(partial(seed_app, artifact) if kind == "seed" else bare_app, "127.0.0.1", port, workers)


# -- load ---------------------------------------------------------------------------------------


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url_base: str, n_users: int, seconds: float, connections: int, threads: int) -> Result:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        f"math.randomseed({int(time.time())})\n"
        "request = function()\n"
        f"  return wrk.format('GET', '/v1/users/u' .. math.random(0, {n_users - 1}) .."
        " '/recommendations?k=10')\n"
        "end\n"
    )
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    command += ["--latency", "-s", str(script), url_base]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    script.unlink()
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(g) for g in sock.groups()) if sock else 0
    )
    return Result(rps, p50, p99, errors)


def measure(kind: str, env: dict, n_users: int, args) -> Result:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc_env = {k: v for k, v in os.environ.items() if k != "HYBRIDREC_REDIS_URL"}
    proc_env.update({k: v for k, v in env.items() if k.startswith("HYBRIDREC_")})
    proc_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if kind == "hybridrec":
        command = [str(Path(sys.executable).parent / "hybridrec"), "serve"]
        command += ["--port", str(port), "--workers", str(args.workers)]
    else:
        command = [sys.executable, str(HERE), "--reference", kind, "--port", str(port)]
        command += ["--workers", str(args.workers), "--artifact", env["artifact"]]
    log = open(Path(env["HYBRIDREC_DATA_DIR"]).parent / f"{kind}.log", "wb")
    proc = subprocess.Popen(command, env=proc_env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 300
        probe = f"{base}/v1/users/u0/recommendations?k=10"
        while sum(_get(probe)[0] == 200 for _ in range(4)) < 4:  # every worker answers
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not become ready; see {log.name}")
            time.sleep(0.2)
        wrk(base, n_users, args.warmup, args.connections, args.threads)
        return wrk(base, n_users, args.duration, args.connections, args.threads)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10k,100k", help="comma-separated: 10k,100k")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="10k only, 3 s runs")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of the model")
    parser.add_argument("--reference", choices=["seed", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--artifact", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference:
        run_reference(args.reference, args.port, args.workers, args.artifact)
        return
    if shutil.which("wrk") is None:
        sys.exit("this benchmark drives load with wrk: apt-get install -y wrk")
    if args.quick:
        args.sizes, args.duration, args.warmup = "10k", 3.0, 1.0
    print(
        f"{os.cpu_count()} CPUs; {args.workers} gunicorn sync workers per server, BLAS 1 "
        f"thread each; wrk {args.threads} threads, {args.connections} connections, "
        f"{args.duration:.0f} s per run\n",
        flush=True,
    )
    rows = []
    for size in args.sizes.split(","):
        n_items, n_users = SIZES[size]
        root = Path(tempfile.mkdtemp(prefix=f"hybridrec-bench-{size}-"))
        print(f"{size}: {n_items} items, {n_users} users", flush=True)
        try:
            env = prepare(root, n_items, n_users, args.epochs)
            results = {}
            for kind in ("hybridrec", "seed", "bare"):
                results[kind] = measure(kind, env, n_users, args)
                r = results[kind]
                print(
                    f"  {kind:9s} {r.rps:8.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
                    f"p99 {r.p99_ms:6.2f} ms  errors {r.errors}",
                    flush=True,
                )
            rows.append((size, results))
        finally:
            from hybridrec.store.connection import EmbeddedServer

            EmbeddedServer(root / ".hybridrec").stop()
            shutil.rmtree(root, ignore_errors=True)
    print("\n| catalog | server | req/s | p50 ms | p99 ms | errors | vs seed | vs bare |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for size, results in rows:
        seed, bare = results["seed"].rps, results["bare"].rps
        for kind, r in results.items():
            print(
                f"| {size} | {kind} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                f"{r.errors} | {r.rps / seed:.1f}x | {r.rps / bare:.2f}x |"
            )


if __name__ == "__main__":
    main()
