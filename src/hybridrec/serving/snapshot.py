"""The serving snapshot: everything a request needs from one model version, frozen.

A :class:`Snapshot` holds the item representations of a model version with biases folded
in (rows ``[q_i, b_i, 1]``, float32, C-contiguous), the id maps, the popularity baseline
and latent norms for similar items. A request builds one user vector ``[q_u, 1, b_u]``,
scores the item rows, masks exclusions and takes the top k.

Scoring is exact but does not read every item row on large catalogs (see
:class:`_Bounds`): an upper bound of every score is computed from ``r + 2`` floats per
item (the first ``r`` principal directions of the latent vectors, the bias, and a
Cauchy-Schwarz bound on the rest), and only the few items whose bound reaches the k-th
best exact score are scored in full. At 100k items that reads 10 floats per item instead
of 66, and the bound array fits in the CPU cache.

New and changed catalog items arrive between trainings. They are **appended** to an
:class:`_ItemTable` whose rows, once written, never change; a snapshot sees the rows below
its own length, so appending for the next snapshot never disturbs a request that is
reading the current one. A changed item gets a new row and its old row joins the
snapshot's ``dead`` rows (masked out at scoring time); a deleted item only joins
``dead``. When the table's spare capacity is used up, or dead rows exceed a quarter of
it, :meth:`Snapshot.with_items` compacts: the live rows are copied into a fresh table.
Memory is therefore bounded (at most two tables while old requests finish) and every
change is visible in the very next snapshot.

Pure numpy: no Redis, Flask or files here. Which features a user has is decided by the
caller (see :meth:`Snapshot.recommend`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..model.features import Features
from ..model.foldin import fold_in_vector, latent_centroid
from ..model.hybrid import HybridLightFM

__all__ = ["Recommendation", "Snapshot", "UnknownItem"]

_MIN_SPARE = 1024
_SPARE_FRACTION = 0.25  # spare rows and the dead-row share that triggers a compaction
_BOUND_DIMS = 8  # principal directions kept in the bound array
_BOUND_MIN_ROWS = 4096  # below this a full product is as fast as the bounded scan
# The bound must hold for float32 arithmetic too: every rounding error in the scan and
# in the exact product is below 1e-5 of the terms' magnitude, so this margin is safe.
_BOUND_MARGIN = 1e-4


class UnknownItem(KeyError):
    """The item is not in the snapshot (never seen, unscorable or deleted)."""


@dataclass(frozen=True)
class Recommendation:
    """The answer to one recommendation request, best item first."""

    items: list[tuple[str, float]]
    unscorable: list[str]
    strategy: str  # "personalized" | "baseline"
    user_case: str  # one of hybridrec.model.USER_CASES
    unknown_user_features: int = 0


class _Bounds:
    """Upper bounds of ``q_u . q_i + b_i`` for all items from ``r + 2`` floats per item.

    With ``V`` the principal directions of the item latent vectors (eigenvectors of
    ``Q^T Q``, largest first), ``q_u . q_i = (V^T q_u) . (V^T q_i)``; the first ``r``
    coordinates are kept per item and the rest is bounded by Cauchy-Schwarz:
    ``|rest_u . rest_i| <= |rest_u| |rest_i|``. ``columns`` is ``(r + 2, capacity)``
    float32, one contiguous row per coordinate (a streaming scan), rows
    ``V_r^T q_i``, ``b_i`` and ``|rest_i|``.
    """

    def __init__(self, factors: np.ndarray, dims: int, capacity: int):
        q = factors[:, :-2].astype(np.float64)
        d = q.shape[1]
        dims = max(0, min(dims, d))
        _, vectors = np.linalg.eigh(q.T @ q)
        self.rotation = np.ascontiguousarray(vectors[:, ::-1])  # (d, d) float64
        self.rotation32 = self.rotation.astype(np.float32)
        self.dims = dims
        self.columns = np.zeros((dims + 2, capacity), dtype=np.float32)
        self.max_norm = 0.0  # of the latent vectors |q_i|
        self.max_bias = 0.0  # of |b_i|
        self.write(0, factors)

    def write(self, start: int, rows: np.ndarray) -> None:
        """Bound columns of ``rows`` (``(m, d + 2)`` item rows) at ``start``."""
        if not len(rows):
            return
        q = rows[:, :-2].astype(np.float64)
        rotated = q @ self.rotation
        r, end = self.dims, start + len(rows)
        self.columns[:r, start:end] = rotated[:, :r].T
        self.columns[r, start:end] = rows[:, -2]
        self.columns[r + 1, start:end] = np.linalg.norm(rotated[:, r:], axis=1)
        self.max_norm = max(self.max_norm, float(np.linalg.norm(q, axis=1).max()))
        self.max_bias = max(self.max_bias, float(np.abs(rows[:, -2]).max()))

    def scan(self, uvec: np.ndarray, length: int) -> tuple[np.ndarray, float]:
        """``(bounds of the first length items, margin)``: ``score_i - b_u`` is at most
        ``bound_i + margin``, float32 rounding included.
        """
        q = uvec[:-2]
        rotated = q @ self.rotation32
        r = self.dims
        rest = rotated[r:]
        head = np.empty(r + 2, dtype=np.float32)
        head[:r] = rotated[:r]
        head[r:] = (1.0, math.sqrt(float(rest @ rest)))
        bounds = head @ self.columns[:, :length]
        scale = math.sqrt(float(q @ q)) * self.max_norm + self.max_bias + abs(float(uvec[-1]))
        return bounds, _BOUND_MARGIN * scale + 1e-30


class _ItemTable:
    """Append-only item rows with spare capacity.

    Only the snapshot at the tip (``length == table.length``) may append; rows below
    ``length`` are never written again, so snapshots sharing the table stay valid.
    ``bound_dims``: keep a :class:`_Bounds` array with that many principal directions
    (``None``: none; scoring then always reads every row).
    """

    def __init__(
        self,
        factors: np.ndarray,
        popularity: np.ndarray,
        ids: Sequence[str],
        from_store: np.ndarray | None = None,
        bound_dims: int | None = None,
    ):
        n, width = factors.shape
        capacity = n + max(_MIN_SPARE, int(n * _SPARE_FRACTION))
        self.factors = np.zeros((capacity, width), dtype=np.float32)
        self.factors[:n] = factors
        self.popularity = np.zeros(capacity, dtype=np.float32)
        self.popularity[:n] = popularity
        self.norms = np.ones(capacity, dtype=np.float32)
        q_norms = np.linalg.norm(factors[:, :-2], axis=1)
        self.norms[:n] = np.where(q_norms > 0, q_norms, 1.0)
        self.from_store = np.zeros(capacity, dtype=bool)
        if from_store is not None:
            self.from_store[:n] = from_store
        self.ids: list[str] = list(ids)
        self.length = n
        self.bound_dims = bound_dims
        self.bounds = None if bound_dims is None else _Bounds(factors, bound_dims, capacity)

    @property
    def capacity(self) -> int:
        return self.factors.shape[0]

    def append(self, rows: list[tuple[str, np.ndarray, float]]) -> None:
        start = self.length
        for offset, (item_id, vec, pop) in enumerate(rows):
            at = start + offset
            self.factors[at] = vec
            self.popularity[at] = pop
            norm = float(np.linalg.norm(vec[:-2]))
            self.norms[at] = norm if norm > 0 else 1.0
            self.from_store[at] = True
            self.ids.append(item_id)
        if self.bounds is not None and rows:
            self.bounds.write(start, self.factors[start : start + len(rows)])
        self.length = start + len(rows)

    def top_k(
        self, uvec: np.ndarray, length: int, k: int, masked: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(rows, exact scores)`` of the ``k`` best of the first ``length`` rows, best
        first, ties by row; ``masked`` rows never. ``None`` when the bounds cannot help
        (no bound array, k too large, fewer than k finite candidates, or so loose a bound
        that a full product is cheaper): then score every row.

        Exact: the k best bounds are scored in full; their worst exact score is a lower
        bound of the k-th best, so only rows whose bound reaches it can be in the top k,
        and those are scored in full too. Full scores are summed in float64 and rounded
        to float32, so an item's score does not depend on which rows were read with it
        (a float32 product can differ in the last bit from one set of rows to another).
        """
        if self.bounds is None or length < 8 * k:
            return None
        bounds, margin = self.bounds.scan(uvec, length)
        if masked.size:
            bounds[masked] = -np.inf
        first = _top_k(bounds, k)
        if first.size < k:
            return None
        u64 = uvec.astype(np.float64)
        floor = float((self.factors[first] @ u64).min()) - float(uvec[-1]) - margin
        rows = np.flatnonzero(bounds >= floor)
        if rows.size > length // 4:  # a bound this loose reads more than a full product
            return None
        scores = (self.factors[rows] @ u64).astype(np.float32)
        top = _top_k(scores, k)
        return rows[top], scores[top]


