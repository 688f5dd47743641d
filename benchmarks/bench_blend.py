"""Per-request cost of the blend at serving time: the factor model alone vs the blend,
same run, same snapshot, same users.

For each synthetic catalog (``benchmarks/bench_serving.py``'s :func:`synthetic`: 10k
items / 20k users and 100k / 50k, 64 components), this script fits the model once as
``hybridrec train`` does (LightFM, ``--epochs``, then the blend with its defaults:
EASE over the ``item_item_max_items`` most interacted items, 200 weights per item),
builds the serving snapshot the way a worker does (``approximate=True``: an HNSW index
from 50k items on when its recall holds, else the bounded or exact scan) and times
``Snapshot.recommend`` (k=10, seen items excluded, BLAS on one thread as in a worker)
for three kinds of request, each with the blend and with it removed (``blend_`` None:
today's answer), alternated request by request:

- **warm**: a known user and their training history (the synthetic users have 5);
- **heavy**: a known user with a history of ``--heavy`` items (seen-set sized like a
  long-time user's), all excluded;
- **cold**: a new user with features and no history (factors + popularity).

Prints p50 and p99 in ms per kind, and blend/alone ratios of the medians; the
fit seconds of LightFM and of the blend, and the item-item part's serving memory.

Run: ``python benchmarks/bench_blend.py --sizes 10k,100k`` (a few minutes: the 100k
model's LightFM fit and the 10k-item EASE fit dominate).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import SIZES, synthetic  # noqa: E402

from hybridrec.model.hybrid import _coerce_features  # noqa: E402
from hybridrec.serving.snapshot import Snapshot  # noqa: E402
from hybridrec.training.trainer import fit_model  # noqa: E402


def percentiles(times: list[float]) -> tuple[float, float]:
    a = np.asarray(times) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10k,100k")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--requests", type=int, default=1000, help="per kind and variant")
    ap.add_argument("--heavy", type=int, default=300, help="history length of heavy users")
    ap.add_argument("--threads", type=int, default=2, help="training threads")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    for size in args.sizes.split(","):
        n_items, n_users = SIZES[size]
        interactions, user_long, item_long = synthetic(n_items, n_users)
        uf, itf = _coerce_features(user_long), _coerce_features(item_long)
        t0 = time.perf_counter()
        model = fit_model(
            interactions, uf, itf, {"epochs": args.epochs}, seed=0, num_threads=args.threads
        )
        total = time.perf_counter() - t0
        snap = Snapshot.from_model(model, approximate=True)
        blend = model.blend_
        ext = model.item_ids_.external
        users = model.user_ids_.external
        X = model.interactions_
        popular = np.argsort(-np.diff(X.tocsc().indptr))[: 20 * args.heavy]
        picks = rng.choice(len(users), args.requests, replace=True)
        requests = {"warm": [], "heavy": [], "cold": []}
        for u in picks.tolist():
            hist = [ext[i] for i in X.indices[X.indptr[u] : X.indptr[u + 1]]]
            requests["warm"].append((users[u], None, hist))
            heavy = [ext[i] for i in rng.choice(popular, args.heavy, replace=False)]
            requests["heavy"].append((users[u], None, heavy))
            requests["cold"].append((None, uf[users[u]], []))
        times = {(kind, v): [] for kind in requests for v in ("alone", "blend")}
        parts = {}
        with threadpool_limits(1):
            for kind, reqs in requests.items():
                for n, (uid, feats, hist) in enumerate(reqs):
                    order = ("alone", "blend") if n % 2 else ("blend", "alone")
                    for variant in order:
                        model.blend_ = blend if variant == "blend" else None
                        t = time.perf_counter()
                        rec = snap.recommend(uid, feats, 10, exclude=hist, history=hist)
                        times[(kind, variant)].append(time.perf_counter() - t)
                        if variant == "blend":
                            parts[kind] = rec.score_parts
        model.blend_ = blend
        print(
            f"\n{size}: {n_items:,} items, {len(users):,} users; retrieval "
            f"{snap.retrieval.strategy}; fit {total:.1f} s of which the blend "
            f"{model.blend_seconds_:.1f} s; item-item part {model.item_item_.items_.size:,} "
            f"items covered, {model.item_item_.nbytes / 2**20:.1f} MiB"
        )
        print("| request | alone p50 | alone p99 | blend p50 | blend p99 | p50 ratio | parts |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for kind in requests:
            a50, a99 = percentiles(times[(kind, "alone")])
            b50, b99 = percentiles(times[(kind, "blend")])
            print(
                f"| {kind} | {a50:.3f} | {a99:.3f} | {b50:.3f} | {b99:.3f} | "
                f"{b50 / a50:.2f} | {'+'.join(parts[kind])} |"
            )


if __name__ == "__main__":
    main()
