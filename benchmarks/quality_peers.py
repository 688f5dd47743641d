"""hybridrec beside the usual peers, on the bundled sample's cold-start protocol.

Protocol (the one ``benchmarks/quality_defaults.py`` uses, ``split_interactions`` with
``cold_user_skip_first=5``): 10% of users are cold (they declared the genres of their
first 5 ratings at sign-up; evaluated on the rest), 10% of items are cold, the newest
20% of every other user's interactions are held out. Every model ranks the same
candidates, the items known in training, with a user's training items excluded; test
positives outside them cannot be recommended by anyone and are dropped. Warm users are
the users in training; peers that cannot score a cold user answer with popularity.

Every peer gets a small hyperparameter search on a validation split carved from train
only (the same split function on the training part: 10% of its users cold, the newest
20% of the others held out), chosen on warm NDCG@10; then it is refitted on the whole
training part and measured once on test. Medians over seeds. One evaluator for all:
``hybridrec.training.metrics.rank_metrics`` on each model's score matrix.

Peers: popularity; EASE (closed form as RecTools writes it: ``B = P / -diag(P)``,
``P = (X'X + lambda I)^-1``, zero diagonal; RecTools itself pins numpy < 2 and pandas < 3,
so it cannot share our environment and EASE/PureSVD are written here in numpy/scipy);
PureSVD (``scipy.sparse.linalg.svds``, as RecTools); ALS and item-kNN (cosine, BM25) from
``implicit``.

``--study trained`` is the README's table: the peers, hybridrec before (LightFM alone)
and after (what ``hybridrec train`` fits by default: LightFM and its blend, untuned);
``--threads 1`` makes LightFM's fit deterministic, so before and after share it.
``--choose-defaults`` is how the blend's defaults were chosen: its grid on the
validation splits only.

Usage: python benchmarks/quality_peers.py [--seeds 3] [--threads 2] [--study NAME]
(needs ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from hybridrec.io.sample import load_sample
from hybridrec.model.hybrid import _coerce_features
from hybridrec.model.idmap import IdMap
from hybridrec.training.metrics import rank_metrics
from hybridrec.training.split import split_interactions
from hybridrec.training.trainer import fit_model

try:
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
except ImportError as exc:  # pragma: no cover - a hint, not a feature
    raise SystemExit("the peer benchmark needs implicit: pip install -e '.[bench]'") from exc

K = 10
METRICS = ("precision", "ndcg", "auc")

# -- data ------------------------------------------------------------------------------------


@dataclass
class Task:
    """One train/test pair in matrix form.

    ``X`` is ``(n_users, n_items)`` binary float32 over the training users and items;
    ``warm`` are test users in training (internal indices), ``cold`` test users that are
    not (external ids), each with their positives as item indices.
    """

    train: pd.DataFrame
    users: IdMap
    items: IdMap
    X: sp.csr_matrix
    warm: np.ndarray
    warm_pos: list[np.ndarray]
    cold: list[str]
    cold_pos: list[np.ndarray]
    user_features: dict
    item_features: dict
    seed: int
    cache: dict = field(default_factory=dict)

    @classmethod
    def build(cls, train, test, user_features, item_features, seed) -> Task:
        users = IdMap.from_values(sorted(train["user_id"].astype(str).unique()))
        items = IdMap.from_values(sorted(train["item_id"].astype(str).unique()))
        rows = users.convert_to_internal(train["user_id"])
        cols = items.convert_to_internal(train["item_id"])
        X = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(items))
        )
        X.data[:] = 1.0  # duplicates summed: binary
        warm, warm_pos, cold, cold_pos = [], [], [], []
        t_items = items.convert_to_internal(test["item_id"], missing=-1)
        for user, idx in pd.Series(t_items, index=test["user_id"].astype(str)).groupby(level=0):
            pos = np.unique(idx.to_numpy())
            pos = pos[pos >= 0]
            internal = users.get(user)
            if internal is not None:
                seen = X.indices[X.indptr[internal] : X.indptr[internal + 1]]
                pos = np.setdiff1d(pos, seen)
                if pos.size:
                    warm.append(internal)
                    warm_pos.append(pos)
            elif pos.size:
                cold.append(user)
                cold_pos.append(pos)
        return cls(
            train,
            users,
            items,
            X,
            np.array(warm, dtype=np.int64),
            warm_pos,
            cold,
            cold_pos,
            user_features,
            item_features,
            seed,
        )

    def seen(self, rows: np.ndarray) -> list[np.ndarray]:
        return [self.X.indices[self.X.indptr[u] : self.X.indptr[u + 1]] for u in rows]


def evaluate_scores(
    scores: np.ndarray, positives: Sequence[np.ndarray], excluded: Sequence[np.ndarray] | None
) -> dict:
    """Mean precision, NDCG @K and AUC of ``scores`` ``(n_users, n_items)`` (positives
    unique, none excluded)."""
    m = rank_metrics(np.array(scores, dtype=np.float64), list(positives), K, excluded=excluded)
    return {name: float(np.nanmean(getattr(m, name))) for name in METRICS}


# -- models ----------------------------------------------------------------------------------


def popularity_scores(task: Task) -> np.ndarray:
    """Training popularity as ranks, ties broken at random (seeded) as ``evaluate`` does."""
    if "popularity" not in task.cache:
        pop = np.asarray(task.X.sum(axis=0)).ravel()
        order = np.lexsort((np.random.default_rng(0).random(pop.size), pop))
        ranks = np.empty(pop.size)
        ranks[order] = np.arange(pop.size, dtype=np.float64)
        task.cache["popularity"] = ranks
    return task.cache["popularity"]


@dataclass
class Fitted:
    """A fitted model's scores: ``warm`` ``(n_warm, n_items)`` for ``task.warm`` and
    ``cold`` ``(n_cold, n_items)`` for ``task.cold`` (None: popularity)."""

    warm: np.ndarray
    cold: np.ndarray | None
    seconds: float


def fit_popularity(task: Task, params: dict) -> Fitted:
    t0 = time.perf_counter()
    pop = popularity_scores(task)
    return Fitted(np.tile(pop, (task.warm.size, 1)), None, time.perf_counter() - t0)


def ease_weights(
    X: sp.csr_matrix, lam: float, dropout: float = 0.0, side: sp.csr_matrix | None = None
) -> np.ndarray:
    """EASE's ``B`` (``(n_items, n_items)`` float32, zero diagonal) for ridge ``lam``.

    ``dropout`` > 0 adds ``dropout / (1 - dropout) * diag(X'X)`` to the ridge (EDLAE,
    Steck 2020); ``side`` ``(n_features, n_items)`` rows are stacked under ``X`` as
    pseudo-users, one per item feature (collective EASE, Jeunen et al. 2020).

    The inverse of the Gram matrix through its Cholesky factor (LAPACK potrf + potri):
    the same matrix as ``np.linalg.inv``, three times faster on a symmetric positive
    definite matrix.
    """
    from scipy.linalg import lapack

    G = (X.T @ X).toarray().astype(np.float32)
    counts = G.diagonal().copy()
    if side is not None:
        G += (side.T @ side).toarray().astype(np.float32)
    G[np.diag_indices_from(G)] += lam + dropout / (1.0 - dropout) * counts
    c, info = lapack.spotrf(G, lower=1, clean=0, overwrite_a=1)
    if info:
        raise np.linalg.LinAlgError(f"potrf failed ({info})")
    P, info = lapack.spotri(c, lower=1, overwrite_c=1)
    if info:
        raise np.linalg.LinAlgError(f"potri failed ({info})")
    P = np.tril(P) + np.tril(P, -1).T
    B = P / -np.diag(P)
    np.fill_diagonal(B, 0.0)
    return B


def item_feature_rows(task: Task, alpha: float) -> sp.csr_matrix:
    """``(n_features, n_items)`` binary item features of the task's items, times ``alpha``."""
    names = sorted({f for i in task.items.external for f in task.item_features.get(i, {})})
    index = {n: k for k, n in enumerate(names)}
    rows, cols = [], []
    for j, item in enumerate(task.items.external):
        for name in task.item_features.get(item, {}):
            rows.append(index[name])
            cols.append(j)
    data = np.full(len(rows), alpha, dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(len(names), len(task.items)))


