"""The serving snapshot: everything a request needs from one model version, frozen.

A :class:`Snapshot` holds the item rows of a model version with biases folded in
(``[q_i, b_i, 1]``, float32), the id maps, the popularity baseline and a
:class:`~hybridrec.serving.retrieval.Retriever` over those rows. A request builds one
user vector ``[q_u, 1, b_u]``, asks the retriever for the top k with its exclusions
masked, and gets exact scores back. Which retriever (exact scan, bounded scan, or an
HNSW index whose recall is measured here against exact scoring) is chosen once per
model version by :meth:`Snapshot.from_model`; see :mod:`hybridrec.serving.retrieval`.

The model's items are the **base** rows: read-only, memory-mapped from the serving files
saved with the artifact when there is a directory (N workers share one copy). New and
changed catalog items arrive between trainings; they are **appended** to a small private
segment whose rows, once written, never change; a snapshot sees the rows below its own
length, so appending for the next snapshot never disturbs a request reading the current
one. Appended rows are scored exactly beside the base retriever's answer. A changed
item gets a new row and its old row joins the snapshot's ``dead`` rows (masked out at
scoring time, inside the base retriever's search); a deleted item only joins ``dead``.
When the appended segment's spare capacity is used up, or its dead rows exceed a quarter
of it, :meth:`Snapshot.with_items` compacts it into a fresh segment; dead base rows stay
masked until the next model version rebuilds the base and its index. Memory is
therefore bounded and every change is visible in the very next snapshot.

Pure numpy: no Redis or Flask here (the serving files are read through
:mod:`hybridrec.serving.retrieval.files`). Which features a user has is decided by the
caller (see :meth:`Snapshot.recommend`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..model.features import Features
from ..model.foldin import fold_in_vector, latent_centroid
from ..model.hybrid import HybridLightFM
from ..model.idmap import IdMap
from .retrieval import (
    DEFAULT_LIBRARY,
    BoundedScan,
    ExactScan,
    Hits,
    Query,
    Retriever,
    ann_available,
    exact_scores,
    load_or_build,
    merge,
    top_k,
    tune_ef,
)

__all__ = ["Recommendation", "RetrievalInfo", "Snapshot", "UnknownItem", "release_memory"]

log = logging.getLogger("hybridrec.serving")

_MIN_SPARE = 1024
_SPARE_FRACTION = 0.25  # spare rows and the dead-row share that triggers a compaction
_BOUND_DIMS = 8  # principal directions kept by the bounded scan
_BOUND_MIN_ROWS = 4096  # below this a full product is as fast as the bounded scan
ANN_MIN_ITEMS = 50_000  # from this many items on, an index is tried
_INDEXES = {"ivf": "ivf", "hnsw": "usearch"}  # strategy -> library of its serving files
MIN_RECALL = 0.98
RECALL_USERS = 200  # users whose recall@10 is measured for every snapshot of a version


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
    retrieval: str = "exact"  # "exact" | "approximate": which search answered
    score_parts: tuple[str, ...] = ()  # the blend's parts when a blend scored (model.blend)


@dataclass(frozen=True)
class RetrievalInfo:
    """How a model version's snapshots find the top k (``/v1/model`` shows it)."""

    strategy: str  # "exact" | "bounded" | "ivf" | "hnsw"
    kind: str  # "exact" | "approximate"
    min_recall: float
    recall: float | None = None  # measured recall@10 of the index (None: no index tried)
    ef: int | None = None  # the index's search expansion
    recall_users: int = 0
    fallback: str | None = None  # why an index that was tried is not used
    build_seconds: float = 0.0  # building the serving files (0: loaded them)
    check_seconds: float = 0.0  # measuring recall
    mapped: bool = False  # item rows (and index) memory-mapped from files

    def as_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "kind": self.kind,
            "recall_at_10": None if self.recall is None else round(self.recall, 4),
            "min_recall": self.min_recall,
            "ef": self.ef,
            "recall_users": self.recall_users,
            "fallback": self.fallback,
            "build_seconds": round(self.build_seconds, 3),
            "check_seconds": round(self.check_seconds, 3),
            "mapped": self.mapped,
        }


