"""Segmented evaluation of a model against the popularity baseline.

Segments: ``all``, ``warm_users`` (in training), ``cold_users`` (not in training), and
``cold_items``: the ranking restricted to items not in training, scored from their
features, with test positives restricted to those items.

Candidates are the model's known items plus every item of ``item_features`` that the
model can score from its features. A user's training items are excluded from their
ranking. Test positives outside the candidates cannot be recommended by anyone and are
dropped, and so are those the user had in training; users left with no positive are not
counted. Every segment reports how many users and interactions it kept and dropped, why.

A model with a blend (``model.blend_``, see :mod:`hybridrec.model.blend`) is scored by
its blend, exactly as the server scores it, so that the retraining gate compares what
would be served.

Cost: when the test set has more than ``sample_users`` users, a seeded sample of them is
evaluated, and each metric comes with a 95% confidence interval (zero width when every
user is evaluated). Scores are a float32 matrix product per batch of users, refined in
float64 where it matters (:mod:`.metrics`), so the metrics are those of a full float64
ranking, in O(items) per user: no sort of the catalog.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..model.hybrid import HybridLightFM
from .metrics import error_bound, rank_metrics

__all__ = ["evaluate", "SEGMENTS", "DEFAULT_SAMPLE_USERS", "format_table", "json_safe"]

SEGMENTS = ("all", "warm_users", "cold_users", "cold_items")
DEFAULT_SAMPLE_USERS = 5_000
_KEYS = ("precision", "recall", "ndcg", "auc")
_BLOCK = 1 << 26  # float32 scores per batch of users (256 MiB)
_Z95 = 1.959963984540054


def _candidates(model: HybridLightFM, item_features: Mapping[str, Mapping[str, float]]):
    """Ids, float32 ``[q_i, b_i, 1]`` rows and popularity of the known items, then of the
    new items the model can score from their features; and the number of known items."""
    known = list(model.item_ids_.external)
    # sorted: the store iterates in no fixed order, and the baseline breaks ties by position
    new = sorted(set(item_features).difference(known))
    matrix = model.item_space_.matrix(new, item_features)
    scorable = np.diff(matrix.indptr) > 0
    new_ids = np.asarray(new, dtype=object)[scorable].tolist()
    factors = np.vstack([model.item_factors(), model.item_factors(matrix[scorable])])
    popularity = np.concatenate(
        [model.baseline_scores().astype(np.float64), np.zeros(len(new_ids))]
    )
    return known + new_ids, factors, popularity, len(known)


class _Blended:
    """The model's blend over the evaluation's candidates, as serving scores it
    (:meth:`hybridrec.model.Blend.for_user`): a warm user's history is their training
    items (the items serving excludes and reads as the history); new items (columns from
    ``n_known`` on) have item-item score 0 and the mean popularity quantile."""

    def __init__(self, model: HybridLightFM, factors: np.ndarray, n_known: int):
        self.model = model
        self.factors = factors.astype(np.float64)
        self.items = np.arange(factors.shape[0], dtype=np.int64)
        self.items[n_known:] = -1

    def scores(self, uvecs: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        """``(len(uvecs), n_items)`` float64 blended scores."""
        f = uvecs.astype(np.float64) @ self.factors.T
        m = self.model
        for j, history in enumerate(histories):
            user = m.blend_.for_user(uvecs[j], m.item_item_, history if history.size else None)
            f[j] = user.score(self.factors, self.items, f=f[j])
        return f


class _Fixed:
    """Rankings by one score vector shared by every user, all scores distinct (the
    popularity baseline): top-k and AUC in O(k + excluded + positives) per user."""

    def __init__(self, scores: np.ndarray):
        self.order = np.argsort(-scores, kind="stable")
        self.rank = np.empty(scores.size, dtype=np.int64)  # 0 = best
        self.rank[self.order] = np.arange(scores.size)
        self.n = scores.size

    def metrics(self, pos: np.ndarray, excluded: np.ndarray, k: int) -> tuple:
        head = self.order[: k + excluded.size]
        top = head[~np.isin(head, excluded)][:k]
        hits = np.isin(top, pos)
        n_pos = pos.size
        precision = float(hits.sum()) / k
        recall = float(hits.sum()) / n_pos
        ideal = (1.0 / np.log2(np.arange(2, min(n_pos, k) + 2))).sum()
        ndcg = float((hits / np.log2(np.arange(2, top.size + 2))).sum()) / ideal
        n_neg = self.n - excluded.size - n_pos
        auc = math.nan
        if n_neg > 0:
            r = self.rank[pos]
            above = r - np.searchsorted(np.sort(self.rank[excluded]), r)
            above -= np.searchsorted(np.sort(r), r)  # positives above each positive
            auc = float((n_neg - above).sum()) / (n_pos * n_neg)
        return precision, recall, ndcg, auc, top


def _ci(values: np.ndarray, fraction: float) -> list[float]:
    """95% interval of the mean of a simple random sample of ``fraction`` of the users
    (finite population correction: zero width when every user is in)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return [math.nan, math.nan]
    mean = float(v.mean())
    if fraction >= 1.0:
        return [mean, mean]
    if v.size < 2:
        return [math.nan, math.nan]
    half = _Z95 * float(v.std(ddof=1)) / math.sqrt(v.size) * math.sqrt(1.0 - fraction)
    return [mean - half, mean + half]