def cached_ease(
    task: Task, lam: float, dropout: float = 0.0, side: float = 0.0
) -> tuple[np.ndarray, float]:
    key = ("ease", lam, dropout, side)
    if key not in task.cache:
        t0 = time.perf_counter()
        F = item_feature_rows(task, side) if side else None
        B = ease_weights(task.X, lam, dropout, F)
        task.cache[key] = (B, time.perf_counter() - t0)
    return task.cache[key]


def history_rows(task: Task, half_life: float) -> sp.csr_matrix:
    """Warm users' histories, each interaction weighted ``0.5 ** (r / half_life)`` where
    ``r`` counts the user's newer interactions (0: binary, every weight 1)."""
    if not half_life:
        return task.X[task.warm]
    key = ("recency", half_life)
    if key not in task.cache:
        tr = pd.DataFrame(
            {
                "u": task.users.convert_to_internal(task.train["user_id"]),
                "i": task.items.convert_to_internal(task.train["item_id"]),
                "t": task.train["timestamp"].to_numpy(),
            }
        ).sort_values(["u", "t", "i"])
        r = tr.groupby("u").cumcount(ascending=False).to_numpy()
        W = sp.csr_matrix((0.5 ** (r / half_life), (tr["u"], tr["i"])), shape=task.X.shape)
        task.cache[key] = W[task.warm]
    return task.cache[key]


def fit_ease(task: Task, params: dict) -> Fitted:
    B, seconds = cached_ease(task, params["lam"])
    return Fitted(np.asarray(task.X[task.warm] @ B), None, seconds)


def fit_puresvd(task: Task, params: dict) -> Fitted:
    from scipy.sparse.linalg import svds

    t0 = time.perf_counter()
    u, s, vt = svds(task.X, k=params["factors"], random_state=task.seed)
    seconds = time.perf_counter() - t0
    return Fitted((u[task.warm] * s) @ vt, None, seconds)


def _quiet_fit(model, X: sp.csr_matrix) -> None:
    # implicit asks for single-threaded BLAS (it parallelises itself)
    with warnings.catch_warnings(), threadpool_limits(1, "blas"):
        warnings.simplefilter("ignore")
        model.fit(X, show_progress=False)


