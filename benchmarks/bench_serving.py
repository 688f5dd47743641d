"""Serving throughput and latency: hybridrec's API vs the seed's way vs a bare Flask endpoint.

For each synthetic catalog (10k items / 20k users, 100k / 50k and 1M / 200k; 64
components; items with a topic and 7 tags, users with 4 interests, indicators on both
sides; see :func:`synthetic`) this script

1. fits a model (``--epochs``, cached with ``--cache DIR`` for later runs), loads the
   features and interactions into an embedded Redis and publishes the model;
2. serves, one after the other, through the same server function
   (``hybridrec.serving.server``) with the same settings (``--workers`` workers, BLAS
   pinned to one thread per worker):
   - **hybridrec**: ``hybridrec serve`` (store round trip, snapshot retrieval: an HNSW
     index from 50k items on when its measured recall@10 reaches 0.98, seen items
     excluded);
   - **seed**: the seed's way, per request: read the user's features and seen items from
     Redis, build the user's feature row, ``LightFM.predict`` over every item with the
     item feature matrix, mask the seen items, take the top k;
   - **bare**: a Flask handler on the same route returning a constant (the framework's
     ceiling on this machine);
3. drives each with ``wrk`` (``--connections`` connections, random known users, ``k=10``)
   for ``--duration`` seconds after a warm-up, and prints req/s, p50/p99, the ratios,
   each worker's memory (``/proc/PID/smaps_rollup``: Rss, and Private = what the worker
   alone holds; "2nd worker adds" = the second worker's Private / the first one's Rss),
   and for hybridrec the recall@10 of its answers against ``exact=true`` on 200 users
   and how the snapshot retrieves (strategy, the index's measured recall, build seconds).

Run: ``python benchmarks/bench_serving.py --sizes 10k,100k,1m --cache /tmp/bench-models``
(the 1M model trains for a long time once; needs ``wrk``: ``apt-get install -y wrk``).
``--quick`` does the small catalog with short runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

SIZES = {"10k": (10_000, 20_000), "100k": (100_000, 50_000), "1m": (1_000_000, 200_000)}
N_TOPICS, N_TAGS = 100, 2_000  # item topics (genres, categories) and free tags
ITEM_TAGS, USER_FEATURES = 7, 4  # per item: its topic + 7 tags; per user: 4 interests
PER_USER = 5
IN_TOPIC = 0.8  # share of a user's interactions within their two topics
HERE = Path(__file__).resolve()


# -- data and model ----------------------------------------------------------------------------


def synthetic(n_items: int, n_users: int, seed: int = 0):
    """Interactions and long feature frames with the structure of a real catalog.

    Item ``i`` has topic ``i % N_TOPICS`` (feature ``topic:T``) and ``ITEM_TAGS`` tags,
    70% of them from its topic's 40 usual tags. A user likes two topics (features
    ``likes:T`` plus two random ones); ``IN_TOPIC`` of their ``PER_USER`` interactions
    are in those topics, the rest anywhere, popularity-skewed (Zipf 0.8) either way.
    Every item also gets one interaction from a user who likes its topic, so the model
    knows every item of the catalog.
    """
    rng = np.random.default_rng(seed)
    per_topic = -(-n_items // N_TOPICS)
    zipf = 1.0 / np.arange(1, per_topic + 1) ** 0.8
    zipf /= zipf.sum()
    likes = rng.integers(0, N_TOPICS, (n_users, 2))
    m = n_users * PER_USER
    users = np.repeat(np.arange(n_users), PER_USER)
    topic = np.where(
        rng.random(m) < IN_TOPIC, likes[users, rng.integers(0, 2, m)], rng.integers(0, N_TOPICS, m)
    )
    items = np.minimum(rng.choice(per_topic, size=m, p=zipf) * N_TOPICS + topic, n_items - 1)
    fans: dict[int, np.ndarray] = {}
    by_topic = np.argsort(likes[:, 0], kind="stable")
    bounds = np.searchsorted(likes[by_topic, 0], np.arange(N_TOPICS + 1))
    for t in range(N_TOPICS):
        fans[t] = by_topic[bounds[t] : bounds[t + 1]]
    every = np.arange(n_items)
    owner = np.array(
        [fans[t][rng.integers(0, len(fans[t]))] if len(fans[t]) else 0 for t in every % N_TOPICS]
    )
    interactions = pd.DataFrame(
        {
            "user_id": np.char.add("u", np.concatenate([owner, users]).astype(str)),
            "item_id": np.char.add("i", np.concatenate([every, items]).astype(str)),
        }
    ).drop_duplicates()
    item_topic = every % N_TOPICS
    usual = rng.integers(0, 40, (n_items, ITEM_TAGS)) + (item_topic[:, None] * 17) % (N_TAGS - 40)
    tags = np.where(
        rng.random((n_items, ITEM_TAGS)) < 0.7, usual, rng.integers(0, N_TAGS, (n_items, ITEM_TAGS))
    )
    item_features = pd.DataFrame(
        {
            "id": np.char.add("i", np.repeat(every, ITEM_TAGS + 1).astype(str)),
            "feature": np.column_stack(
                [
                    np.char.add("topic:", item_topic.astype(str)),
                    np.char.add("tag:", tags.astype(str)),
                ]
            ).ravel(),
            "weight": 1.0,
        }
    ).drop_duplicates(["id", "feature"])
    interests = np.column_stack([likes, rng.integers(0, N_TOPICS, (n_users, USER_FEATURES - 2))])
    user_features = pd.DataFrame(
        {
            "id": np.char.add("u", np.repeat(np.arange(n_users), USER_FEATURES).astype(str)),
            "feature": np.char.add("likes:", interests.ravel().astype(str)),
            "weight": 1.0,
        }
    ).drop_duplicates(["id", "feature"])
    return interactions, user_features, item_features


def prepare(root: Path, size: str, epochs: int, cache: Path | None, store_items: bool) -> dict:
    """Fit (or reuse the model cached under ``cache``), load the store and publish;
    return the environment for ``hybridrec serve``. ``store_items``: also load the item
    features into the store (requests never read them; each worker then syncs the whole
    catalog when it loads the model)."""
    from hybridrec.config import Settings
    from hybridrec.model import HybridLightFM
    from hybridrec.modelstore.artifact import load_model, save_model
    from hybridrec.modelstore.registry import Registry, publish_model
    from hybridrec.modelstore.store import ModelStore
    from hybridrec.store.connection import connect
    from hybridrec.store.features import FeatureStore

    n_items, n_users = SIZES[size]
    settings = Settings(data_dir=root / ".hybridrec", model_store=str(root / "models"))
    t0 = time.perf_counter()
    interactions, user_features, item_features = synthetic(n_items, n_users)
    cached = None if cache is None else cache / f"{size}-e{epochs}"
    if cached is not None and (cached / "manifest.json").exists():
        model = load_model(cached, with_optimizer=True)
    else:
        model = HybridLightFM(no_components=64, epochs=epochs, random_state=0).fit(
            interactions, user_features, item_features, num_threads=2
        )
        if cached is not None:
            save_model(model, cached)
    fitted = time.perf_counter()
    client = connect(settings)
    store = FeatureStore(client, settings.key_prefix)
    store.load_features("users", user_features, replace=True)
    if store_items:
        store.load_features("items", item_features, replace=True)
    store.add_interactions(interactions)
    # titles, so that answers carry item metadata as in production (hybridrec's answers
    # include them; the seed's way had none)
    store.load_metadata(
        pd.DataFrame({"id": np.char.add("i", np.arange(n_items).astype(str))}).assign(
            title=lambda f: "Item " + f["id"]
        ),
        replace=True,
    )
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


def seed_app(artifact: str, redis_url: str):
    """The seed's way, per request: read the user's features (and seen items) from
    Redis, build the user's feature row, ``LightFM.predict`` over every item with the
    item feature matrix, mask the seen items, take the top k."""
    from flask import Flask, jsonify, request
    from lightfm import LightFM

    from hybridrec.config import Settings
    from hybridrec.modelstore.artifact import load_model
    from hybridrec.store.connection import connect
    from hybridrec.store.features import FeatureStore

    model = load_model(artifact, with_optimizer=True)  # LightFM.predict checks its state
    store = FeatureStore(connect(Settings(redis_url=redis_url)), Settings().key_prefix)
    items = model.item_space_.entities
    n_items = len(items)
    all_items = np.arange(n_items, dtype=np.int32)
    zeros = np.zeros(n_items, dtype=np.int32)
    app = Flask("seed")

    @app.get("/v1/users/<user_id>/recommendations")
    def recommendations(user_id: str):
        k = int(request.args.get("k", 10))
        features, seen = store.user_context(user_id)
        row = model.user_space_.matrix([user_id], {user_id: features or {}})
        scores = LightFM.predict(
            model,
            zeros,
            all_items,
            item_features=model.item_matrix_,
            user_features=row,
            num_threads=1,
        )
        seen_rows = items.convert_to_internal(seen, missing=-1)
        scores[seen_rows[seen_rows >= 0]] = -np.inf
        top = np.argpartition(-scores, k)[:k]
        top = top[np.argsort(-scores[top])]
        return jsonify(
            {
                "user_id": user_id,
                "items": [{"item_id": items.external[i], "score": float(scores[i])} for i in top],
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


def run_reference(kind: str, port: int, workers: int, artifact: str, redis_url: str) -> None:
    """A reference server with ``hybridrec serve``'s default server and worker start-up
    (BLAS pinned, JSON logs): the same function serves hybridrec."""
    from hybridrec.serving.server import run_app

    factory = (lambda: seed_app(artifact, redis_url)) if kind == "seed" else bare_app
    run_app(factory, "127.0.0.1", port, workers)


# -- load ---------------------------------------------------------------------------------------


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    memory: list[dict] = field(default_factory=list)  # per worker, MB: Rss, Pss, Private
    recall: float | None = None  # recall@10 of default answers against exact=true
    retrieval: dict | None = None  # what /v1/model says (strategy, index recall, build s)


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


def wrk(
    url_base: str,
    n_users: int,
    seconds: float,
    connections: int,
    threads: int,
    user: str = "u",
    first: int = 0,
) -> Result:
    """wrk's figures for ``k=10`` recommendations of random users ``{user}{first}`` to
    ``{user}{first + n_users - 1}``."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        f"math.randomseed({int(time.time())})\n"
        "request = function()\n"
        f"  return wrk.format('GET', '/v1/users/{user}' .. math.random({first}, "
        f"{first + n_users - 1}) .."
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


