"""Training at scale: load, `hybridrec train --publish`, evaluation, warm start.

Synthetic data with features on both sides (items: genre, tag, brand; users: country,
age band), item popularity skewed (a power law), timestamps in arrival order. Cases:

- ``1m``:  1,000,000 items / 200,000 users / 2,000,000 interactions, all in the Redis log;
- ``20m``: 100,000 items / 1,000,000 users / 20,000,000 interactions: 19M in the log's
  Parquet archive (as ``interactions archive`` leaves it), the newest 1M in the log;
- ``small``: 20,000 items / 5,000 users / 100,000 interactions (a quick check).

For each: load time (features into Redis; interactions into the log / archive),
`hybridrec train --publish --epochs E` end to end as a user runs it (a subprocess: wall
seconds, peak RSS, seconds and interactions/s per epoch from the manifest, artifact
size), evaluation of a seeded sample of 5,000 test users over the whole catalog (in
process, timed alone), and a warm start after the catalog grows by 10% (new items with
features and interactions; a subprocess: seconds, peak RSS). A private redis-server
(no persistence) on a free port. Prints one JSON object per case and a table row.

Usage: python benchmarks/bench_training.py [--case 1m|20m|small] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import redis

from hybridrec.store.connection import redis_server_binary
from hybridrec.store.features import FeatureStore

CASES = {
    "small": (20_000, 5_000, 100_000, 0),
    "1m": (1_000_000, 200_000, 2_000_000, 0),
    "20m": (100_000, 1_000_000, 20_000_000, 19_000_000),
}
PREFIX = "bench"
LAST_CPU = [0.0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(directory), "--save", "", "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(500):
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.02)
    raise RuntimeError("redis-server did not start")


def features(prefix: str, ids: np.ndarray, spec: dict[str, int], seed: int) -> pd.DataFrame:
    """Long frame: one feature per name in ``spec`` (name -> number of values) per id."""
    rng = np.random.default_rng(seed)
    parts = [
        pd.DataFrame(
            {
                "id": ids,
                "feature": f"{name}:" + pd.Series(rng.integers(0, n, ids.size)).astype(str),
                "weight": 1.0,
            }
        )
        for name, n in spec.items()
    ]
    return pd.concat(parts, ignore_index=True)


def interactions(n: int, n_users: int, n_items: int, seed: int, t0=1_700_000_000, skew=3):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n)
    items = (rng.random(n) ** skew * n_items).astype(np.int64)  # a few items take most
    frame = pd.DataFrame(
        {
            "user_id": pd.Series(users).map("u{}".format),
            "item_id": pd.Series(items).map("i{}".format),
            "weight": 1.0,
            "timestamp": t0 + np.arange(n) // 10,
        }
    )
    return frame.drop_duplicates(["user_id", "item_id"]).reset_index(drop=True)


def write_archive(frame: pd.DataFrame, url: str, start_ms: int) -> None:
    """Rows as ``interactions archive`` would have left them: one file per 1M entries,
    entry ids one millisecond apart from ``start_ms``."""
    from hybridrec.store.log import Archive

    archive = Archive(url)
    ms = start_ms + np.arange(len(frame))
    full = frame.assign(
        weight=frame["weight"].astype(float),
        timestamp=frame["timestamp"].astype(float),
        log_ms=ms,
        log_seq=0,
    )
    for lo in range(0, len(full), 1_000_000):
        archive._write_verified(full.iloc[lo : lo + 1_000_000].reset_index(drop=True))


def py_spy() -> str:
    """py-spy beside this interpreter (a venv not on PATH) or on PATH."""
    found = shutil.which(
        "py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if found is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return found


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_child(args: list[str], env: dict) -> tuple[float, int, str]:
    """(wall seconds, peak RSS MiB, output) of a child process; its CPU seconds (user +
    system, all threads) in ``LAST_CPU`` (on a shared machine: what it would take alone,
    roughly, divided by the cores it keeps busy)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS and CPU
        LAST_CPU[0] = usage.ru_utime + usage.ru_stime
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:4]} failed:\n{text[-3000:]}")
    return seconds, usage.ru_maxrss // 1024, text


WARM = """
import json, sys, time
from hybridrec.cli._env import Env
from hybridrec.config import Settings
from hybridrec.store.log import read_training_interactions
env = Env(Settings.from_env())
model = env.model_store.load(sys.argv[1], with_optimizer=True)
t0 = time.perf_counter()
data = read_training_interactions(env.feature_store, env.archive)
uf = dict(env.feature_store.iter_features("users"))
itf = dict(env.feature_store.iter_features("items"))
read = time.perf_counter() - t0
t0 = time.perf_counter()
new = model.warm_start(data, uf, itf, epochs=1)
print(json.dumps({"read_seconds": read, "warm_start_seconds": time.perf_counter() - t0,
                  "epoch_seconds": new.epoch_seconds_, "items": len(new.item_ids_)}))
"""


