"""Evaluation cost over a large catalog: the batched exact metrics (`rank_metrics`, as
`evaluate` runs them) vs the former per-user implementation (a float64 product and a
`scipy.stats.rankdata` of the whole catalog per user), in the same run.

Random item rows ``[q_i, b_i, 1]`` (64 components), users with 2 test positives and 20
training items each (excluded). The former implementation is timed on ``--old-users``
users and extrapolated linearly (it is per user). Wall and CPU seconds (the machine may
be shared: CPU seconds say what the work costs).

Usage: python benchmarks/bench_evaluation.py [--items 1000000] [--users 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from scipy.stats import rankdata

from hybridrec.training.metrics import error_bound, rank_metrics


def old_user(scores: np.ndarray, pos: np.ndarray, excluded: np.ndarray, k: int) -> float:
    """The former per-user work: mask, top-k by argpartition, AUC by ranking the catalog."""
    s = scores.copy()
    s[excluded] = -np.inf
    top = np.argpartition(-s, k - 1)[:k]
    valid = np.ones(s.size, bool)
    valid[excluded] = False
    ranks = rankdata(scores[valid])
    return float(top.size + ranks[:1].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--old-users", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    d = 64
    factors = np.ones((args.items, d + 2), dtype=np.float32)
    factors[:, :d] = rng.standard_normal((args.items, d), dtype=np.float32) * 0.1
    factors[:, d] = rng.standard_normal(args.items, dtype=np.float32)
    users = np.ones((args.users, d + 2))
    users[:, :d] = rng.standard_normal((args.users, d)) * 0.1
    users[:, d + 1] = rng.standard_normal(args.users)
    picks = [rng.choice(args.items, 22, replace=False) for _ in range(args.users)]
    positives = [np.sort(p[:2]) for p in picks]
    excluded = [np.sort(p[2:]) for p in picks]
    item_norm = float(np.linalg.norm(factors, axis=1).max()) * (1 + 1e-6)
    batch = max(1, min(1024, (1 << 26) // args.items))

    wall, cpu = time.perf_counter(), time.process_time()
    for lo in range(0, args.users, batch):
        u = users[lo : lo + batch]
        approx = u.astype(np.float32) @ factors.T

        def exact(r, c, u=u):
            return np.einsum("ij,ij->i", u[r], factors[c].astype(np.float64))

        rank_metrics(
            approx,
            positives[lo : lo + batch],
            args.k,
            excluded=excluded[lo : lo + batch],
            exact=exact,
            delta=error_bound(u, item_norm),
        )
    new = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}

    f64 = factors.astype(np.float64)
    wall, cpu = time.perf_counter(), time.process_time()
    for j in range(args.old_users):
        old_user(f64 @ users[j], positives[j], excluded[j], args.k)
    scale = args.users / args.old_users
    old = {
        "wall_s": (time.perf_counter() - wall) * scale,
        "cpu_s": (time.process_time() - cpu) * scale,
    }
    print(
        json.dumps(
            {
                "items": args.items,
                "users": args.users,
                "batched": {k: round(v, 1) for k, v in new.items()},
                "former_extrapolated": {k: round(v, 1) for k, v in old.items()},
                "speedup_cpu": round(old["cpu_s"] / new["cpu_s"], 1),
                "load_average": os.getloadavg(),
            }
        )
    )


if __name__ == "__main__":
    main()