class _ItemTable:
    """The model's item rows (``base``, never written; possibly a read-only map) and an
    append-only segment with spare capacity for catalog changes.

    Row ``r < n_base`` is ``base[r]``, row ``n_base + j`` is ``extra[j]``. Only the
    snapshot at the tip (``length == table.length``) may append; rows below ``length``
    are never written again, so snapshots sharing the table stay valid.
    """

    def __init__(
        self,
        base: np.ndarray,
        base_popularity: np.ndarray,
        base_ids: IdMap,
        extra: Sequence[tuple[str, np.ndarray, float]] = (),
    ):
        self.base = base
        self.base_popularity = base_popularity
        self.base_ids = base_ids
        self.n_base = n = int(base.shape[0])
        width = base.shape[1]
        capacity = len(extra) + max(_MIN_SPARE, int(n * _SPARE_FRACTION))
        self.extra = np.zeros((capacity, width), dtype=np.float32)
        self.extra_popularity = np.zeros(capacity, dtype=np.float32)
        self.extra_ids: list[str] = []
        self.length = n
        self._norms: np.ndarray | None = None  # of the base latent vectors, for similar()
        self.append(extra)

    @property
    def capacity(self) -> int:
        return self.n_base + self.extra.shape[0]

    def append(self, rows: Sequence[tuple[str, np.ndarray, float]]) -> None:
        at = self.length - self.n_base
        for offset, (item_id, vec, pop) in enumerate(rows):
            self.extra[at + offset] = vec
            self.extra_popularity[at + offset] = pop
            self.extra_ids.append(item_id)
        self.length += len(rows)

    def id_of(self, row: int) -> str:
        return self.base_ids.id_at(row) if row < self.n_base else self.extra_ids[row - self.n_base]

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), d + 2)`` float32 rows of either segment."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and int(rows.max()) < self.n_base:
            return np.asarray(self.base[rows])
        out = np.empty((rows.size, self.base.shape[1]), dtype=np.float32)
        in_base = rows < self.n_base
        out[in_base] = self.base[rows[in_base]]
        out[~in_base] = self.extra[rows[~in_base] - self.n_base]
        return out

    def popularity(self, length: int) -> np.ndarray:
        """Popularity of the first ``length`` rows (a new array)."""
        return np.concatenate(
            [self.base_popularity, self.extra_popularity[: length - self.n_base]]
        ).astype(np.float32)

    def norms(self, length: int) -> np.ndarray:
        """Latent norms (0 replaced by 1) of the first ``length`` rows."""
        if self._norms is None:  # computed on first use: a benign race at worst
            norms = np.empty(self.n_base, dtype=np.float32)
            for start in range(0, self.n_base, 65536):
                q = np.asarray(self.base[start : start + 65536, :-2], dtype=np.float32)
                norms[start : start + len(q)] = np.linalg.norm(q, axis=1)
            self._norms = np.where(norms > 0, norms, 1.0).astype(np.float32)
        extra = np.linalg.norm(self.extra[: length - self.n_base, :-2], axis=1)
        return np.concatenate([self._norms, np.where(extra > 0, extra, 1.0)]).astype(np.float32)


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
    _base: IdMap = field(repr=False)  # id -> row of the model's items
    _overlay: Mapping[str, int] = field(repr=False)  # id -> row (-1: gone), wins over _base
    _dead: np.ndarray = field(repr=False)  # sorted int64 rows masked out at scoring
    _retriever: Retriever = field(repr=False)  # over the base rows
    retrieval: RetrievalInfo = field(repr=False)
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
        directory: str | None = None,
        strategy: str | None = None,
        approximate: bool = False,
        min_recall: float = MIN_RECALL,
        ann_min_items: int = ANN_MIN_ITEMS,
        ann_options: dict | None = None,
        ef_ladder: Sequence[int] | None = None,
        recall_users: int = RECALL_USERS,
    ) -> Snapshot:
        """The snapshot of a fitted model's known items with their training features.

        ``directory``: the artifact's local directory; the item rows (and the index)
        are then saved there once and memory-mapped (see
        :mod:`hybridrec.serving.retrieval.files`); None keeps them in memory.

        ``strategy``: ``"exact"``, ``"bounded"``, ``"ivf"`` or ``"hnsw"`` forces one; None
        chooses: with ``approximate`` and at least ``ann_min_items`` items an index
        (``ann_options["library"]``: clusters by default, or usearch's HNSW), served
        if its recall@10 on ``recall_users`` of the model's users reaches ``min_recall``
        at some effort of ``ef_ladder`` (None: the index's own ladder); otherwise (or
        on a fallback), from 4096
        items on the bounded scan if it is faster than a full product on a few of the
        model's own users, else the full product. Exact strategies give the same items
        and scores.
        """
        manifest = manifest if manifest is not None else getattr(model, "manifest_", {})
        ids = model.item_space_.entities
        n = len(ids)
        ann_options = dict(ann_options or {})
        if strategy in _INDEXES:
            ann_options["library"] = _INDEXES[strategy]
        library = ann_options.get("library", DEFAULT_LIBRARY)
        want_ann = strategy in _INDEXES or (
            strategy is None
            and approximate
            and n >= ann_min_items
            and (library != "usearch" or ann_available())
        )
        files = load_or_build(
            directory, model.item_factors, n, with_index=want_ann, ann_options=ann_options
        )
        rows = files.items
        popularity = model.baseline_scores()
        # A known item with an empty row (no indicator, no feature) cannot be scored.
        empty = np.flatnonzero(np.diff(model.item_matrix_.indptr) == 0).astype(np.int64)
        now = time.time()
        info = RetrievalInfo(
            "exact",
            "exact",
            min_recall,
            build_seconds=files.build_seconds,
            mapped=files.directory is not None,
        )
        retriever: Retriever = ExactScan(rows)
        table = _ItemTable(rows, popularity, ids)
        snap = cls(
            model=model,
            version=version or str(manifest.get("version", "unversioned")),
            manifest=manifest,
            loaded_at=now,
            _table=table,
            _length=table.length,
            _base=ids,
            _overlay={},
            _dead=empty,
            _retriever=retriever,
            retrieval=info,
            changed_at=now,
            _centroid=latent_centroid(rows) if n else None,
        )
        if files.index is not None:
            started = time.perf_counter()
            vectors = snap._recall_vectors(recall_users)
            check = tune_ef(files.index, vectors, min_recall, 10, ef_ladder)
            info = replace(
                info,
                recall=check.recall,
                ef=check.ef,
                recall_users=check.users,
                check_seconds=time.perf_counter() - started,
            )
            if check.index is not None:
                info = replace(info, strategy=check.index.name, kind="approximate")
                return replace(snap, _retriever=check.index, retrieval=info)
            info = replace(
                info,
                fallback=f"recall@10 {check.recall:.4f} < {min_recall} at every expansion "
                f"({', '.join(map(str, check.tried))}): exact scoring",
            )
            log.warning("%s", f"model {snap.version}: {info.fallback}")
            snap = replace(snap, retrieval=info)
        if strategy == "bounded" or (strategy is None and n >= _BOUND_MIN_ROWS):
            bounded = replace(
                snap,
                _retriever=BoundedScan(rows, _BOUND_DIMS),
                retrieval=replace(info, strategy="bounded"),
            )
            if strategy == "bounded" or _faster(bounded, snap):
                return bounded
        return snap

    def _recall_vectors(self, n_users: int) -> np.ndarray:
        """User vectors (training features) of up to ``n_users`` of the model's users,
        spread evenly over them (the same users in every worker)."""
        model = self.model
        users = model.user_space_.entities
        picks = np.unique(np.linspace(0, len(users) - 1, min(n_users, len(users))).astype(int))
        out = []
        for i in picks.tolist():
            vec = model.user_vector(model.user_row(users.id_at(i)))
            if vec is not None:
                out.append(vec)
        width = self._table.base.shape[1]
        return np.asarray(out, dtype=np.float32).reshape(-1, width)

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
        scorable = np.diff(matrix.indptr) > 0
        old_rows = np.asarray([-1 if (r := self._row(i)) is None else r for i in ids], np.int64)
        known = model.item_space_.entities
        # a model item still on its training row whose feature row is unchanged keeps it
        # (compared as sparse rows: a whole-catalog sync costs no vectors for them)
        same = _same_training_rows(model, matrix, ids, old_rows)
        vectors = np.zeros((len(ids), table.base.shape[1]), dtype=np.float32)
        todo = np.flatnonzero(~same & scorable)
        if todo.size:
            vectors[todo] = model.item_factors(matrix[todo])
        had = np.flatnonzero((old_rows >= 0) & ~same & scorable)
        if had.size:  # unchanged (within float noise): keep the row, no churn
            same[had] = np.all(
                np.isclose(table.vectors(old_rows[had]), vectors[had], rtol=1e-6, atol=1e-6),
                axis=1,
            )
        appends: list[tuple[str, np.ndarray, float]] = []
        for n, item_id in enumerate(ids):
            old = int(old_rows[n])
            if not scorable[n] or not same[n]:
                if old >= 0:
                    dead.add(old)
                    overlay[item_id] = -1
            if not scorable[n] or same[n]:
                continue
            idx = known.get(item_id)  # a known item keeps its training popularity
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

        length = self._length
        fits = length == table.length and length + len(appends) <= table.capacity
        extra = length - table.n_base
        dead_extra = sum(1 for r in dead if r >= table.n_base)
        too_dead = dead_extra > _MIN_SPARE // 4 and dead_extra > _SPARE_FRACTION * extra
        if fits and not too_dead:
            for offset, (item_id, _, _) in enumerate(appends):
                overlay[item_id] = length + offset
            table.append(appends)
            return self._next(table, length + len(appends), overlay, dead)
        return self._compacted(overlay, dead, appends)

    def _next(self, table, length, overlay, dead) -> Snapshot:
        return replace(
            self,
            _table=table,
            _length=length,
            _overlay=overlay,
            _dead=np.fromiter(sorted(dead), dtype=np.int64, count=len(dead)),
            changed_at=time.time(),
        )

    def _compacted(self, overlay, dead, appends) -> Snapshot:
        """The live appended rows and ``appends`` copied into a fresh segment; the base
        rows (and their index) are shared, dead base rows stay masked."""
        src = self._table
        n_base = src.n_base
        kept = [
            (src.extra_ids[j], src.extra[j], float(src.extra_popularity[j]))
            for j in range(self._length - n_base)
            if n_base + j not in dead
        ]
        table = _ItemTable(src.base, src.base_popularity, src.base_ids, kept + list(appends))
        overlay = {i: r for i, r in overlay.items() if r < 0 and i in self._base}
        for offset, item_id in enumerate(table.extra_ids):
            overlay[item_id] = n_base + offset
        dead_base = {r for r in dead if r < n_base}
        return self._next(table, table.length, overlay, dead_base)

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
        n_base = self._table.n_base
        return self._length - n_base - int(np.count_nonzero(self._dead >= n_base))

    def item_vector(self, item_id: str) -> np.ndarray:
        """The ``[q_i, b_i, 1]`` row (float32) of a scorable item; raises UnknownItem."""
        row = self._row(str(item_id))
        if row is None:
            raise UnknownItem(item_id)
        return self._table.vectors(np.asarray([row]))[0].copy()

    def _live_rows(self, start: int = 0) -> np.ndarray:
        alive = np.ones(self._length - start, dtype=bool)
        dead = self._dead[self._dead >= start] - start
        alive[dead] = False
        return np.flatnonzero(alive) + start

    def store_only_ids(self) -> list[str]:
        """Ids of live items the model does not know (added from the feature store)."""
        known = self.model.item_space_.entities
        t = self._table
        ids = (t.id_of(r) for r in self._live_rows(t.n_base).tolist())
        return [i for i in ids if i not in known]

    def item_ids(self) -> list[str]:
        """Ids of every item that can be recommended, in row order."""
        t = self._table
        return [t.id_of(r) for r in self._live_rows().tolist()]

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

    def search(self, vector: np.ndarray, k: int, excluded: np.ndarray, exact: bool) -> Hits:
        """The ``k`` best live rows not in ``excluded`` (int64 rows) for ``vector``:
        the base retriever (an exact scan when ``exact``) over the model's items, an
        exact scan over the appended ones, merged."""
        masked = self._dead
        if excluded.size:
            masked = np.union1d(masked, excluded)
        n_base = self._table.n_base
        split = int(np.searchsorted(masked, n_base))
        retriever = self._retriever
        if exact and retriever.kind != "exact":
            retriever = ExactScan(retriever.rows)
        hits = retriever.search(Query(vector, masked[:split]), k)
        extra = self._length - n_base
        if extra:
            scan = ExactScan(self._table.extra[:extra])
            found = scan.search(Query(vector, masked[split:] - n_base), k)
            hits = merge(hits, Hits(found.rows + n_base, found.scores), k)
        return hits

    def recommend(
        self,
        user_id: str | None,
        features: Features | None,
        k: int,
        *,
        exclude: Iterable[str] = (),
        items: Sequence[str] | None = None,
        history: Iterable[str] = (),
        exact: bool = False,
    ) -> Recommendation:
        """Top ``k`` items for a user; ``features`` as in :meth:`user_vector`.

        ``exclude`` ids are never returned (unknown ids are ignored). ``items`` restricts
        scoring to these candidates; those that cannot be scored come back in
        ``unscorable`` (in request order, duplicates dropped). ``history``: items the user
        interacted with; a user the model cannot otherwise place (no indicator, no known
        feature) is folded in from them instead of getting the baseline. ``exact``
        scores every item even when the snapshot serves from an index.
        """
        uvec, case, unknown = self.user_vector(user_id, features)
        if uvec is None and history:
            uvec = self.fold_in(history)
        unscorable: list[str] = []
        excluded = self._rows_of(exclude)
        blended = self._blended(uvec, history, k, excluded, items, exact)
        if blended is not None:
            hits, unscorable, parts = blended
            rec = self._recommendation(hits, unscorable, uvec, case, unknown)
            return replace(rec, score_parts=parts)
        if items is None and uvec is not None:
            hits = self.search(uvec, k, excluded, exact)
            return self._recommendation(hits, unscorable, uvec, case, unknown)
        if items is None:  # the baseline: popularity over every live item
            scores = self._table.popularity(self._length)
            scores[self._dead] = -np.inf
            if excluded.size:
                scores[excluded] = -np.inf
            top = top_k(scores, k)
            hits = Hits(top, scores[top])
        else:
            row_ids, unscorable = self._candidate_rows(items)
            if uvec is None:
                pop = self._table.popularity(self._length)
                scores = pop[row_ids] if row_ids.size else np.zeros(0, np.float32)
            else:
                scores = exact_scores(self._table.vectors(row_ids), np.arange(row_ids.size), uvec)
            if excluded.size:
                scores[np.isin(row_ids, excluded)] = -np.inf
            top = top_k(scores, k)
            hits = Hits(row_ids[top], scores[top])
        return self._recommendation(hits, unscorable, uvec, case, unknown)

    def _candidate_rows(self, items: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Rows of the scorable ``items`` (duplicates dropped) and the unscorable ids,
        in request order."""
        rows: list[int] = []
        unscorable: list[str] = []
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
        return np.asarray(rows, dtype=np.int64), unscorable

    def _blended(self, uvec, history, k, excluded, items, exact):
        """``(hits, unscorable, parts)`` when the model's blend scores this user
        (:mod:`hybridrec.serving.blending`), else None (the factor model alone)."""
        from .blending import blended_scores, blended_search, for_user

        user = for_user(self, uvec, history)
        if user is None:
            return None
        if items is None:
            return blended_search(self, user, k, excluded, exact), [], user.parts
        rows, unscorable = self._candidate_rows(items)
        scores = blended_scores(self, user, rows)
        if excluded.size:
            scores[np.isin(rows, excluded)] = -np.inf
        top = top_k(scores, k)
        return Hits(rows[top], scores[top]), unscorable, user.parts

    def _recommendation(self, hits: Hits, unscorable, uvec, case, unknown) -> Recommendation:
        t = self._table
        return Recommendation(
            items=[(t.id_of(r), s) for r, s in zip(hits.rows.tolist(), hits.scores.tolist())],
            unscorable=unscorable,
            strategy="baseline" if uvec is None else "personalized",
            user_case=case,
            unknown_user_features=unknown,
            retrieval="approximate" if hits.approximate else "exact",
        )

    def fold_in(self, history: Iterable[str]) -> np.ndarray | None:
        """``[q_u, 1, 0]`` (float32) folded in from the rows of ``history``, or None."""
        rows = self._rows_of(history)
        if self._centroid is None or rows.size == 0:
            return None
        return fold_in_vector(self._table.vectors(rows), self._centroid).astype(np.float32)

    def similar(self, item_id: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` items nearest to ``item_id`` by cosine of latent vectors."""
        row = self._row(str(item_id))
        if row is None:
            raise UnknownItem(item_id)
        t = self._table
        target = t.vectors(np.asarray([row]))[0, :-2]
        n_base, length = t.n_base, self._length
        dots = np.concatenate([t.base[:, :-2] @ target, t.extra[: length - n_base, :-2] @ target])
        norms = t.norms(length)
        sims = dots / (norms * norms[row])
        sims[self._dead] = -np.inf
        sims[row] = -np.inf
        top = top_k(sims, k)
        return [(t.id_of(r), float(sims[r])) for r in top.tolist()]

    def _rows_of(self, ids: Iterable[str]) -> np.ndarray:
        """Rows of the scorable ``ids`` in order (the others dropped); one binary search
        of the model's ids for all those the overlay does not decide."""
        ids = [i if type(i) is str else str(i) for i in ids]
        if not ids:
            return np.zeros(0, dtype=np.int64)
        overlay = self._overlay
        rows = np.fromiter((overlay.get(i, -2) for i in ids), np.int64, len(ids))
        todo = rows == -2
        if todo.any():
            found = self._base.convert_to_internal(
                [i for i, t in zip(ids, todo.tolist()) if t], missing=-1
            )
            if self._dead.size:
                found[np.isin(found, self._dead)] = -1
            rows[todo] = found
        return rows[rows >= 0]


def release_memory() -> None:
    """Hand the heap that building a snapshot freed back to the system (glibc keeps
    it otherwise: a whole-catalog sync leaves ~100 MB per worker at 100k items)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _same_training_rows(model, matrix, ids: list[str], old_rows: np.ndarray) -> np.ndarray:
    """``(len(ids),)`` bool: item ``n`` is a model item served from its training row
    (``old_rows[n]`` is its own index) and ``matrix[n]`` equals that row (1e-6)."""
    idx = model.item_space_.entities.convert_to_internal(ids, missing=-1)
    on_training_row = (idx >= 0) & (old_rows == idx)
    same = np.zeros(len(ids), dtype=bool)
    picked = np.flatnonzero(on_training_row)
    if picked.size:
        diff = (matrix[picked] - model.item_matrix_[idx[picked]]).tocsr()
        diff.data = (np.abs(diff.data) > 1e-6).astype(np.float32)
        same[picked] = np.asarray(diff.sum(axis=1)).ravel() == 0
    return same


def _faster(a: Snapshot, b: Snapshot, n_users: int = 24, k: int = 10) -> bool:
    """True if ``a`` answers the model's own users faster than ``b`` (medians)."""
    users = a.model.user_space_.entities
    if not len(users):
        return False
    picks = [users.id_at(i) for i in np.linspace(0, len(users) - 1, n_users).astype(int)]

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