def _summary(rows: dict, n_items: int, fraction: float, counts: dict) -> dict:
    n = len(rows["precision"])
    if n == 0:
        out = {"users": 0, **{key: 0.0 for key in _KEYS}, "coverage": 0.0}
        out["ci95"] = {key: [0.0, 0.0] for key in _KEYS}
    else:
        arr = {key: np.asarray(rows[key], dtype=np.float64) for key in _KEYS}
        covered = np.unique(np.concatenate(rows["top"])) if rows["top"] else []
        out = {
            "users": n,
            **{
                key: float(np.nanmean(v)) if np.isfinite(v).any() else 0.0 for key, v in arr.items()
            },
            "coverage": len(covered) / n_items if n_items else 0.0,
            "ci95": {key: _ci(v, fraction) for key, v in arr.items()},
        }
    return {**out, **counts}


def _group(codes: np.ndarray, values: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """``values`` split by ``codes`` (both sorted by code)."""
    bounds = np.searchsorted(codes, np.arange(n_groups + 1))
    return [values[bounds[g] : bounds[g + 1]] for g in range(n_groups)]


def evaluate(
    model: HybridLightFM,
    test: pd.DataFrame,
    *,
    user_features: Mapping[str, Mapping[str, float]] | None = None,
    item_features: Mapping[str, Mapping[str, float]] | None = None,
    k: int = 10,
    model_version: str | None = None,
    sample_users: int | None = DEFAULT_SAMPLE_USERS,
    seed: int = 0,
) -> dict:
    """Metrics of ``model`` and of the popularity baseline on ``test`` interactions.

    Returns ``{"k", "model_version", "sample", "segments": {SEG: {...}}, "baseline":
    {SEG: {...}}}`` where each ``{...}`` has ``users, precision, recall, ndcg, auc,
    coverage``, ``ci95`` (``{metric: [low, high]}``), ``interactions`` (test positives
    of the users evaluated) and ``dropped`` (``{"users": {reason: n}, "interactions":
    {reason: n}}``). ``sample_users`` (None or 0: all) caps the users evaluated; the
    sample is drawn with ``seed`` from the test set's users, so two models evaluated on
    the same test set are judged on the same users.
    """
    user_features = user_features or {}
    item_features = item_features or {}
    ids, factors, popularity, n_known = _candidates(model, item_features)
    n_items = len(ids)
    # Popularity as ranks with ties broken at random (seeded): ordering ties by index
    # would let the catalog's order (often oldest, most popular first) leak into the
    # baseline, and cold items all tie at zero.
    order = np.lexsort((np.random.default_rng(0).random(popularity.size), popularity))
    popularity = np.empty(popularity.size)
    popularity[order] = np.arange(popularity.size, dtype=np.float64)
    n_cold = n_items - n_known
    cold_ok = n_cold > 1

    # -- test pairs -> (user, item index); what is dropped and why --------------------
    users, user_names = pd.factorize(test["user_id"].astype(str), sort=True)
    user_names = np.asarray(user_names, dtype=object)
    n_users = user_names.size
    internal = model.user_ids_.convert_to_internal(user_names, missing=-1)
    warm = internal >= 0
    cols = pd.Index(ids, dtype=object).get_indexer(test["item_id"].astype(str))
    drop = {r: np.zeros(n_users, np.int64) for r in ("unknown_item", "seen_in_training")}
    drop["unknown_item"] = np.bincount(users[cols < 0], minlength=n_users)
    keep = cols >= 0
    users, cols = users[keep], cols[keep].astype(np.int64)
    train = model.interactions_.tocoo()
    seen = np.zeros(users.size, dtype=bool)
    maybe = warm[users] & (cols < n_known)
    if maybe.any():
        train_keys = np.sort(train.row.astype(np.int64) * n_known + train.col)
        seen[maybe] = np.isin(internal[users[maybe]] * n_known + cols[maybe], train_keys)
    drop["seen_in_training"] = np.bincount(users[seen], minlength=n_users)
    users, cols = users[~seen], cols[~seen]
    pairs = np.unique(users * max(n_items, 1) + cols)
    drop["duplicate"] = np.bincount(users, minlength=n_users) - np.bincount(
        pairs // max(n_items, 1), minlength=n_users
    )
    p_users, p_cols = pairs // max(n_items, 1), pairs % max(n_items, 1)
    n_pos = np.bincount(p_users, minlength=n_users)
    n_cold_pos = np.bincount(p_users[p_cols >= n_known], minlength=n_users)
    eligible = n_pos > 0

    # -- the sample: drawn among the test set's users, so independent of the model -----
    sampled = np.ones(n_users, dtype=bool)
    if sample_users and n_users > sample_users:
        sampled[:] = False
        sampled[np.random.default_rng(seed).choice(n_users, sample_users, replace=False)] = True
    fraction = float(sampled.sum()) / n_users if n_users else 1.0
    chosen = np.flatnonzero(sampled & eligible)
    positives = _group(p_users, p_cols, n_users)
    csr = model.interactions_.tocsr()

    def excluded_of(u: int) -> np.ndarray:
        i = internal[u]
        if i < 0:
            return np.zeros(0, dtype=np.int64)
        return csr.indices[csr.indptr[i] : csr.indptr[i + 1]].astype(np.int64)

    rows = {
        side: {seg: {key: [] for key in (*_KEYS, "top")} for seg in SEGMENTS}
        for side in ("model", "baseline")
    }

    def add(side: str, seg: str, values) -> None:
        """One user's (precision, recall, ndcg, auc, top) in ``seg`` (and in "all")."""
        for s in (seg, "all") if seg in ("warm_users", "cold_users") else (seg,):
            for key, value in zip((*_KEYS, "top"), values):
                rows[side][s][key].append(value)

    fixed = _Fixed(popularity)
    fixed_cold = _Fixed(popularity[n_known:]) if cold_ok else None
    vectors: dict[int, np.ndarray] = {}
    for u in chosen:
        name = user_names[u]
        vec = model.user_vector(model.user_row(name, user_features.get(name)))
        seg = "warm_users" if warm[u] else "cold_users"
        excl = excluded_of(u)
        pos = positives[u]
        base = fixed.metrics(pos, excl, k)
        add("baseline", seg, base)
        cold_base = None
        if cold_ok and n_cold_pos[u]:
            cold_base = fixed_cold.metrics(pos[pos >= n_known] - n_known, np.zeros(0, int), k)
            add("baseline", "cold_items", cold_base)
        if vec is None:  # no indicator, no known feature: the model falls back on popularity
            add("model", seg, base)
            if cold_base is not None:
                add("model", "cold_items", cold_base)
        else:
            vectors[int(u)] = vec

    # -- personalised users, in batches: one float32 product, refined in float64 -------
    batch = max(1, min(1024, _BLOCK // max(n_items, 1)))
    item_norm = float(np.linalg.norm(factors, axis=1).max(initial=0.0)) * (1 + 1e-6)
    personal = np.fromiter(vectors, dtype=np.int64, count=len(vectors))
    blend = _Blended(model, factors, n_known) if getattr(model, "blend_", None) else None
    if blend is not None:
        batch = max(1, batch // 2)  # float64 scores
    for lo in range(0, personal.size, batch):
        us = personal[lo : lo + batch]
        uvecs = np.vstack([vectors[int(u)] for u in us])
        excl = [excluded_of(int(u)) for u in us]
        pos = [positives[int(u)] for u in us]
        if blend is not None:  # the blend as serving scores it: exact float64 scores
            approx = blend.scores(uvecs, excl)
            delta, exact, exact_cold = np.zeros(us.size), None, None
            m = rank_metrics(approx, pos, k, excluded=excl)
        else:
            approx = uvecs.astype(np.float32) @ factors.T  # exact scores upcast a few rows
            delta = error_bound(uvecs, item_norm)

            def exact(r, c, uvecs=uvecs, offset=0):
                return np.einsum("ij,ij->i", uvecs[r], factors[c + offset].astype(np.float64))

            m = rank_metrics(approx, pos, k, excluded=excl, exact=exact, delta=delta)
        for j, u in enumerate(us):
            seg = "warm_users" if warm[u] else "cold_users"
            add("model", seg, (m.precision[j], m.recall[j], m.ndcg[j], m.auc[j], m.top[j]))
        if cold_ok:
            sel = np.flatnonzero(n_cold_pos[us] > 0)
            if sel.size:
                cold_pos = [positives[int(us[j])] for j in sel]
                cold_pos = [p[p >= n_known] - n_known for p in cold_pos]
                sub_vecs = uvecs[sel]

                def exact_cold(r, c, sub_vecs=sub_vecs):
                    rows_f = factors[c + n_known].astype(np.float64)
                    return np.einsum("ij,ij->i", sub_vecs[r], rows_f)

                if blend is not None:
                    exact_cold = None
                mc = rank_metrics(
                    approx[sel][:, n_known:], cold_pos, k, exact=exact_cold, delta=delta[sel]
                )
                for j in range(sel.size):
                    add(
                        "model",
                        "cold_items",
                        (mc.precision[j], mc.recall[j], mc.ndcg[j], mc.auc[j], mc.top[j]),
                    )

    # -- counts per segment: kept, dropped and why --------------------------------------
    in_seg = {"all": np.ones(n_users, bool), "warm_users": warm, "cold_users": ~warm}
    counts = {}
    for seg in SEGMENTS:
        if seg == "cold_items":
            members = n_cold_pos > 0
            kept_pos = n_cold_pos
            dropped = {
                "users": {"not_sampled": int((members & ~sampled).sum())},
                "interactions": {"not_sampled": int(n_cold_pos[members & ~sampled].sum())},
            }
        else:
            members = in_seg[seg]
            kept_pos = n_pos
            dropped = {
                "users": {
                    "no_positive_left": int((members & ~eligible).sum()),
                    "not_sampled": int((members & eligible & ~sampled).sum()),
                },
                "interactions": {
                    **{r: int(v[members].sum()) for r, v in drop.items()},
                    "not_sampled": int(n_pos[members & eligible & ~sampled].sum()),
                },
            }
        evaluated = members & sampled & (kept_pos > 0)
        counts[seg] = {"interactions": int(kept_pos[evaluated].sum()), "dropped": dropped}

    def block(side: str) -> dict:
        return {
            seg: _summary(
                rows[side][seg], n_cold if seg == "cold_items" else n_items, fraction, counts[seg]
            )
            for seg in SEGMENTS
        }

    return {
        "k": k,
        "model_version": model_version,
        "sample": {
            "users": int(sampled.sum()),
            "of": int(n_users),
            "seed": seed,
            "limit": sample_users or None,
        },
        "segments": block("model"),
        "baseline": block("baseline"),
    }


_WHY = {
    "no_positive_left": "every test interaction dropped",
    "not_sampled": "outside the sample",
    "unknown_item": "item unknown to the model",
    "seen_in_training": "already in the training data",
    "duplicate": "repeated pair",
}
"""What each ``dropped`` reason means, in the table's words."""


def format_table(result: dict) -> str:
    """A readable table of model vs baseline by segment: users and test interactions
    evaluated, the metrics ("-" for a segment left without users), and what was not
    evaluated and why."""
    lines = [
        f"model {result.get('model_version') or '(unsaved)'}   k={result['k']}",
        f"{'segment':<12}{'users':>7}{'interactions':>14}  {'':<9}{'prec@k':>8}{'recall':>8}"
        f"{'ndcg':>8}{'auc':>8}{'cover':>8}",
    ]
    for seg in SEGMENTS:
        for label, block in (("model", result["segments"]), ("baseline", result["baseline"])):
            m = block[seg]
            name, users, kept = "", "", ""
            if label == "model":
                name, users = seg, f"{m['users']:,}"
                kept = f"{m['interactions']:,}" if "interactions" in m else ""
            values = [m[key] if m["users"] else None for key in (*_KEYS, "coverage")]
            lines.append(f"{name:<12}{users:>7}{kept:>14}  {label:<9}" + "".join(map(_num, values)))
    sample = result.get("sample")
    if sample and sample["users"] < sample["of"]:
        lines.append(
            f"a sample of {sample['users']} of {sample['of']} test users (seed {sample['seed']}); "
            "95% intervals in --json (ci95)"
        )
    notes = []
    for seg in SEGMENTS:
        dropped = result["segments"][seg].get("dropped")
        if not dropped:
            continue
        parts = []
        for what in ("users", "interactions"):
            why = {r: n for r, n in dropped[what].items() if n}
            if why:
                n = sum(why.values())
                reasons = ", ".join(
                    f"{v:,} {_WHY.get(r, r.replace('_', ' '))}" for r, v in why.items()
                )
                parts.append(f"{n:,} {what if n != 1 else what[:-1]} ({reasons})")
        if parts:
            notes.append(f"  {seg:<12}" + "; ".join(parts))
    if notes:
        lines.append("not evaluated, and why:")
        lines.extend(notes)
    return "\n".join(lines)


def _num(value) -> str:
    return f"{value:>8.4f}" if isinstance(value, int | float) else f"{'-':>8}"


def json_safe(obj):
    """``obj`` with non-finite floats as None: JSON has no NaN, and a metric that is
    undefined (e.g. AUC with no negatives) becomes null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
