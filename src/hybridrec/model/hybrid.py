"""The hybrid LightFM model with labelled fitting and ``predict_online``.

Pure model math: no Redis, Flask or files here. Shapes: ``d = no_components``;
item factors for serving are ``(n_items, d + 2)`` rows ``[q_i, b_i, 1]`` and a user
vector is ``[q_u, 1, b_u]``, so that ``user_vector @ item_factors.T`` equals
``LightFM.predict`` (``q_u . q_i + b_u + b_i``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from lightfm import LightFM

from .features import Features, FeatureSpace, Row, feature_names, flatten
from .idmap import IdMap, as_strings

__all__ = ["HybridLightFM", "OnlinePrediction", "NotFittedError", "USER_CASES"]

USER_CASES = ("known_with_features", "known", "new_with_features", "unknown")


class NotFittedError(RuntimeError):
    """The model was used before ``fit``."""


@dataclass(frozen=True)
class OnlinePrediction:
    """Scores for the scorable items, in request order (catalog order by default)."""

    item_ids: list[str]
    scores: np.ndarray
    unscorable: list[str]
    strategy: str  # "personalized" | "baseline"
    user_case: str  # one of USER_CASES
    unknown_user_features: int = 0
    unknown_item_features: int = 0
    extra: dict = field(default_factory=dict)

    def top(self, k: int, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """The ``k`` best ``(item_id, score)`` pairs, best first, without ``exclude``."""
        excluded = set(exclude)
        order = np.argsort(-self.scores, kind="stable")
        out: list[tuple[str, float]] = []
        if k <= 0:
            return out
        for i in order:
            item = self.item_ids[i]
            if item in excluded:
                continue
            out.append((item, float(self.scores[i])))
            if len(out) == k:
                break
        return out


def _coerce_features(
    features: Mapping[str, Features] | pd.DataFrame | None,
) -> dict[str, dict[str, float]]:
    """``{entity: {feature: weight}}`` from a mapping or a long ``id,feature[,weight]`` frame."""
    if features is None:
        return {}
    if isinstance(features, pd.DataFrame):
        weights = features["weight"] if "weight" in features else pd.Series(1.0, features.index)
        out: dict[str, dict[str, float]] = {}
        for eid, name, w in zip(
            features["id"].astype(str), features["feature"].astype(str), weights.astype(float)
        ):
            out.setdefault(eid, {})[name] = out.get(eid, {}).get(name, 0.0) + w
        return out
    return {str(k): {str(n): float(w) for n, w in v.items()} for k, v in features.items()}


class HybridLightFM(LightFM):
    """LightFM fitted on labelled data, with id maps and ``predict_online``.

    Parameters beyond LightFM's: ``epochs`` (default for ``fit``), ``user_indicators`` and
    ``item_indicators`` (one identity feature per training entity), ``user_feature_weight``
    and ``item_feature_weight`` (share of the features next to an indicator, see
    :mod:`hybridrec.model.features`) and ``normalize``.
    """

    def __init__(
        self,
        no_components: int = 64,
        k: int = 5,
        n: int = 10,
        learning_schedule: str = "adagrad",
        loss: str = "warp",
        learning_rate: float = 0.05,
        rho: float = 0.95,
        epsilon: float = 1e-6,
        item_alpha: float = 0.0,
        user_alpha: float = 0.0,
        max_sampled: int = 10,
        random_state: int | None = None,
        *,
        epochs: int = 20,
        user_indicators: bool = True,
        item_indicators: bool = True,
        user_feature_weight: float = 1.0,
        item_feature_weight: float = 1.0,
        normalize: bool = True,
    ):
        super().__init__(
            no_components=no_components,
            k=k,
            n=n,
            learning_schedule=learning_schedule,
            loss=loss,
            learning_rate=learning_rate,
            rho=rho,
            epsilon=epsilon,
            item_alpha=item_alpha,
            user_alpha=user_alpha,
            max_sampled=max_sampled,
            random_state=random_state,
        )
        self.seed = random_state
        self.epochs = epochs
        self.user_indicators = user_indicators
        self.item_indicators = item_indicators
        self.user_feature_weight = user_feature_weight
        self.item_feature_weight = item_feature_weight
        self.normalize = normalize

    # -- hyperparameters -------------------------------------------------------------

    _PARAMS = (
        "no_components", "k", "n", "learning_schedule", "loss", "learning_rate", "rho",
        "epsilon", "item_alpha", "user_alpha", "max_sampled", "epochs", "user_indicators",
        "item_indicators", "user_feature_weight", "item_feature_weight", "normalize",
    )  # fmt: skip

    def get_params(self, deep: bool = True) -> dict:
        params = {name: getattr(self, name) for name in self._PARAMS}
        params["random_state"] = self.seed
        return params

    # -- fitting -----------------------------------------------------------------------

    def fit(  # type: ignore[override]
        self,
        interactions: pd.DataFrame,
        user_features: Mapping[str, Features] | pd.DataFrame | None = None,
        item_features: Mapping[str, Features] | pd.DataFrame | None = None,
        *,
        epochs: int | None = None,
        num_threads: int = 1,
        callback: Callable[[int, float], None] | None = None,
    ) -> HybridLightFM:
        """Fit on ``interactions`` (columns ``user_id, item_id[, weight]``).

        Users and items of ``interactions`` become the known entities; feature vocabularies
        are the feature names of known entities. ``callback(epoch, seconds)`` runs after
        each epoch. Returns ``self``.
        """
        if interactions is None or len(interactions) == 0:
            raise ValueError("cannot fit on zero interactions")
        user_feats = _coerce_features(user_features)
        item_feats = _coerce_features(item_features)
        self._set_training_data(interactions, user_feats, item_feats)
        self._reset_state()
        self.epoch_seconds_: list[float] = []
        return self._train(self.epochs if epochs is None else epochs, num_threads, callback)

    def _set_training_data(
        self,
        interactions: pd.DataFrame,
        user_feats: dict[str, dict[str, float]],
        item_feats: dict[str, dict[str, float]],
        base: HybridLightFM | None = None,
    ) -> None:
        """Id maps, vocabularies, feature matrices, interaction matrix and popularity.

        With ``base``, its id maps and vocabularies keep their order and new ids and
        feature names are appended (so the base's embedding rows can be carried over).
        """
        users = as_strings(interactions["user_id"])
        items = as_strings(interactions["item_id"])
        weights = (
            interactions["weight"].to_numpy(np.float64)
            if "weight" in interactions
            else np.ones(len(interactions), np.float64)
        )
        new_users = pd.unique(users)
        new_items = pd.unique(items)
        # flattened once: the vocabulary and (without a base, same ids) the matrix
        flat_u = flatten(list(new_users), user_feats)
        flat_i = flatten(list(new_items), item_feats)
        user_vocab = feature_names(new_users, user_feats, flat_u)
        item_vocab = feature_names(new_items, item_feats, flat_i)
        if base is None:
            user_ids, item_ids = IdMap.from_values(new_users), IdMap.from_values(new_items)
            uv, iv = IdMap.from_values(user_vocab), IdMap.from_values(item_vocab)
        else:
            user_ids = base.user_space_.entities.extend(new_users)
            item_ids = base.item_space_.entities.extend(new_items)
            uv = base.user_space_.vocabulary.extend(user_vocab)
            iv = base.item_space_.vocabulary.extend(item_vocab)
        self.user_space_ = FeatureSpace(
            user_ids, uv, self.user_indicators, self.user_feature_weight, self.normalize
        )
        self.item_space_ = FeatureSpace(
            item_ids, iv, self.item_indicators, self.item_feature_weight, self.normalize
        )
        same = base is None  # then the maps hold exactly new_users / new_items, in order
        self.user_matrix_ = self.user_space_.matrix(
            user_ids.external, user_feats, flat_u if same else None
        )
        self.item_matrix_ = self.item_space_.matrix(
            item_ids.external, item_feats, flat_i if same else None
        )
        # All-empty rows (no indicators, only zero weights) make LightFM diverge to NaN.
        for side, matrix in (("user", self.user_matrix_), ("item", self.item_matrix_)):
            if matrix.nnz == 0:
                raise ValueError(
                    f"the {side} side has no features at all: turn its indicators on or "
                    "give its entities features with positive weights"
                )
        rows = user_ids.convert_to_internal(users)
        cols = item_ids.convert_to_internal(items)
        shape = (len(user_ids), len(item_ids))
        # Duplicate (user, item) pairs are summed: LightFM expects one entry per pair.
        weight_m = sp.coo_matrix((weights, (rows, cols)), shape=shape).tocsr().tocoo()
        # summed in float64, then kept within float32: LightFM refuses infinite weights
        f32 = np.finfo(np.float32).max
        weight_m.data = np.clip(weight_m.data, -f32, f32).astype(np.float32)
        inter_m = sp.coo_matrix(
            (np.ones_like(weight_m.data), (weight_m.row, weight_m.col)), shape=shape
        )
        self.interactions_ = inter_m.tocsr()
        self._sample_weight = weight_m if not np.allclose(weight_m.data, 1.0) else None
        popularity = np.asarray(weight_m.tocsr().sum(axis=0, dtype=np.float64)).ravel()
        self.popularity_ = np.minimum(popularity, f32).astype(np.float32)

    def warm_start(
        self,
        interactions: pd.DataFrame,
        user_features: Mapping[str, Features] | pd.DataFrame | None = None,
        item_features: Mapping[str, Features] | pd.DataFrame | None = None,
        *,
        epochs: int | None = None,
        num_threads: int = 1,
        callback: Callable[[int, float], None] | None = None,
    ) -> HybridLightFM:
        """A new model that continues from this one on ``interactions``.

        LightFM cannot grow its embeddings, so this does: known users, items and feature
        names keep their rows and optimizer accumulators; new ones get rows initialised
        as LightFM initialises them (uniform in +-0.5/d, zero biases, fresh accumulators);
        then ``epochs`` passes of ``fit_partial``. Needs the optimizer state (load the
        artifact with ``with_optimizer=True``). This model is left unchanged.
        """
        self._check_fitted()
        if getattr(self, "item_embedding_gradients", None) is None:
            raise NotFittedError(
                "warm start needs the optimizer state: load the artifact with with_optimizer=True"
            )
        if interactions is None or len(interactions) == 0:
            raise ValueError("cannot train on zero interactions")
        new = type(self)(**self.get_params())
        new._set_training_data(
            interactions,
            _coerce_features(user_features),
            _coerce_features(item_features),
            base=self,
        )
        for side in ("user", "item"):
            old_space = getattr(self, f"{side}_space_")
            new_space = getattr(new, f"{side}_space_")
            cols = np.arange(old_space.n_columns)
            target = np.where(
                cols < old_space.n_indicators,
                cols,
                new_space.n_indicators + (cols - old_space.n_indicators),
            )
            d = self.no_components
            n = new_space.n_columns
            emb = ((new.random_state.rand(n, d) - 0.5) / d).astype(np.float32)
            emb[target] = getattr(self, f"{side}_embeddings")
            setattr(new, f"{side}_embeddings", emb)
            fresh = 1.0 if self.learning_schedule == "adagrad" else 0.0
            for name, shape, fill in (
                (f"{side}_biases", (n,), 0.0),
                (f"{side}_embedding_gradients", (n, d), fresh),
                (f"{side}_bias_gradients", (n,), fresh),
                (f"{side}_embedding_momentum", (n, d), 0.0),
                (f"{side}_bias_momentum", (n,), 0.0),
            ):
                arr = np.full(shape, fill, dtype=np.float32)
                arr[target] = getattr(self, name)
                setattr(new, name, arr)
        new.epoch_seconds_ = []
        return new._train(self.epochs if epochs is None else epochs, num_threads, callback)

    def _train(
        self, epochs: int, num_threads: int, callback: Callable[[int, float], None] | None
    ) -> HybridLightFM:
        """``epochs`` passes of ``fit_partial``, calling ``callback(epoch, seconds)``."""
        for epoch in range(epochs):
            self._fit_epochs(1, num_threads)
            if callback is not None:
                callback(epoch, self.epoch_seconds_[-1])
        return self

    def _fit_epochs(self, epochs: int, num_threads: int) -> None:
        # LightFM averages its learning rate over the features of a pair's rows: a pair whose
        # user row and item row are both empty (no indicators, no features) gives 0/0 = NaN
        # and the whole model diverges. Such a pair has no parameter to learn: leave it out.
        coo = self.interactions_.tocoo()
        weight = self._sample_weight
        keep = (np.diff(self.user_matrix_.indptr) > 0)[coo.row] | (
            np.diff(self.item_matrix_.indptr) > 0
        )[coo.col]
        if not keep.all():
            coo = sp.coo_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=coo.shape)
            if weight is not None:
                weight = sp.coo_matrix(
                    (weight.data[keep], (weight.row[keep], weight.col[keep])), shape=weight.shape
                )
        self.epoch_interactions_ = int(coo.nnz)
        for _ in range(epochs):
            t0 = time.perf_counter()
            LightFM.fit_partial(
                self,
                coo,
                user_features=self.user_matrix_,
                item_features=self.item_matrix_,
                sample_weight=weight,
                epochs=1,
                num_threads=num_threads,
            )
            self.epoch_seconds_.append(time.perf_counter() - t0)

    # -- state ---------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if getattr(self, "item_embeddings", None) is None or not hasattr(self, "item_space_"):
            raise NotFittedError("this model is not fitted yet: call fit() or load an artifact")

    @property
    def user_ids_(self) -> IdMap:
        self._check_fitted()
        return self.user_space_.entities

    @property
    def item_ids_(self) -> IdMap:
        self._check_fitted()
        return self.item_space_.entities

    # -- representations for serving -------------------------------------------------------

    def item_factors(self, matrix: sp.csr_matrix | None = None) -> np.ndarray:
        """``(n, d + 2)`` float32 rows ``[q_i, b_i, 1]`` of item feature rows ``matrix``
        (``(n, n_columns)``, built by ``item_space_``); default: the known items."""
        self._check_fitted()
        m = (self.item_matrix_ if matrix is None else matrix).tocsr().astype(np.float64)
        if matrix is not None:  # a few rows: only the embeddings they use, not all of them
            cols = np.unique(m.indices)
            m = m[:, cols]
        else:
            cols = slice(None)
        out = np.empty((m.shape[0], self.no_components + 2), dtype=np.float64)
        out[:, :-2] = m @ self.item_embeddings[cols].astype(np.float64)
        out[:, -2] = m @ self.item_biases[cols].astype(np.float64)
        out[:, -1] = 1.0
        return np.ascontiguousarray(out.astype(np.float32))

    def _row_vector(self, row: Row, side: str) -> np.ndarray:
        emb = self.item_embeddings if side == "item" else self.user_embeddings
        bias = self.item_biases if side == "item" else self.user_biases
        v = row.values.astype(np.float64)
        out = np.empty(emb.shape[1] + 2, dtype=np.float64)
        out[:-2] = v @ emb[row.indices].astype(np.float64)
        b = float(v @ bias[row.indices].astype(np.float64))
        out[-2:] = (b, 1.0) if side == "item" else (1.0, b)
        return out

    def user_row(self, user_id: str | None, features: Features | None = None) -> Row:
        """The user's feature row: training features if known and ``features`` is None."""
        self._check_fitted()
        if features is None and user_id is not None:
            idx = self.user_space_.entities.get(user_id)
            if idx is not None:
                return self._stored_row(self.user_matrix_, idx, self.user_space_)
        return self.user_space_.row(user_id, features)

    def item_row(self, item_id: str, features: Features | None = None) -> Row:
        """The item's feature row: training features if known and ``features`` is None."""
        self._check_fitted()
        if features is None:
            idx = self.item_space_.entities.get(item_id)
            if idx is not None:
                return self._stored_row(self.item_matrix_, idx, self.item_space_)
        return self.item_space_.row(item_id, features)

    @staticmethod
    def _stored_row(matrix: sp.csr_matrix, idx: int, space: FeatureSpace) -> Row:
        lo, hi = matrix.indptr[idx], matrix.indptr[idx + 1]
        indices = matrix.indices[lo:hi].astype(np.int32)
        has_ind = bool(space.use_indicators and np.any(indices < space.n_indicators))
        return Row(
            indices=indices,
            values=matrix.data[lo:hi].astype(np.float32),
            has_indicator=has_ind,
            n_known_features=int(np.sum(indices >= space.n_indicators)),
            n_unknown_features=0,
        )

    def user_case(self, user_id: str | None, row: Row) -> str:
        """One of ``USER_CASES``: is the user known to the model, does ``row`` (their
        feature row) carry a feature the model knows?"""
        known = user_id is not None and user_id in self.user_space_.entities
        if row.n_known_features:
            return "known_with_features" if known else "new_with_features"
        return "known" if known else "unknown"

    def user_vector(self, row: Row) -> np.ndarray | None:
        """``[q_u, 1, b_u]`` (float64, length d + 2) of a user row, or None when empty."""
        return None if row.empty else self._row_vector(row, "user")

    def item_vector(self, row: Row) -> np.ndarray | None:
        """``[q_i, b_i, 1]`` (float64, length d + 2) of an item row, or None when empty."""
        return None if row.empty else self._row_vector(row, "item")

    def baseline_scores(self) -> np.ndarray:
        """Popularity of the known items in training (sum of weights), float32."""
        self._check_fitted()
        return self.popularity_

    # -- online prediction ---------------------------------------------------------------

    def predict_online(
        self,
        user_id: str | None = None,
        user_features: Features | None = None,
        item_ids: Iterable[str] | None = None,
        item_features: Mapping[str, Features] | None = None,
    ) -> OnlinePrediction:
        """Score items for whatever is known about a user: all 16 cases of DESIGN.md.

        ``user_features=None`` means the features the model saw in training (for a known
        user) or none; a mapping, even empty, replaces them. ``item_features`` maps item ids
        to features in the same way; items absent from it keep their training features.
        ``item_ids=None`` scores every known item. Items with neither an indicator nor a
        known feature are returned in ``unscorable``. A user with neither gets popularity
        scores (``strategy="baseline"``).
        """
        self._check_fitted()
        uid = None if user_id is None else str(user_id)
        urow = self.user_row(uid, user_features)
        user_case = self.user_case(uid, urow)
        item_features = item_features or {}

        if item_ids is None and not item_features:
            ids = list(self.item_space_.entities.external)
            factors = self.item_factors().astype(np.float64)
            # A known item with neither indicator nor features has an empty row: unscorable.
            rows_ok = np.diff(self.item_matrix_.indptr) > 0
            popularity = self.popularity_.astype(np.float64)
            unknown_item = 0
        else:
            ids = (
                list(self.item_space_.entities.external)
                if item_ids is None
                else [str(i) for i in item_ids]
            )
            d = self.no_components
            factors = np.zeros((len(ids), d + 2), dtype=np.float64)
            rows_ok = np.zeros(len(ids), dtype=bool)
            popularity = np.zeros(len(ids), dtype=np.float64)
            unknown_item = 0
            for n, item in enumerate(ids):
                row = self.item_row(item, item_features.get(item))
                unknown_item += row.n_unknown_features
                vec = self.item_vector(row)
                if vec is not None:
                    factors[n] = vec
                    rows_ok[n] = True
                idx = self.item_space_.entities.get(item)
                if idx is not None:
                    popularity[n] = self.popularity_[idx]

        scorable = [i for i, ok in zip(ids, rows_ok) if ok]
        unscorable = [i for i, ok in zip(ids, rows_ok) if not ok]
        uvec = self.user_vector(urow)
        if uvec is None:
            scores = popularity[rows_ok]
            strategy = "baseline"
        else:
            scores = factors[rows_ok] @ uvec
            strategy = "personalized"
        return OnlinePrediction(
            item_ids=scorable,
            scores=scores,
            unscorable=unscorable,
            strategy=strategy,
            user_case=user_case,
            unknown_user_features=urow.n_unknown_features,
            unknown_item_features=unknown_item,
        )

    def similar_items(self, item_id: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` known items nearest to ``item_id`` by cosine of latent vectors."""
        self._check_fitted()
        idx = self.item_space_.entities.get(item_id)
        if idx is None:
            raise KeyError(f"item {item_id!r} is not in the model")
        q = self.item_factors()[:, :-2].astype(np.float64)
        norms = np.linalg.norm(q, axis=1)
        norms[norms == 0] = 1.0
        sims = (q @ q[idx]) / (norms * norms[idx])
        sims[idx] = -np.inf
        k = min(k, len(sims) - 1)
        top = np.argpartition(-sims, k)[:k] if k < len(sims) else np.arange(len(sims))
        top = top[np.argsort(-sims[top], kind="stable")]
        ext = self.item_space_.entities.external
        return [(ext[i], float(sims[i])) for i in top]