@dataclass(frozen=True)
class Snapshot:
    """One model version plus the catalog changes applied so far; never mutated.

    Build with :meth:`from_model`; derive the next one with :meth:`with_items`.
    """

    model: HybridLightFM
    version: str
    manifest: dict
    loaded_at: float  # time.time() when this model version was first loaded
    _table: _ItemTable = field(repr=False)
    _length: int = field(repr=False)
    _base: Mapping[str, int] = field(repr=False)  # id -> row of the model's items
    _overlay: Mapping[str, int] = field(repr=False)  # id -> row (-1: gone), wins over _base
    _dead: np.ndarray = field(repr=False)  # sorted int64 rows masked out at scoring
    changed_at: float = 0.0  # time.time() of the last catalog change applied
    _centroid: np.ndarray | None = field(default=None, repr=False)  # fold-in, (d,)

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_model(
        cls,
        model: HybridLightFM,
        *,
        version: str | None = None,
        manifest: dict | None = None,
        bound_dims: int | None = None,
    ) -> Snapshot:
        """The snapshot of a fitted model's known items with their training features.

        ``bound_dims``: principal directions of the bounded scan (see :class:`_Bounds`);
        ``None`` chooses: from 4096 items on, the bounded scan with 8 directions if it is
        faster than a full product on a few of the model's own users, measured here (how
        well the bound prunes depends on the model); 0 turns it off. Results are the same
        either way.
        """
        manifest = manifest if manifest is not None else getattr(model, "manifest_", {})
        ids = model.item_space_.entities.external
        factors = model.item_factors()
        popularity = model.baseline_scores()
        # A known item with an empty row (no indicator, no feature) cannot be scored.
        empty = np.flatnonzero(np.diff(model.item_matrix_.indptr) == 0).astype(np.int64)
        now = time.time()
        choose = bound_dims is None
        if choose:
            bound_dims = _BOUND_DIMS if len(ids) >= _BOUND_MIN_ROWS else 0
        table = _ItemTable(factors, popularity, ids, bound_dims=bound_dims or None)
        snap = cls(
            model=model,
            version=version or str(manifest.get("version", "unversioned")),
            manifest=manifest,
            loaded_at=now,
            _table=table,
            _length=table.length,
            _base=model.item_space_.entities._index,
            _overlay={},
            _dead=empty,
            changed_at=now,
            _centroid=latent_centroid(factors) if len(ids) else None,
        )
        if choose and bound_dims:
            plain = replace(snap, _table=_ItemTable(factors, popularity, ids))
            return snap if _faster(snap, plain) else plain
        return snap

    def with_items(self, changes: Mapping[str, Features | None]) -> Snapshot:
        """A new snapshot with ``changes`` applied: ``{item_id: features}`` puts the item
        with exactly these features (known items keep their indicator), ``None`` deletes.

        Returns ``self`` when nothing changes. Items whose row would be empty become
        unscorable, like a deleted item.
        """
        model = self.model
        overlay = dict(self._overlay)
        dead = set(self._dead.tolist())
        table = self._table
        ids = [str(i) for i, f in changes.items() if f is not None]
        # every put in one pass: rows built exactly as training builds them, then one
        # sparse product for all their [q_i, b_i, 1] vectors
        puts = {str(i): f for i, f in changes.items() if f is not None}
        matrix = model.item_space_.matrix(ids, puts)
        vectors = model.item_factors(matrix)
        scorable = np.diff(matrix.indptr) > 0
        old_rows = np.asarray([-1 if (r := self._row(i)) is None else r for i in ids], np.int64)
        had = old_rows >= 0
        same = np.zeros(len(ids), dtype=bool)
        if had.any():  # unchanged (within float noise): keep the row, no churn
            same[had] = np.all(
                np.isclose(table.factors[old_rows[had]], vectors[had], rtol=1e-6, atol=1e-6),
                axis=1,
            )
        appends: list[tuple[str, np.ndarray, float]] = []
        known = model.item_space_.entities
        for n, item_id in enumerate(ids):
            old = int(old_rows[n])
            if not scorable[n] or not same[n]:
                if old >= 0:
                    dead.add(old)
                    overlay[item_id] = -1
            if not scorable[n] or same[n]:
                continue
            if old >= 0:
                pop = float(table.popularity[old])
            else:  # new, or a known item deleted earlier and put back
                idx = known.get(item_id)
                pop = float(model.popularity_[idx]) if idx is not None else 0.0
            appends.append((item_id, vectors[n], pop))
        for raw_id, features in changes.items():
            if features is None:
                item_id = str(raw_id)
                old = self._row(item_id)
                if old is not None:
                    dead.add(old)
                    overlay[item_id] = -1
        if not appends and len(dead) == self._dead.size:
            return self

        table, length = self._table, self._length
        fits = length == table.length and length + len(appends) <= table.capacity
        too_dead = len(dead) > _SPARE_FRACTION * max(length, 1)
        if fits and not too_dead:
            for offset, (item_id, _, _) in enumerate(appends):
                overlay[item_id] = length + offset
            table.append(appends)
            return self._next(table, length + len(appends), self._base, overlay, dead)
        return self._compacted(overlay, dead, appends)

    def _next(self, table, length, base, overlay, dead) -> Snapshot:
        return replace(
            self,
            _table=table,
            _length=length,
            _base=base,
            _overlay=overlay,
            _dead=np.fromiter(sorted(dead), dtype=np.int64, count=len(dead)),
            changed_at=time.time(),
        )

    def _compacted(self, overlay, dead, appends) -> Snapshot:
        """Copy the live rows and ``appends`` into a fresh table."""
        alive = np.ones(self._length, dtype=bool)
        if dead:
            alive[np.fromiter(dead, dtype=np.int64, count=len(dead))] = False
        rows = np.flatnonzero(alive)
        src = self._table
        width = src.factors.shape[1]
        ids = [src.ids[r] for r in rows] + [item_id for item_id, _, _ in appends]
        new_rows = np.asarray([v for _, v, _ in appends], np.float32).reshape(-1, width)
        factors = np.concatenate([src.factors[rows], new_rows])
        popularity = np.concatenate(
            [src.popularity[rows], np.asarray([p for _, _, p in appends], np.float32)]
        )
        from_store = np.concatenate([src.from_store[rows], np.ones(len(appends), dtype=bool)])
        table = _ItemTable(factors, popularity, ids, from_store, src.bound_dims)
        index = {item_id: row for row, item_id in enumerate(ids)}
        return self._next(table, table.length, index, {}, ())

    # -- lookups -------------------------------------------------------------------------

    def _row(self, item_id: str) -> int | None:
        row = self._overlay.get(item_id)
        if row is None:
            row = self._base.get(item_id)
            if row is not None and self._dead.size and _contains(self._dead, row):
                return None
            return row
        return None if row < 0 else row

    def __contains__(self, item_id: object) -> bool:
        return self._row(str(item_id)) is not None

    @property
    def n_items(self) -> int:
        """Items that can be recommended now."""
        return self._length - int(self._dead.size)

    @property
    def n_rows(self) -> int:
        return self._length

    @property
    def capacity(self) -> int:
        return self._table.capacity

    @property
    def overlay_items(self) -> int:
        """Live items whose row came from the feature store rather than the artifact."""
        origin = self._table.from_store
        return int(origin[: self._length].sum() - origin[self._dead].sum())

    def item_vector(self, item_id: str) -> np.ndarray:
        """The ``[q_i, b_i, 1]`` row (float32) of a scorable item; raises UnknownItem."""
        row = self._row(str(item_id))
        if row is None:
            raise UnknownItem(item_id)
        return self._table.factors[row].copy()

    def store_only_ids(self) -> list[str]:
        """Ids of live items the model does not know (added from the feature store)."""
        t = self._table
        rows = np.flatnonzero(t.from_store[: self._length])
        if self._dead.size:
            rows = rows[~np.isin(rows, self._dead)]
        known = self.model.item_space_.entities
        return [t.ids[r] for r in rows.tolist() if t.ids[r] not in known]

    def item_ids(self) -> list[str]:
        """Ids of every item that can be recommended, in row order."""
        ids = self._table.ids
        alive = np.ones(self._length, dtype=bool)
        alive[self._dead] = False
        return [ids[r] for r in np.flatnonzero(alive)]

    # -- scoring -------------------------------------------------------------------------

    def user_vector(
        self, user_id: str | None, features: Features | None
    ) -> tuple[np.ndarray | None, str, int]:
        """``(vector [q_u, 1, b_u] float32 or None, user_case, unknown feature count)``.

        ``features=None`` uses the features the model was trained with (known users);
        a mapping, even empty, replaces them, exactly as ``predict_online``.
        """
        model = self.model
        row = model.user_row(user_id, features)
        vec = model.user_vector(row)
        return (
            None if vec is None else vec.astype(np.float32),
            model.user_case(user_id, row),
            row.n_unknown_features,
        )

    def training_seen(self, user_id: str | None) -> list[str]:
        """Items a known user interacted with in training (the fallback for ``seen``)."""
        if user_id is None:
            return []
        idx = self.model.user_space_.entities.get(user_id)
        if idx is None:
            return []
        m = self.model.interactions_
        cols = m.indices[m.indptr[idx] : m.indptr[idx + 1]]
        return self.model.item_space_.entities.convert_to_external(cols)

    def recommend(
        self,
        user_id: str | None,
        features: Features | None,
        k: int,
        *,
        exclude: Iterable[str] = (),
        items: Sequence[str] | None = None,
        history: Iterable[str] = (),
    ) -> Recommendation:
        """Top ``k`` items for a user; ``features`` as in :meth:`user_vector`.

        ``exclude`` ids are never returned (unknown ids are ignored). ``items`` restricts
        scoring to these candidates; those that cannot be scored come back in
        ``unscorable`` (in request order, duplicates dropped). ``history``: items the user
        interacted with; a user the model cannot otherwise place (no indicator, no known
        feature) is folded in from them instead of getting the baseline.
        """
        uvec, case, unknown = self.user_vector(user_id, features)
        if uvec is None and history:
            uvec = self.fold_in(history)
        unscorable: list[str] = []
        excluded = self._rows_of(exclude)
        if items is None and uvec is not None:
            masked = np.concatenate([self._dead, excluded]) if excluded.size else self._dead
            found = self._table.top_k(uvec, self._length, k, masked)
            if found is not None:
                rows_out, top_scores = found
                return self._recommendation(rows_out, top_scores, unscorable, uvec, case, unknown)
        if items is None:
            if uvec is None:
                scores = self._table.popularity[: self._length].copy()
            else:
                scores = self._table.factors[: self._length] @ uvec
            scores[self._dead] = -np.inf
            row_ids = None
        else:
            rows: list[int] = []
            seen_ids: set[str] = set()
            for item_id in items:
                if item_id in seen_ids:
                    continue
                seen_ids.add(item_id)
                row = self._row(item_id)
                if row is None:
                    unscorable.append(item_id)
                else:
                    rows.append(row)
            row_ids = np.asarray(rows, dtype=np.int64)
            if uvec is None:
                scores = self._table.popularity[row_ids]
            else:
                scores = self._table.factors[row_ids] @ uvec
        if excluded.size:
            if row_ids is None:
                scores[excluded] = -np.inf
            else:
                scores[np.isin(row_ids, excluded)] = -np.inf
        top = _top_k(scores, k)
        rows_out = top if row_ids is None else row_ids[top]
        return self._recommendation(rows_out, scores[top], unscorable, uvec, case, unknown)

    def _recommendation(self, rows, scores, unscorable, uvec, case, unknown) -> Recommendation:
        ids = self._table.ids
        return Recommendation(
            items=[(ids[r], s) for r, s in zip(rows.tolist(), scores.tolist(), strict=True)],
            unscorable=unscorable,
            strategy="baseline" if uvec is None else "personalized",
            user_case=case,
            unknown_user_features=unknown,
        )

    def fold_in(self, history: Iterable[str]) -> np.ndarray | None:
        """``[q_u, 1, 0]`` (float32) folded in from the rows of ``history``, or None."""
        rows = self._rows_of(history)
        if self._centroid is None or rows.size == 0:
            return None
        return fold_in_vector(self._table.factors[rows], self._centroid).astype(np.float32)

    def similar(self, item_id: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` items nearest to ``item_id`` by cosine of latent vectors."""
        row = self._row(str(item_id))
        if row is None:
            raise UnknownItem(item_id)
        t = self._table
        q = t.factors[: self._length, :-2]
        sims = (q @ t.factors[row, :-2]) / (t.norms[: self._length] * t.norms[row])
        sims[self._dead] = -np.inf
        sims[row] = -np.inf
        top = _top_k(sims, k)
        return [(t.ids[r], float(sims[r])) for r in top.tolist()]

    def _rows_of(self, ids: Iterable[str]) -> np.ndarray:
        rows = [r for r in (self._row(str(i)) for i in ids) if r is not None]
        return np.asarray(rows, dtype=np.int64)


def _faster(a: Snapshot, b: Snapshot, n_users: int = 24, k: int = 10) -> bool:
    """True if ``a`` answers the model's own users faster than ``b`` (medians)."""
    users = a.model.user_space_.entities.external
    if not users:
        return False
    picks = [users[i] for i in np.linspace(0, len(users) - 1, n_users).astype(int)]

    def per_call(snap: Snapshot) -> float:
        times = []
        for user in picks:
            t0 = time.perf_counter()
            snap.recommend(user, None, k)
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    per_call(a), per_call(b)  # warm caches for both
    return per_call(a) < per_call(b)


def _contains(sorted_rows: np.ndarray, row: int) -> bool:
    at = int(np.searchsorted(sorted_rows, row))
    return at < sorted_rows.size and int(sorted_rows[at]) == row


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best finite scores, best first; of tied scores the lower
    positions come first and are the ones kept at the k-th place.

    Exact. For long score vectors, the k-th best of a strided sample is a lower bound of
    the k-th best overall (the sample's k best are among all scores), so only the scores
    at or above it can be in the top k: one comparison pass leaves a few hundred
    candidates for ``argpartition``, which is several times faster than partitioning
    100k scores.
    """
    n = scores.shape[0]
    if n == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k >= n:
        part = np.arange(n)
    else:
        sample_size = max(n // 64, 8 * k)
        if n >= 4 * sample_size:
            sample = scores[:: n // sample_size]
            bound = np.partition(sample, sample.shape[0] - k)[sample.shape[0] - k]
            candidates = np.flatnonzero(scores >= bound)
        else:
            candidates = np.arange(n)
        if candidates.shape[0] > k:
            # candidates are in position order: of the scores tied with the k-th best,
            # the first ones are kept (argpartition would pick any of them)
            values = scores[candidates]
            kth = np.partition(values, values.shape[0] - k)[values.shape[0] - k]
            above = candidates[values > kth]
            part = np.concatenate([above, candidates[values == kth][: k - above.shape[0]]])
        else:
            part = candidates
    part = part[np.isfinite(scores[part])]
    order = np.lexsort((part, -scores[part]))
    return part[order]