def fit_als(task: Task, params: dict) -> Fitted:
    model = AlternatingLeastSquares(
        factors=params["factors"],
        regularization=params["reg"],
        alpha=params["alpha"],
        iterations=15,
        random_state=task.seed,
        num_threads=THREADS,
    )
    t0 = time.perf_counter()
    _quiet_fit(model, task.X)
    seconds = time.perf_counter() - t0
    return Fitted(model.user_factors[task.warm] @ model.item_factors.T, None, seconds)


def fit_knn(task: Task, params: dict) -> Fitted:
    cls = {"cosine": CosineRecommender, "bm25": BM25Recommender}[params["kind"]]
    model = cls(K=params["K"], num_threads=THREADS)
    t0 = time.perf_counter()
    _quiet_fit(model, task.X.astype(np.float64))
    seconds = time.perf_counter() - t0
    return Fitted(np.asarray((task.X[task.warm] @ model.similarity).todense()), None, seconds)


def fit_hybrid(task: Task, params: dict) -> tuple[object, float]:
    """The hybrid LightFM (defaults updated by ``params``), cached per task; ``cf``: plain
    collaborative LightFM (no features)."""
    key = ("hybrid", tuple(sorted(params.items())))
    if key not in task.cache:
        t0 = time.perf_counter()
        params = dict(params)
        cf = params.pop("cf", False)
        model = fit_model(
            task.train,
            None if cf else task.user_features,
            None if cf else task.item_features,
            params,
            seed=task.seed,
            num_threads=THREADS,
        )
        task.cache[key] = (model, time.perf_counter() - t0)
    return task.cache[key]


