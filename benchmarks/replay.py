"""Warm start vs full retrain, and fold-in vs popularity, replaying the bundled sample.

The sample's interactions are sorted by time; the oldest ``--initial`` share trains the
first model and the rest is replayed in ``--batches`` consecutive time windows of equal
size (MovieLens-small spans 20 years with a handful of ratings on most days, so one
window stands for a day of a busy service). At each step:

- full retrain: a new model from scratch on everything so far (default epochs);
- warm start: the previous warm model grown to the new users/items/features and trained
  ``E`` more epochs on everything so far, for each E in ``--warm-epochs``;
- both are measured on the next window (precision@10 and AUC of users known to the
  model, train items excluded) and timed;
- fold-in: users of the next window who are not in the model: their first half of
  interactions (in time) builds a fold-in vector, their second half is the target;
  compared with the popularity baseline on the same users.

Usage: python benchmarks/replay.py [--batches 8] [--warm-epochs 1,2,5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from hybridrec.io.sample import load_sample
from hybridrec.model.foldin import FoldIn
from hybridrec.model.hybrid import _coerce_features
from hybridrec.training.evaluation import evaluate
from hybridrec.training.metrics import user_metrics
from hybridrec.training.trainer import fit_model

LIGHTFM = {"item_item_weight": 0.0}  # LightFM's warm start against its full retrain


def fold_in_scores(model, nxt, k=10):
    """precision@k and AUC of fold-in vs popularity for users new to ``model``."""
    factors = model.item_factors()
    pop = model.baseline_scores().astype(np.float64)
    known = model.item_ids_
    res = {"fold-in": [], "popularity": []}
    builders = {"fold-in": FoldIn.build(factors)}
    new_users = nxt[~nxt.user_id.isin(set(model.user_ids_.external))]
    for _user, rows in new_users.groupby("user_id"):
        idx = known.convert_to_internal(rows.item_id, missing=-1)
        idx = idx[idx >= 0]
        if len(idx) < 4:
            continue
        half = len(idx) // 2
        seen, target = idx[:half], np.setdiff1d(idx[half:], idx[:half])
        if target.size == 0:
            continue
        for name, fold in builders.items():
            vec = fold.vector(seen)
            res[name].append(user_metrics(factors.astype(np.float64) @ vec, target, k, seen))
        res["popularity"].append(user_metrics(pop, target, k, seen))
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--initial", type=float, default=0.8)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--warm-epochs", default="1,2,5")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    warm_epochs = [int(x) for x in args.warm_epochs.split(",")]

    s = load_sample()
    df = s.interactions.sort_values(["timestamp", "user_id", "item_id"]).reset_index(drop=True)
    uf, itf = _coerce_features(s.user_features), _coerce_features(s.item_features)
    cut = int(len(df) * args.initial)
    bounds = np.linspace(cut, len(df), args.batches + 2).astype(int)
    print(
        f"{len(df)} interactions; initial {cut}; {args.batches} steps of "
        f"~{bounds[1] - bounds[0]} interactions"
    )

    warm = {
        e: fit_model(df.iloc[:cut], uf, itf, LIGHTFM, seed=0, num_threads=args.threads)
        for e in warm_epochs
    }
    rows: dict[str, list] = {}
    fold_rows: dict[str, list] = {}
    for step in range(args.batches):
        upto, nxt = df.iloc[: bounds[step + 1]], df.iloc[bounds[step + 1] : bounds[step + 2]]
        t0 = time.perf_counter()
        full = fit_model(upto, uf, itf, LIGHTFM, seed=step, num_threads=args.threads)
        t_full = time.perf_counter() - t0
        models = {"full retrain": (full, t_full)}
        for e in warm_epochs:
            t0 = time.perf_counter()
            warm[e] = warm[e].warm_start(upto, uf, itf, epochs=e, num_threads=args.threads)
            models[f"warm start {e} ep"] = (warm[e], time.perf_counter() - t0)
        for name, (model, secs) in models.items():
            res = evaluate(model, nxt, user_features=uf, item_features=itf, k=10)
            w = res["segments"]["warm_users"]
            rows.setdefault(name, []).append(
                (secs, w["precision"], w["auc"], res["segments"]["all"]["precision"])
            )
        for name, ms in fold_in_scores(full, nxt).items():
            fold_rows.setdefault(name, []).extend(ms)
        print(
            f"step {step}: "
            + "  ".join(f"{n}: {v[-1][0]:.1f}s p@10={v[-1][1]:.4f}" for n, v in rows.items()),
            flush=True,
        )

    print("\nmedian over steps (measured on the next window, warm users)")
    print(f"{'model':<20}{'seconds':>9}{'ratio':>8}{'p@10':>9}{'AUC':>8}{'all p@10':>10}")
    base_t = statistics.median(r[0] for r in rows["full retrain"])
    for name, vals in rows.items():
        t = statistics.median(v[0] for v in vals)
        print(
            f"{name:<20}{t:>9.2f}{t / base_t:>8.2f}"
            f"{statistics.median(v[1] for v in vals):>9.4f}"
            f"{statistics.median(v[2] for v in vals):>8.4f}"
            f"{statistics.median(v[3] for v in vals):>10.4f}"
        )
    print("\nusers new to the model, first half of their interactions known (fold-in)")
    for name, ms in fold_rows.items():
        if ms:
            print(
                f"{name:<20} users={len(ms):<5} p@10={np.mean([m.precision for m in ms]):.4f}"
                f" AUC={np.nanmean([m.auc for m in ms]):.4f}"
            )


if __name__ == "__main__":
    main()