def _workers(master: int) -> list[int]:
    """PIDs of the server's worker processes (children of the master), sorted."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == master:
                out.append(int(entry.name))
    return sorted(out)


def _memory(pid: int) -> dict:
    """MB of one process from /proc/PID/smaps_rollup: Rss, Pss and Private (what
    would be freed if the process exited)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split()[:2]
        fields[name.rstrip(":")] = int(value) / 1024
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {
        "pid": pid,
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "private": private,
        "anonymous": fields.get("Anonymous", 0),  # heap: never shared, never page cache
    }


def _load() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared: quote them)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _recall(base: str, n_users: int, users: int = 200, k: int = 10) -> float:
    """recall@k of the default answers against ``exact=true`` for random users."""
    rng = np.random.default_rng(1)
    hits = total = 0
    for u in rng.choice(n_users, size=min(users, n_users), replace=False):
        url = f"{base}/v1/users/u{u}/recommendations?k={k}"
        got = json.loads(_get(url)[1])["items"]
        want = json.loads(_get(url + "&exact=true")[1])["items"]
        hits += len({i["item_id"] for i in got} & {i["item_id"] for i in want})
        total += len(want)
    return hits / max(total, 1)


def measure(kind: str, env: dict, n_users: int, args) -> Result:
    from hybridrec.store.connection import EmbeddedServer

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc_env = {k: v for k, v in os.environ.items() if k != "HYBRIDREC_REDIS_URL"}
    proc_env.update({k: v for k, v in env.items() if k.startswith("HYBRIDREC_")})
    proc_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if kind == "hybridrec":
        command = [str(Path(sys.executable).parent / "hybridrec"), "serve"]
        command += ["--port", str(port), "--workers", str(args.workers)]
    else:
        socket_path = EmbeddedServer(Path(env["HYBRIDREC_DATA_DIR"])).start()
        command = [sys.executable, str(HERE), "--reference", kind, "--port", str(port)]
        command += ["--workers", str(args.workers), "--artifact", env["artifact"]]
        command += ["--redis-url", f"unix://{socket_path}"]
    log_path = Path(env["HYBRIDREC_DATA_DIR"]).parent / f"{kind}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(command, env=proc_env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 1800
        probe = f"{base}/v1/users/u0/recommendations?k=10"
        while sum(_get(probe)[0] == 200 for _ in range(4)) < 4:  # every worker answers
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not become ready; see {log.name}")
            time.sleep(0.5)
        if kind == "hybridrec":  # every worker has its model (the probe may hit one)
            while log_path.read_text().count('"model_loaded"') < args.workers:
                time.sleep(0.5)
        wrk(base, n_users, args.warmup, args.connections, args.threads)
        spy = _profile(kind, env, proc.pid, args)
        result = wrk(base, n_users, args.duration, args.connections, args.threads)
        if spy is not None:
            spy.wait(60)
        result.memory = [_memory(pid) for pid in _workers(proc.pid)]
        if kind == "hybridrec":
            result.recall = _recall(base, n_users)
            result.retrieval = _retrieval(log_path)
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _profile(kind: str, env: dict, master: int, args):
    """With ``--profile DIR``: py-spy records hybridrec's first worker during the measured
    run (collapsed stacks, ``DIR/<size>-hybridrec.txt``); the started process, or None."""
    if args.profile is None or kind != "hybridrec":
        return None
    args.profile.mkdir(parents=True, exist_ok=True)
    out = args.profile / f"{env['size']}-{kind}.txt"
    spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "-r", "200"]
    spy += ["-d", str(max(1, round(args.duration))), "-o", str(out), "-p", str(_workers(master)[0])]
    return subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _retrieval(log_path: Path) -> dict:
    """The workers' ``model_loaded`` retrieval fields; build seconds are the longest
    (the worker that built the serving files; the others loaded them)."""
    infos = []
    for line in log_path.read_text().splitlines():
        if '"model_loaded"' in line:
            infos.append(json.loads(line)["retrieval"])
    out = dict(infos[0])
    out["build_seconds"] = max(i["build_seconds"] for i in infos)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10k,100k,1m", help="comma-separated")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="10k only, 3 s runs")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of the model")
    parser.add_argument("--epochs-1m", type=int, default=5, help="epochs of the 1M model")
    parser.add_argument(
        "--store-items-1m",
        action="store_true",
        help="load the 1M items' features into the store too (slow: every worker then "
        "syncs a 1M-item catalog at start)",
    )
    parser.add_argument("--reference", choices=["seed", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--artifact", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument(
        "--cache", type=Path, help="keep trained models here and reuse them in later runs"
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy hybridrec's first worker into this directory"
    )
    args = parser.parse_args()
    if args.reference:
        run_reference(args.reference, args.port, args.workers, args.artifact, args.redis_url)
        return
    if shutil.which("wrk") is None:
        sys.exit("this benchmark drives load with wrk: apt-get install -y wrk")
    if args.quick:
        args.sizes, args.duration, args.warmup = "10k", 3.0, 1.0
    print(f"load average at start: {_load()}", flush=True)
    print(
        f"{os.cpu_count()} CPUs; {args.workers} workers per server (hybridrec serve's "
        f"default server), BLAS 1 thread each; wrk {args.threads} threads, "
        f"{args.connections} connections, {args.duration:.0f} s per run\n",
        flush=True,
    )
    rows = []
    for size in args.sizes.split(","):
        n_items, n_users = SIZES[size]
        root = Path(tempfile.mkdtemp(prefix=f"hybridrec-bench-{size}-"))
        print(f"{size}: {n_items} items, {n_users} users", flush=True)
        try:
            epochs = args.epochs if size != "1m" else args.epochs_1m
            env = prepare(root, size, epochs, args.cache, size != "1m" or args.store_items_1m)
            env["size"] = size
            results = {}
            for kind in ("hybridrec", "seed", "bare"):
                results[kind] = measure(kind, env, n_users, args)
                r = results[kind]
                memory = ", ".join(
                    f"rss {m['rss']:.0f} / pss {m['pss']:.0f} / private {m['private']:.0f} "
                    f"/ anonymous {m['anonymous']:.0f} MB"
                    for m in r.memory
                )
                print(
                    f"  {kind:9s} {r.rps:8.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
                    f"p99 {r.p99_ms:6.2f} ms  errors {r.errors}  workers: {memory}",
                    flush=True,
                )
                if r.retrieval is not None:
                    print(f"            recall@10 vs exact=true {r.recall:.4f}; {r.retrieval}")
                print(f"            load average after: {_load()}", flush=True)
            rows.append((size, results))
        finally:
            from hybridrec.store.connection import EmbeddedServer

            EmbeddedServer(root / ".hybridrec").stop()
            shutil.rmtree(root, ignore_errors=True)
    print(
        "\n| catalog | server | req/s | p50 ms | p99 ms | vs seed | vs bare | recall@10 "
        "| retrieval | build s | worker MB (Rss / Private) | 2nd worker adds |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|---:|")
    for size, results in rows:
        seed, bare = results["seed"].rps, results["bare"].rps
        for kind, r in results.items():
            info = r.retrieval or {}
            mem = r.memory
            workers = " ; ".join(f"{m['rss']:.0f} / {m['private']:.0f}" for m in mem)
            adds = f"{mem[1]['private'] / mem[0]['rss']:.0%}" if len(mem) >= 2 else "-"
            print(
                f"| {size} | {kind} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                f"{r.rps / seed:.1f}x | {r.rps / bare:.2f}x | "
                f"{'-' if r.recall is None else f'{r.recall:.4f}'} | "
                f"{info.get('strategy', '-')} | {info.get('build_seconds', '-')} | "
                f"{workers} | {adds} |" + (f" errors {r.errors}" if r.errors else "")
            )


if __name__ == "__main__":
    main()