def hybrid_scores(task: Task, params: dict) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Warm and cold users' LightFM scores over the task's items, and the fit time."""
    model, seconds = fit_hybrid(task, params)
    key = ("hybrid_scores", tuple(sorted(params.items())))
    if key not in task.cache:
        cols = model.item_ids_.convert_to_internal(task.items.external)
        factors = model.item_factors()[cols].astype(np.float64)

        def scores(user_ids):
            out = np.empty((len(user_ids), len(cols)))
            feats = {} if params.get("cf") else task.user_features
            for n, uid in enumerate(user_ids):
                vec = model.user_vector(model.user_row(uid, feats.get(uid)))
                out[n] = popularity_scores(task) if vec is None else factors @ vec
            return out

        warm = scores(task.users.convert_to_external(task.warm))
        cold = scores(task.cold)
        task.cache[key] = (warm, cold)
    return (*task.cache[key], seconds)


def fit_hybrid_defaults(task: Task, params: dict) -> Fitted:
    warm, cold, seconds = hybrid_scores(task, params)
    return Fitted(warm, cold, seconds)


def fit_trained(task: Task, params: dict) -> Fitted:
    """What ``hybridrec train`` fits now (``fit_model`` with the defaults: LightFM and
    its blend), scored the way ``evaluate`` and serving score it (``Blend.for_user``: a
    warm user's history is their training items, a cold user has none). ``recency``
    (half-life, measured only: serving's history, a Redis set, has no order) weights
    each history by recency instead."""
    model, seconds = fit_hybrid(task, {})
    cols = model.item_ids_.convert_to_internal(task.items.external)  # task -> model index
    F = model.item_factors()[cols].astype(np.float64)
    histories = recency_weights(task, params.get("recency", 0.0))
    blend = copy.copy(model.blend_)
    blend.popularity_weight = params.get("pop", blend.popularity_weight)

    def scores(user_ids, with_history):
        out = np.empty((len(user_ids), F.shape[0]))
        for n, uid in enumerate(user_ids):
            u = model.user_vector(model.user_row(uid, task.user_features.get(uid)))
            h, w = histories[n] if with_history else (None, None)
            user = blend.for_user(u, model.item_item_, None if h is None else cols[h], w)
            out[n] = popularity_scores(task) if user is None else user.score(F, cols)
        return out

    warm = scores(task.users.convert_to_external(task.warm), True)
    cold = scores(task.cold, False)
    return Fitted(warm, cold, seconds)


# -- blends and other candidates for new defaults -------------------------------------------


def zscore(S: np.ndarray) -> np.ndarray:
    """Each row standardised over all items (mean 0, standard deviation 1)."""
    sd = S.std(axis=1, keepdims=True)
    sd[sd == 0] = 1.0
    return (S - S.mean(axis=1, keepdims=True)) / sd


def cap_columns(B: np.ndarray, n: int) -> np.ndarray:
    """``B`` keeping, in every column, the ``n`` entries of largest magnitude."""
    if n >= B.shape[0]:
        return B
    keep = np.argpartition(-np.abs(B), n - 1, axis=0)[:n]
    out = np.zeros_like(B)
    cols = np.broadcast_to(np.arange(B.shape[1]), keep.shape)
    out[keep, cols] = B[keep, cols]
    return out


def cap_rows(B: np.ndarray, n: int) -> np.ndarray:
    """``B`` keeping, in every row, the ``n`` entries of largest magnitude."""
    return cap_columns(B.T, n).T


def local_ease(X: sp.csr_matrix, lam: float, n: int, by: str = "count") -> sp.csr_matrix:
    """EASE restricted to neighbourhoods: column ``j`` of ``B`` is the ridge regression of
    item ``j`` on its ``n`` most co-occurring items only (all items: exact EASE)."""
    G = (X.T @ X).toarray()
    diag = G.diagonal().copy()
    crit = G / np.sqrt(np.outer(diag, diag) + 1e-12) if by == "cosine" else G.copy()
    np.fill_diagonal(crit, -np.inf)
    n = min(n, G.shape[0] - 1)
    nbrs = np.argpartition(-crit, n - 1, axis=0)[:n].T  # (n_items, n)
    rows, cols, vals = [], [], []
    for lo in range(0, G.shape[0], 256):
        idx = nbrs[lo : lo + 256]
        A = G[idx[:, :, None], idx[:, None, :]] + lam * np.eye(n)
        rhs = G[idx, np.arange(lo, lo + idx.shape[0])[:, None]]
        b = np.linalg.solve(A, rhs[:, :, None])[:, :, 0]
        rows.append(idx.ravel())
        cols.append(np.repeat(np.arange(lo, lo + idx.shape[0]), n))
        vals.append(b.ravel())
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=G.shape
    )


def head_ease(X: sp.csr_matrix, lam: float, m: int) -> sp.csr_matrix:
    """Exact EASE on the ``m`` most popular items; the others get no item-item weights."""
    head = np.sort(np.argsort(-np.asarray(X.sum(axis=0)).ravel(), kind="stable")[:m])
    Bh = sp.coo_matrix(ease_weights(sp.csr_matrix(X[:, head]), lam))
    n = X.shape[1]
    return sp.csr_matrix((Bh.data, (head[Bh.row], head[Bh.col])), shape=(n, n))


def item_item(task: Task, params: dict) -> tuple[np.ndarray, float]:
    """Warm users' item-item scores and the fit time. ``part``: ``ease`` (optionally
    capped), ``local`` (neighbourhood EASE), ``head`` (EASE on the popular items),
    ``knn`` (implicit's cosine item-kNN)."""
    part = params.get("part", "ease")
    if part == "ease":
        B, seconds = cached_ease(
            task, params["lam"], params.get("dropout", 0.0), params.get("side", 0.0)
        )
        cap = params.get("cap")
        if not cap:
            return np.asarray(history_rows(task, params.get("recency", 0)) @ B), seconds
        key = ("cap", params["lam"], cap, params.get("cap_axis", "col"))
        if key not in task.cache:
            t0 = time.perf_counter()
            capper = cap_rows if params.get("cap_axis") == "row" else cap_columns
            task.cache[key] = (sp.csr_matrix(capper(B, cap)), time.perf_counter() - t0)
        Bc, extra = task.cache[key]
        return np.asarray((task.X[task.warm] @ Bc).todense()), seconds + extra
    key = (part, *sorted(params.items()))
    if key not in task.cache:
        t0 = time.perf_counter()
        if part == "local":
            Bs = local_ease(task.X, params["lam"], params["n"], params.get("by", "count"))
        elif part == "head":
            Bs = head_ease(task.X, params["lam"], params["m"])
        elif part == "knn":
            model = CosineRecommender(K=params["K"], num_threads=THREADS)
            _quiet_fit(model, task.X.astype(np.float64))
            Bs = sp.csr_matrix(model.similarity)
        else:
            raise ValueError(part)
        task.cache[key] = (Bs, time.perf_counter() - t0)
    Bs, seconds = task.cache[key]
    return np.asarray((task.X[task.warm] @ Bs).todense()), seconds


def fit_blend(task: Task, params: dict) -> Fitted:
    """LightFM hybrid defaults + ``w`` x item-item, each z-scored per user; cold users
    keep the hybrid's scores (the item-item part cannot score them)."""
    lf = {"cf": True} if params.get("lf") == "cf" else {}
    warm_l, cold_l, s_l = hybrid_scores(task, lf)
    if lf:  # cold users: the defaults' feature part, as in every other row
        cold_l = hybrid_scores(task, {})[1]
    warm_e, s_e = item_item(task, params)
    how = params.get("how", "z")
    w = params["w"]
    if params.get("als"):
        als = fit_als(task, {"factors": 64, "reg": 10.0, "alpha": 1.0})
        warm_l = zscore(warm_l) + params["als"] * zscore(als.warm)
        s_l += als.seconds
    if how == "z":
        warm = zscore(warm_l) + w * zscore(warm_e)
    elif how == "rank":  # reciprocal rank fusion

        def rr(S):
            ranks = np.empty_like(S)
            order = np.argsort(-S, axis=1)
            np.put_along_axis(ranks, order, np.arange(S.shape[1], dtype=float)[None, :], axis=1)
            return 1.0 / (60.0 + ranks)

        warm = rr(warm_l) + w * rr(warm_e)
    elif how == "global":  # one scale per part for everyone, no per-user normalisation
        warm = warm_l / warm_l.std() + w * warm_e / warm_e.std()
    else:
        raise ValueError(how)
    return Fitted(warm, cold_l, s_l + s_e)


def fit_pool(task: Task, params: dict) -> Fitted:
    """Two stages: the ``C`` best unseen items by the hybrid's factor scores (and, with
    ``union``, the ``C`` best by the item-item part) reranked by the blend; the rest
    follows in the factor order. ``stats``: z-scores over all items (``all``, computable
    exactly at serving time) or over the pool only (``pool``)."""
    warm_l, cold_l, s_l = hybrid_scores(task, {})
    warm_e, s_e = item_item(task, params)
    C, w = params["C"], params["w"]
    out = np.empty_like(warm_l)
    for n, seen in enumerate(task.seen(task.warm)):
        sl, se = warm_l[n].copy(), warm_e[n].copy()
        masked = sl.copy()
        masked[seen] = -np.inf
        pool = np.argpartition(-masked, C)[:C]
        if params.get("union"):
            me = se.copy()
            me[seen] = -np.inf
            pool = np.union1d(pool, np.argpartition(-me, C)[:C])
        ref_l = sl[pool] if params.get("stats") == "pool" else sl
        ref_e = se[pool] if params.get("stats") == "pool" else se
        z_l = (sl - ref_l.mean()) / (ref_l.std() or 1.0)
        z_e = (se - ref_e.mean()) / (ref_e.std() or 1.0)
        row = z_l - 1e6  # outside the pool: below it, in factor order
        row[pool] = z_l[pool] + w * z_e[pool]
        out[n] = row
    return Fitted(out, cold_l, s_l + s_e)


def user_feature_rows(task: Task, user_ids: Sequence[str]) -> sp.csr_matrix:
    """``(len(user_ids), n_features)`` user features over the training users' vocabulary,
    each row scaled to sum 1 (the sample's weights count genres of 5 movies)."""
    key = "user_vocab"
    if key not in task.cache:
        names = sorted({f for u in task.users.external for f in task.user_features.get(u, {})})
        task.cache[key] = {n: i for i, n in enumerate(names)}
    vocab = task.cache[key]
    rows, cols, vals = [], [], []
    for n, uid in enumerate(user_ids):
        for name, weight in task.user_features.get(uid, {}).items():
            if name in vocab:
                rows.append(n)
                cols.append(vocab[name])
                vals.append(weight)
    F = sp.csr_matrix((vals, (rows, cols)), shape=(len(user_ids), len(vocab)))
    sums = np.asarray(F.sum(axis=1)).ravel()
    sums[sums == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / sums) @ F)


def cold_part(task: Task, params: dict) -> np.ndarray:
    """Cold users' scores from their declared features alone."""
    kind = params["cold"]
    F_train = user_feature_rows(task, task.users.external)
    F_cold = user_feature_rows(task, task.cold)
    if kind == "knn":  # demographic user-kNN: cosine over feature rows, top-k neighbours

        def unit(F):
            norms = np.sqrt(np.asarray(F.multiply(F).sum(axis=1)).ravel())
            norms[norms == 0] = 1.0
            return sp.diags(1.0 / norms) @ F

        sim = np.asarray((unit(F_cold) @ unit(F_train).T).todense())
        k = params["k"]
        if k < sim.shape[1]:
            drop = np.argpartition(-sim, k, axis=1)[:, k:]
            np.put_along_axis(sim, drop, 0.0, axis=1)
        return np.asarray(task.X.T.dot(sim.T).T)
    if kind == "ridge":  # item indicators regressed on features (with an intercept)
        Fd = np.hstack([F_train.toarray(), np.ones((F_train.shape[0], 1))])
        A = Fd.T @ Fd + params["lam"] * np.eye(Fd.shape[1])
        W = np.linalg.solve(A, np.asarray(task.X.T.dot(Fd).T))
        return np.hstack([F_cold.toarray(), np.ones((F_cold.shape[0], 1))]) @ W
    raise ValueError(kind)


def blended_cold(task: Task, params: dict, cold_l: np.ndarray) -> np.ndarray:
    """Cold users' scores: ``cold_part`` (if ``cold``) z-blended with the hybrid's own
    cold scores ``cold_l`` (weight ``hybrid``) and popularity (weight ``pop``)."""
    cold = zscore(cold_part(task, params)) if params.get("cold") else 0.0
    if params.get("hybrid"):
        cold = cold + params["hybrid"] * zscore(cold_l)
    if params.get("pop"):
        cold = cold + params["pop"] * zscore(np.tile(popularity_scores(task), (len(task.cold), 1)))
    return cold_l if isinstance(cold, float) else cold


def fit_cold(task: Task, params: dict) -> Fitted:
    """Hybrid defaults for warm users; cold users from :func:`blended_cold`."""
    warm_l, cold_l, seconds = hybrid_scores(task, {})
    t0 = time.perf_counter()
    cold = blended_cold(task, params, cold_l)
    return Fitted(warm_l, cold, seconds + time.perf_counter() - t0)


def recency_weights(task: Task, half_life: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Warm users' ``(history, weights)``: ``0.5 ** (r / half_life)`` with ``r`` the number
    of the user's newer interactions (``half_life`` 0: every weight 1)."""
    W = history_rows(task, half_life)
    return [
        (W.indices[W.indptr[n] : W.indptr[n + 1]], W.data[W.indptr[n] : W.indptr[n + 1]])
        for n in range(W.shape[0])
    ]


def fit_proposed(task: Task, params: dict) -> Fitted:
    """The proposed defaults through the model modules: ``hybridrec.model.Blend`` of the
    hybrid LightFM and ``hybridrec.model.ItemItem`` (EASE, ``cap`` weights per item,
    ridge ``lam``), blend weight ``w``, histories weighted by recency (``recency``
    half-life, 0: none); users without a history (cold) get the factor part plus
    popularity (weight ``pop``)."""
    from hybridrec.model import Blend, ItemItem

    model, s_l = fit_hybrid(task, {})
    key = ("itemitem", params["lam"], params["cap"])
    if key not in task.cache:
        t0 = time.perf_counter()
        item_item = ItemItem(l2=params["lam"], max_neighbors=params["cap"]).fit(task.X)
        task.cache[key] = (item_item, time.perf_counter() - t0)
    item_item, s_e = task.cache[key]
    cols = model.item_ids_.convert_to_internal(task.items.external)
    F = model.item_factors()[cols].astype(np.float64)
    t0 = time.perf_counter()
    counts = np.asarray(task.X.sum(axis=0)).ravel()
    blend = Blend(params["w"], popularity_weight=params["pop"]).fit(F, popularity=counts)
    s_b = time.perf_counter() - t0
    histories = recency_weights(task, params.get("recency", 0.0))

    def scores(user_ids, with_history):
        out = np.empty((len(user_ids), F.shape[0]))
        for n, uid in enumerate(user_ids):
            u = model.user_vector(model.user_row(uid, task.user_features.get(uid)))
            h, w = histories[n] if with_history else (None, None)
            blended = blend.score(u, F, item_item, h, weights=w)
            out[n] = popularity_scores(task) if blended is None else blended.scores
        return out

    warm = scores(task.users.convert_to_external(task.warm), True)
    cold = scores(task.cold, False)
    return Fitted(warm, cold, s_l + s_e + s_b)


# -- runner ----------------------------------------------------------------------------------


@dataclass
class Candidate:
    name: str
    fit: Callable[[Task, dict], Fitted]
    grid: list[dict]
    select: str = "warm_ndcg"


def grid(**axes) -> list[dict]:
    out = [{}]
    for name, values in axes.items():
        out = [{**o, name: v} for o in out for v in values]
    return out


PEERS = [
    Candidate("popularity", fit_popularity, [{}]),
    Candidate("EASE", fit_ease, grid(lam=[100.0, 250.0, 500.0, 1000.0])),
    Candidate(
        "ALS (implicit)", fit_als, grid(factors=[16, 32, 64], reg=[1.0, 10.0], alpha=[1.0, 4.0])
    ),
    Candidate("PureSVD", fit_puresvd, grid(factors=[10, 20, 40, 80])),
    Candidate(
        "item-kNN (implicit)",
        fit_knn,
        grid(kind=["cosine"], K=[20, 50, 100, 200]) + grid(kind=["bm25"], K=[50, 100, 200]),
    ),
    Candidate("hybridrec before (LightFM alone)", fit_hybrid_defaults, [{"item_item_weight": 0.0}]),
]

LAMBDAS = [100.0, 250.0, 500.0, 1000.0]
CAP = 200  # item-item weights kept per item in the proposed defaults (see --study cap)


def fit_item_item(task: Task, params: dict) -> Fitted:
    warm, seconds = item_item(task, params)
    return Fitted(warm, None, seconds)


STUDIES = {
    "peers": PEERS,
    "blend": [
        PEERS[1],
        PEERS[-1],
        Candidate("blend z, lam and w tuned", fit_blend, grid(lam=LAMBDAS, w=[0.5, 1.0, 2.0, 4.0])),
        *[
            Candidate(f"blend z, w={w} (lam tuned)", fit_blend, grid(lam=LAMBDAS, w=[w]))
            for w in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
        ],
        Candidate(
            "blend rank (RRF)", fit_blend, grid(lam=LAMBDAS, w=[0.5, 1.0, 2.0], how=["rank"])
        ),
        Candidate(
            "blend global scale",
            fit_blend,
            grid(lam=LAMBDAS, w=[0.5, 1.0, 2.0, 4.0], how=["global"]),
        ),
    ],
    # item-item weights capped per item (rows: what an item in a history adds to;
    # columns: what an item is predicted from); blend weights and ridge tuned as above
    "cap": [
        PEERS[1],
        *[
            Candidate(
                f"EASE cap {axis} {n}", fit_item_item, grid(lam=LAMBDAS, cap=[n], cap_axis=[axis])
            )
            for axis, n in (("row", 50), ("row", 200), ("col", 200))
        ],
        Candidate("blend z uncapped", fit_blend, grid(lam=LAMBDAS, w=[0.5, 1.0, 2.0])),
        *[
            Candidate(
                f"blend z cap {axis} {n}",
                fit_blend,
                grid(lam=LAMBDAS, w=[0.5, 1.0, 2.0], cap=[n], cap_axis=[axis]),
            )
            for axis, n in (("row", 25), ("row", 50), ("row", 100), ("row", 200), ("col", 200))
        ],
    ],
    # item-item parts that fit large catalogs: EASE on the most popular items only,
    # EASE regressed on each item's 50 most co-occurring items, cosine item-kNN
    "scale": [
        PEERS[1],
        Candidate("blend z, EASE", fit_blend, grid(lam=LAMBDAS, w=[0.5, 1.0, 2.0])),
        *[
            Candidate(
                f"blend z, EASE on the {m} most popular items",
                fit_blend,
                grid(part=["head"], lam=LAMBDAS, m=[m], w=[0.5, 1.0, 2.0]),
            )
            for m in (1000, 2000, 4000)
        ],
        Candidate(
            "blend z, EASE on 50 co-occurring items",
            fit_blend,
            grid(part=["local"], lam=[100.0, 250.0], n=[50], w=[0.5, 1.0, 2.0]),
        ),
        Candidate(
            "blend z, cosine item-kNN",
            fit_blend,
            grid(part=["knn"], K=[50, 100, 200], w=[0.5, 1.0, 2.0]),
        ),
    ],
    "pool": [
        PEERS[1],
        Candidate("blend z, whole catalog", fit_blend, grid(lam=[250.0, 500.0], w=[1.0, 2.0])),
        *[
            Candidate(
                f"two-stage C={c}{' + item-item top C' if union else ''}, stats {stats}",
                fit_pool,
                grid(lam=[250.0, 500.0], w=[1.0, 2.0], C=[c], union=[union], stats=[stats]),
            )
            for c in (50, 200, 1000)
            for union in (False, True)
            for stats in ("all", "pool")
        ],
    ],
    "more": [
        PEERS[1],
        PEERS[2],
        Candidate("blend z", fit_blend, grid(lam=[250.0, 500.0], w=[1.0, 2.0])),
        Candidate(
            "blend z, plain CF LightFM",
            fit_blend,
            grid(lam=[250.0, 500.0], w=[1.0, 2.0], lf=["cf"]),
        ),
        Candidate(
            "blend z, EDLAE", fit_blend, grid(lam=[250.0, 500.0], w=[1.0, 2.0], dropout=[0.25])
        ),
        Candidate(
            "blend z, EASE with item features",
            fit_blend,
            grid(lam=[250.0, 500.0], w=[1.0, 2.0], side=[1.0, 3.0]),
        ),
        Candidate(
            "blend z, + ALS", fit_blend, grid(lam=[250.0, 500.0], w=[1.0, 2.0], als=[0.5, 1.0])
        ),
        Candidate(
            "EASE, recency-weighted history",
            fit_item_item,
            grid(lam=[250.0, 500.0], recency=[10.0, 20.0, 50.0]),
        ),
        Candidate(
            "blend z, recency-weighted history",
            fit_blend,
            grid(lam=[250.0, 500.0], w=[1.0, 2.0], recency=[10.0, 20.0, 50.0]),
        ),
    ],
    "after": [
        *PEERS,
        Candidate(
            "EASE, recency-weighted history",
            fit_item_item,
            grid(lam=[250.0, 500.0], recency=[5.0, 10.0, 20.0]),
        ),
        Candidate(
            "proposed: blend",
            fit_proposed,
            grid(lam=[250.0, 500.0], w=[1.0, 2.0], cap=[CAP], pop=[1.0]),
        ),
        Candidate(
            "proposed: blend, recency-weighted history",
            fit_proposed,
            grid(
                lam=[250.0, 500.0],
                w=[1.0, 2.0],
                cap=[CAP],
                recency=[5.0, 10.0, 20.0],
                pop=[1.0],
            ),
        ),
    ],
    # the before/after table of the README: peers, today's LightFM alone, and what
    # `hybridrec train` fits by default now (LightFM + blend), untuned
    "trained": [
        *PEERS,
        Candidate("hybridrec after: train's defaults (LightFM + blend)", fit_trained, [{}]),
        Candidate(
            "after, recency-weighted histories (measured, not default)",
            fit_trained,
            [{"recency": 10.0}],
        ),
        Candidate("after, popularity_weight 0 (measured)", fit_trained, [{"pop": 0.0}]),
    ],
    "cold": [
        PEERS[0],
        PEERS[-1],
        Candidate(
            "demographic user-kNN", fit_cold, grid(cold=["knn"], k=[20, 50, 100, 300]), "cold_ndcg"
        ),
        Candidate(
            "feature ridge",
            fit_cold,
            grid(cold=["ridge"], lam=[0.1, 1.0, 10.0, 100.0]),
            "cold_ndcg",
        ),
        Candidate(
            "hybrid cold + popularity",
            fit_cold,
            grid(hybrid=[1.0], pop=[0.25, 0.5, 1.0, 2.0]),
            "cold_ndcg",
        ),
        Candidate(
            "hybrid cold + user-kNN",
            fit_cold,
            grid(cold=["knn"], k=[50, 100, 300], hybrid=[0.5, 1.0, 2.0]),
            "cold_ndcg",
        ),
        Candidate(
            "hybrid cold + feature ridge",
            fit_cold,
            grid(cold=["ridge"], lam=[1.0, 10.0], hybrid=[0.5, 1.0, 2.0]),
            "cold_ndcg",
        ),
    ],
}

THREADS = 2


def measure(task: Task, fitted: Fitted) -> dict:
    out = {
        f"warm_{m}": v
        for m, v in evaluate_scores(fitted.warm, task.warm_pos, task.seen(task.warm)).items()
    }
    cold = fitted.cold
    if cold is None:
        cold = np.tile(popularity_scores(task), (len(task.cold), 1))
    out.update({f"cold_{m}": v for m, v in evaluate_scores(cold, task.cold_pos, None).items()})
    out["fit_s"] = fitted.seconds
    return out


def choose(cand: Candidate, val: Task) -> tuple[dict, dict]:
    """The grid point with the best ``cand.select`` on validation, and all its scores."""
    best, best_params, table = -1.0, cand.grid[0], {}
    if len(cand.grid) == 1:  # nothing to choose: no fit on validation
        return best_params, table
    for params in cand.grid:
        res = measure(val, cand.fit(val, params))
        table[tuple(sorted(params.items()))] = res
        if len(cand.grid) > 1 and res[cand.select] > best:
            best, best_params = res[cand.select], params
    return best_params, table


def tasks_for_seed(df, uf, itf, seed) -> tuple[Task, Task]:
    """(validation task carved from train, test task)."""
    s = split_interactions(df, cold_user_skip_first=5, seed=seed)
    v = split_interactions(s.train, cold_item_frac=0.0, cold_user_skip_first=5, seed=seed + 1000)
    return (
        Task.build(v.train, v.test, uf, itf, seed),
        Task.build(s.train, s.test, uf, itf, seed),
    )


def print_table(title: str, rows: dict[str, list[dict]], chosen: dict[str, list]) -> None:
    cols = [f"warm_{m}" for m in METRICS] + ["cold_precision", "cold_auc", "fit_s"]
    heads = ["warm p@10", "warm NDCG@10", "warm AUC", "cold p@10", "cold AUC", "fit s"]
    print(f"\n{title}")
    print(f"| model | {' | '.join(heads)} | chosen on validation |")
    print("|---|" + "---:|" * len(heads) + "---|")
    for name, results in rows.items():
        cells = []
        for c in cols:
            vals = [r[c] for r in results if r[c] == r[c]]
            med = statistics.median(vals) if vals else float("nan")
            spread = (max(vals) - min(vals)) if len(vals) > 1 else 0.0
            fmt = f"{med:.2f}" if c == "fit_s" else f"{med:.4f}"
            if c.startswith("warm") and c != "warm_auc" and len(vals) > 1:
                fmt += f" ±{spread / 2:.4f}"
            cells.append(fmt)
        picks = "; ".join(
            ",".join(f"{k}={v}" for k, v in p.items()) or "-" for p in chosen.get(name, [])
        )
        print(f"| {name} | {' | '.join(cells)} | {picks} |")


def choose_defaults(df, uf, itf, seeds: int) -> None:
    """The blend's defaults, chosen on validation only: every grid point of the blend
    (through ``hybridrec.model``, as ``train`` fits it) measured on each seed's
    validation split (carved from train), medians over seeds; the test split is never
    read."""
    cand = Candidate(
        "blend",
        fit_proposed,
        grid(lam=[250.0, 500.0, 1000.0], w=[0.5, 1.0, 1.5, 2.0], cap=[CAP], pop=[1.0]),
    )
    results: dict[tuple, list[dict]] = {}
    for seed in range(seeds):
        val, _ = tasks_for_seed(df, uf, itf, seed)
        for params in cand.grid:
            res = measure(val, cand.fit(val, params))
            results.setdefault(tuple(sorted(params.items())), []).append(res)
        print(f"seed {seed} done", flush=True)
    print("\n| l2 | weight | val warm p@10 | val warm NDCG@10 | val cold p@10 | val cold AUC |")
    print("|---:|---:|---:|---:|---:|---:|")
    for key, rs in results.items():
        p = dict(key)
        med = {c: statistics.median(r[c] for r in rs) for c in rs[0]}
        print(
            f"| {p['lam']:g} | {p['w']:g} | {med['warm_precision']:.4f} | "
            f"{med['warm_ndcg']:.4f} | {med['cold_precision']:.4f} | {med['cold_auc']:.4f} |"
        )


def main() -> None:
    global THREADS
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated model names (substring match)")
    ap.add_argument(
        "--study",
        default="peers",
        help=f"comma-separated, from {', '.join(STUDIES)} (one run shares fitted models)",
    )
    ap.add_argument(
        "--choose-defaults",
        action="store_true",
        help="the blend's grid on validation splits only (how its defaults were chosen)",
    )
    args = ap.parse_args()
    THREADS = args.threads

    sample = load_sample()
    df = sample.interactions
    uf = _coerce_features(sample.user_features)
    itf = _coerce_features(sample.item_features)
    if args.choose_defaults:
        return choose_defaults(df, uf, itf, args.seeds)
    unique = {c.name: c for study in args.study.split(",") for c in STUDIES[study]}
    only = [s for s in args.only.split(",") if s]
    candidates = [c for c in unique.values() if not only or any(s in c.name for s in only)]
    rows: dict[str, list[dict]] = {c.name: [] for c in candidates}
    chosen: dict[str, list] = {c.name: [] for c in candidates}
    for seed in range(args.seeds):
        val, test = tasks_for_seed(df, uf, itf, seed)
        print(
            f"seed {seed}: train {test.X.nnz} interactions, {len(test.users)} users, "
            f"{len(test.items)} items; test {test.warm.size} warm, {len(test.cold)} cold users",
            flush=True,
        )
        for cand in candidates:
            params, _ = choose(cand, val)
            res = measure(test, cand.fit(test, params))
            rows[cand.name].append(res)
            chosen[cand.name].append(params)
            print(
                f"  {cand.name:<24} {params} warm p@10 {res['warm_precision']:.4f} "
                f"ndcg {res['warm_ndcg']:.4f} auc {res['warm_auc']:.4f} "
                f"cold p@10 {res['cold_precision']:.4f} auc {res['cold_auc']:.4f} "
                f"fit {res['fit_s']:.2f}s",
                flush=True,
            )
        val.cache.clear()
        test.cache.clear()
    print_table(f"median over {args.seeds} seeds (± half the range over seeds)", rows, chosen)


if __name__ == "__main__":
    main()