def bench(case: str, epochs: int, work: Path, profile: str | None = None) -> dict:
    n_items, n_users, n_inter, n_archived = CASES[case]
    proc, url = start_redis(work / "redis")
    out: dict = {"case": case, "items": n_items, "users": n_users, "epochs": epochs}
    try:
        client = redis.Redis.from_url(url, decode_responses=True)
        store = FeatureStore(client, PREFIX, log_maxlen=50_000_000)
        archive_url = str(work / "archive")
        env = {
            **os.environ,
            "HYBRIDREC_REDIS_URL": url,
            "HYBRIDREC_KEY_PREFIX": PREFIX,
            "HYBRIDREC_MODEL_STORE": str(work / "models"),
            "HYBRIDREC_ARCHIVE": archive_url,
            "HYBRIDREC_LOG_MAXLEN": "50000000",
        }
        item_ids = np.array([f"i{i}" for i in range(n_items)], dtype=object)
        user_ids = np.array([f"u{u}" for u in range(n_users)], dtype=object)
        data = interactions(n_inter, n_users, n_items, seed=1)
        out["interactions"] = len(data)
        t0 = time.perf_counter()
        store.load_features(
            "items", features("i", item_ids, {"genre": 50, "tag": 2_000, "brand": 20_000}, 2)
        )
        store.load_features("users", features("u", user_ids, {"country": 100, "age": 10}, 3))
        out["load_features_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        if n_archived:
            write_archive(data.iloc[:n_archived], archive_url, int(time.time() * 1000) - 10**8)
        for lo in range(n_archived, len(data), 500_000):
            store.add_interactions(data.iloc[lo : lo + 500_000])
        out["load_interactions_s"] = round(time.perf_counter() - t0, 1)

        train = [sys.executable, "-c", "from hybridrec.cli import main; main()", "train",
                 "--publish", "--epochs", str(epochs)]  # fmt: skip
        if profile:  # py-spy's collapsed stacks of the whole command (pip install py-spy)
            train = [py_spy(), "record", "-r", "25", "-f", "raw", "-o", profile, "--", *train]
        seconds, peak, text = run_child(train, env)
        version = re.findall(r"^\d{8}T\d{6}Z-[0-9a-f]+$", text, re.MULTILINE)[-1]
        out["train_output_tail"] = text.strip().splitlines()[-16:-1]
        manifest = json.loads((work / "models" / version / "manifest.json").read_text())
        extra = manifest["extra"]
        out.update(
            train_publish_s=round(seconds, 1),
            train_cpu_s=round(LAST_CPU[0], 1),
            train_peak_rss_mib=peak,
            epoch_s=extra["throughput"]["epoch_seconds"],
            interactions_per_s=extra["throughput"]["interactions_per_second"],
            threads=extra["threads"],
            artifact_mib=round(dir_size(work / "models" / version) / 2**20, 1),
            holdout_sample=manifest["metrics"].get("sample"),
        )

        # evaluation alone: 5,000 sampled users of a fresh test set, over the catalog
        from hybridrec.modelstore.store import ModelStore
        from hybridrec.training.evaluation import evaluate

        t0 = time.perf_counter()
        itf = dict(store.iter_features("items"))
        uf = dict(store.iter_features("users"))
        out["read_features_s"] = round(time.perf_counter() - t0, 1)
        model = ModelStore(str(work / "models")).load(version)
        test = interactions(max(50_000, len(data) // 40), n_users, n_items, seed=7)
        t0 = time.perf_counter()
        res = evaluate(model, test, user_features=uf, item_features=itf, sample_users=5_000)
        out["evaluate_s"] = round(time.perf_counter() - t0, 1)
        out["evaluate_users"] = res["segments"]["all"]["users"]
        out["evaluate_items"] = len(model.item_ids_)
        del model, itf, uf

        # the catalog grows by 10%: new items with features and interactions, warm start
        grow = n_items // 10
        new_items = np.array([f"n{i}" for i in range(grow)], dtype=object)
        store.load_features(
            "items", features("n", new_items, {"genre": 50, "tag": 2_000, "brand": 20_000}, 4)
        )
        more = interactions(len(data) // 10, n_users, grow, seed=5, t0=1_800_000_000, skew=1)
        more["item_id"] = "n" + more["item_id"].str[1:]
        store.add_interactions(more)
        seconds, peak, text = run_child([sys.executable, "-c", WARM, version], env)
        warm = json.loads(text.strip().splitlines()[-1])
        out.update(
            warm_start_s=round(warm["warm_start_seconds"], 1),
            warm_process_cpu_s=round(LAST_CPU[0], 1),
            warm_read_s=round(warm["read_seconds"], 1),
            warm_items=warm["items"],
            warm_peak_rss_mib=peak,
        )
    finally:
        proc.terminate()
        proc.wait()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), default="1m")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--profile", help="write py-spy collapsed stacks of train here")
    args = parser.parse_args()
    if args.profile:
        py_spy()  # before minutes of loading
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        out = bench(args.case, args.epochs, Path(tmp), args.profile)
    out["load_average"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
