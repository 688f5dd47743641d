"""Evidence for the default feature weighting, on the bundled MovieLens sample.

Two protocols, several seeds, medians printed:

1. ``random``: 80/20 random split of interactions, every user warm (the protocol of
   the usual LightFM notebooks): plain collaborative LightFM vs the naive hybrid
   (``lightfm.data.Dataset`` weighting) vs hybridrec's defaults, warm precision@10.
2. ``cold``: 10% of users cold (they declared the genres of their first 5 ratings at
   sign-up; evaluated on the rest), 10% of items cold (served from genres and tags),
   the newest 20% of every other user's interactions held out. Segments as in
   ``hybridrec evaluate``, beside the popularity baseline.

Usage: python benchmarks/quality_defaults.py [--seeds 3] [--epochs 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from hybridrec.io.sample import load_sample
from hybridrec.model.hybrid import _coerce_features
from hybridrec.training.evaluation import evaluate
from hybridrec.training.split import split_interactions
from hybridrec.training.trainer import DEFAULT_PARAMS, fit_model

CONFIGS = {
    "plain CF (no features)": {"features": False, "params": {}},
    "naive hybrid (Dataset weighting)": {
        "features": True,
        "params": {"user_feature_weight": None, "item_feature_weight": None},
    },
    "hybridrec defaults": {"features": True, "params": {}},
}


def random_split(df, seed, frac=0.2):
    rng = np.random.default_rng(seed)
    mask = rng.random(len(df)) < frac
    train, test = df[~mask], df[mask]
    return train, test[test["user_id"].isin(set(train["user_id"]))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=DEFAULT_PARAMS["epochs"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--protocol", choices=["random", "cold", "both"], default="both")
    ap.add_argument(
        "--candidates",
        default="",
        help="extra feature weightings to compare, 'user,item;user,item' (e.g. '0.25,0.5')",
    )
    args = ap.parse_args()
    for cand in filter(None, args.candidates.split(";")):
        uw, iw = (float(x) for x in cand.split(","))
        CONFIGS[f"weights user={uw} item={iw}"] = {
            "features": True,
            "params": {"user_feature_weight": uw, "item_feature_weight": iw},
        }

    sample = load_sample()
    df = sample.interactions
    uf = _coerce_features(sample.user_features)
    itf = _coerce_features(sample.item_features)
    print(
        f"sample: {len(df)} interactions, {df.user_id.nunique()} users, "
        f"{df.item_id.nunique()} items rated, {len(itf)} items with features"
    )
    results: dict = {}
    epoch_times: list[float] = []
    for seed in range(args.seeds):
        splits = {}
        if args.protocol in ("random", "both"):
            splits["random"] = random_split(df, seed)
        if args.protocol in ("cold", "both"):
            s = split_interactions(df, cold_user_skip_first=5, seed=seed)
            splits["cold"] = (s.train, s.test)
        for protocol, (train, test) in splits.items():
            for name, cfg in CONFIGS.items():
                t0 = time.perf_counter()
                feats = (uf, itf) if cfg["features"] else (None, None)
                model = fit_model(
                    train,
                    *feats,
                    # LightFM's own settings: the blend beside it is compared in
                    # quality_peers.py
                    {**cfg["params"], "epochs": args.epochs, "item_item_weight": 0.0},
                    seed=seed,
                    num_threads=args.threads,
                )
                epoch_times.extend(model.epoch_seconds_)
                res = evaluate(
                    model, test, user_features=feats[0] or {}, item_features=feats[1] or {}, k=10
                )
                for seg in res["segments"]:
                    for who in ("segments", "baseline"):
                        for metric in ("precision", "auc"):
                            results.setdefault((protocol, name, seg, who, metric), []).append(
                                res[who][seg][metric]
                            )
                print(
                    f"  seed {seed} {protocol:<6} {name:<34} {time.perf_counter() - t0:5.1f}s "
                    f"warm p@10={res['segments']['warm_users']['precision']:.4f}",
                    flush=True,
                )

    def med(key):
        vals = [v for v in results.get(key, []) if v == v]
        return statistics.median(vals) if vals else float("nan")

    print(
        f"\nmedian over {args.seeds} seeds; fit time per epoch: median "
        f"{statistics.median(epoch_times):.3f}s ({args.threads} threads)"
    )
    for protocol in ("random", "cold"):
        if not any(k[0] == protocol for k in results):
            continue
        print(f"\nprotocol {protocol}: precision@10 (AUC)")
        segs = (
            ("warm_users",) if protocol == "random" else ("warm_users", "cold_users", "cold_items")
        )
        print(f"{'config':<36}" + "".join(f"{s:>22}" for s in segs))
        for name in CONFIGS:
            cells = "".join(
                f"{med((protocol, name, s, 'segments', 'precision')):>13.4f} "
                f"({med((protocol, name, s, 'segments', 'auc')):.3f})"
                for s in segs
            )
            print(f"{name:<36}{cells}")
        cells = "".join(
            f"{med((protocol, 'hybridrec defaults', s, 'baseline', 'precision')):>13.4f} "
            f"({med((protocol, 'hybridrec defaults', s, 'baseline', 'auc')):.3f})"
            for s in segs
        )
        print(f"{'popularity baseline':<36}{cells}")


if __name__ == "__main__":
    main()
