"""Retrieval strategies: one contract every strategy passes, then each one's specifics.

The contract (small catalogs whose exact answers are known): only unmasked rows, exactly
``min(k, eligible)`` of them, exact scores, best first with ties by lower row; an exact
strategy returns the full product's rows, an approximate one the same answers within
the recall rule (its recall@k against exact scoring is at least ``MIN_RECALL``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridrec.model import HybridLightFM
from hybridrec.serving.retrieval import (
    AnnIndex,
    BoundedScan,
    ClusterIndex,
    ExactScan,
    Query,
    Retriever,
    TwoStage,
    exact_scores,
    exact_top_k,
    load_or_build,
    top_k,
    tune_ef,
)
from hybridrec.serving.snapshot import Snapshot

from .synthetic import make_synthetic

MIN_RECALL = 0.98


def _factor_rerank(query: Query, rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    return exact_scores(table, rows, query.vector)


STRATEGIES = {
    "exact": lambda rows: ExactScan(rows),
    "bounded": lambda rows: BoundedScan(rows, dims=3),
    "hnsw": lambda rows: AnnIndex.build(rows, threads=1),
    "ivf": lambda rows: ClusterIndex.build(rows),
    "two-stage": lambda rows: TwoStage(
        ExactScan(rows), lambda q, r: _factor_rerank(q, r, rows), candidates=40
    ),
}


def _full_top_k(factors, uvec, k, masked):
    """The reference: every row scored (float64 sum rounded to float32), ties by row."""
    scores = (factors.astype(np.float64) @ uvec.astype(np.float64)).astype(np.float32)
    scores[np.asarray(masked, dtype=np.int64)] = -np.inf
    finite = np.flatnonzero(np.isfinite(scores))
    order = finite[np.lexsort((finite, -scores[finite]))][:k]
    return order, scores[order]


def _item_rows(rng, n, d, ties):
    """``[q_i, b_i, 1]`` rows; ``ties`` rounds them to quarters and repeats some rows."""
    # a shared direction and a decaying spectrum, as trained item vectors have
    q = rng.standard_normal((n, d)) * rng.uniform(0.1, 2) * 0.7 ** np.arange(d)
    q = q @ np.linalg.qr(rng.standard_normal((d, d)))[0]  # in no particular basis
    q += rng.standard_normal(d) * rng.uniform(0, 2)
    b = rng.standard_normal(n) * rng.uniform(0, 1)
    rows = np.column_stack([q, b, np.ones(n)])
    if ties:
        rows = np.round(rows * 4) / 4
        dup = rng.random(n) < 0.3
        rows[dup] = rows[rng.integers(0, n, int(dup.sum()))]
    return rows.astype(np.float32)


def _user(rng, d, ties):
    uvec = np.concatenate([rng.standard_normal(d) * rng.uniform(0.1, 3), [1.0, 0.7]])
    if ties:
        uvec = np.round(uvec * 2) / 2
    return uvec.astype(np.float32)


# -- the contract --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(STRATEGIES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 400),
    d=st.integers(1, 8),
    k=st.integers(1, 30),
    masked_share=st.sampled_from([0.0, 0.05, 0.5, 0.99, 1.0]),
    ties=st.booleans(),
)
def test_strategy_contract(name, seed, n, d, k, masked_share, ties):
    rng = np.random.default_rng(seed)
    rows = _item_rows(rng, n, d, ties)
    retriever = STRATEGIES[name](rows)
    for _ in range(8):
        uvec = _user(rng, d, ties)
        masked = np.flatnonzero(rng.random(n) < masked_share).astype(np.int64)
        hits = retriever.search(Query(uvec, masked), k)
        want_rows, want_scores = _full_top_k(rows, uvec, k, masked)
        # never a masked row, never fewer than the eligible rows allow, no duplicates
        assert not np.isin(hits.rows, masked).any()
        assert hits.rows.size == want_rows.size == min(k, n - masked.size)
        assert len(set(hits.rows.tolist())) == hits.rows.size
        # exact scores, best first, ties by lower row
        np.testing.assert_allclose(hits.scores, exact_scores(rows, hits.rows, uvec), rtol=1e-6)
        order = np.lexsort((hits.rows, -hits.scores))
        np.testing.assert_array_equal(order, np.arange(hits.rows.size))
        if retriever.kind == "exact":  # an index may answer exactly (a fallback), not the reverse
            assert not hits.approximate
            np.testing.assert_array_equal(hits.rows, want_rows)
            np.testing.assert_allclose(hits.scores, want_scores, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_recall_rule(name):
    """Same answers as exact within the recall rule: over many small catalogs like the
    contract's (ties, duplicates, masks), recall@k counted on scores (tied rows are
    interchangeable) is at least MIN_RECALL; 1.0 for exact strategies."""
    found = wanted = 0
    for seed in range(120):
        rng = np.random.default_rng(seed)
        n, d, k = int(rng.integers(1, 400)), int(rng.integers(1, 9)), int(rng.integers(1, 31))
        ties = bool(seed % 2)
        rows = _item_rows(rng, n, d, ties)
        retriever = STRATEGIES[name](rows)
        for _ in range(4):
            uvec = _user(rng, d, ties)
            masked = np.flatnonzero(rng.random(n) < (0.0, 0.05, 0.5)[seed % 3])
            hits = retriever.search(Query(uvec, masked), k)
            _, want = _full_top_k(rows, uvec, k, masked)
            values, counts = np.unique(want, return_counts=True)
            found += sum(min(c, int((hits.scores == v).sum())) for v, c in zip(values, counts))
            wanted += want.size
    recall = found / wanted
    assert recall >= (
        1.0 if STRATEGIES[name](np.ones((1, 3), np.float32)).kind == "exact" else MIN_RECALL
    )


@pytest.mark.parametrize("name", ["exact", "bounded", "hnsw"])
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    user=st.sampled_from(
        [("u0", None), ("u0", {"genre:1": 1.0}), ("u1", {}), ("visitor", {"genre:2": 1.0})]
    ),
    k=st.integers(1, 6),
    changes=st.dictionaries(
        st.sampled_from(["i0", "i3", "i8", "new1", "new2", "new3"]),
        st.one_of(
            st.none(),
            st.dictionaries(st.sampled_from(["genre:0", "genre:2", "tag:1"]), st.floats(0.1, 3)),
        ),
        max_size=5,
    ),
    exclude=st.lists(st.sampled_from(["i1", "i2", "i4", "new1", "nope"]), max_size=3),
    items=st.one_of(st.none(), st.lists(st.sampled_from(["i1", "i5", "new2", "x"]))),
)
def test_snapshot_contract(fitted, name, user, k, changes, exclude, items):
    """Snapshot level, every strategy: new, changed and deleted items, exclusions and
    candidate lists give the full product's top k."""
    model = fitted
    user_id, features = user
    snap = Snapshot.from_model(model, version="v", strategy=name).with_items(changes)
    assert snap.retrieval.strategy == name
    got = snap.recommend(user_id, features, k, exclude=exclude, items=items)
    live = snap.item_ids() if items is None else [i for i in dict.fromkeys(items) if i in snap]
    if not live:
        assert got.items == []
        return
    factors = np.stack([snap.item_vector(i) for i in live])
    uvec, _, _ = snap.user_vector(user_id, features)
    masked = [n for n, i in enumerate(live) if i in exclude]
    want_rows, want_scores = _full_top_k(factors, uvec, k, masked)
    # 40 items: the graph search visits all of them, so even HNSW is exact here
    assert [i for i, _ in got.items] == [live[r] for r in want_rows]
    np.testing.assert_allclose([s for _, s in got.items], want_scores, rtol=1e-5, atol=1e-6)
    approximate = name == "hnsw" and items is None
    assert got.retrieval == ("approximate" if approximate else "exact")


@pytest.fixture(scope="module")
def fitted():
    data = make_synthetic(n_users=40, n_items=30, per_user=6, seed=1)
    user_features = {u: f for u, f in data.user_features.items() if int(u[1:]) % 2 == 0}
    item_features = {i: f for i, f in data.item_features.items() if int(i[1:]) % 2 == 0}
    return HybridLightFM(no_components=6, epochs=5, random_state=0).fit(
        data.interactions, user_features, item_features
    )


# -- top k of a score vector -------------------------------------------------------------------


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    scores=st.lists(
        st.one_of(st.floats(-5, 5, width=32), st.just(float("-inf"))), min_size=0, max_size=40
    ),
    k=st.integers(1, 50),
)
def test_top_k_is_a_sorted_prefix_of_finite_scores(scores, k):
    arr = np.asarray(scores, dtype=np.float32)
    top = top_k(arr, k)
    finite = np.flatnonzero(np.isfinite(arr))
    assert len(top) == min(k, finite.size)
    assert np.all(np.isfinite(arr[top]))
    assert np.all(np.diff(arr[top]) <= 0)
    if top.size:
        rest = np.setdiff1d(finite, top)
        assert rest.size == 0 or arr[rest].max() <= arr[top].min()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2_000, 60_000),
    k=st.integers(1, 1_000),
    excluded=st.floats(0, 0.99),
    rounding=st.sampled_from([None, 1, 0]),
)
def test_top_k_on_long_vectors_equals_a_full_sort(seed, n, k, excluded, rounding):
    """The sampled lower bound path: same scores as sorting everything (ties included)."""
    rng = np.random.default_rng(seed)
    scores = (rng.standard_normal(n) * 3 - 30).astype(np.float32)
    if rounding is not None:
        scores = np.round(scores, rounding)  # many ties
    scores[rng.random(n) < excluded] = -np.inf
    top = top_k(scores, k)
    finite = np.flatnonzero(np.isfinite(scores))
    want = np.sort(scores[finite])[::-1][:k]
    np.testing.assert_array_equal(scores[top], want)
    assert len(set(top.tolist())) == len(top)


@pytest.mark.parametrize("n", [5, 200, 5_000])
def test_top_k_keeps_the_first_of_scores_tied_at_the_kth_place(n):
    """Regression: argpartition kept an arbitrary one of the items tied with the k-th
    best, so equal items could be answered in a different order from row order."""
    best = n // 2 | 1
    scores = np.zeros(n, dtype=np.float32)
    scores[best] = 1.0
    assert top_k(scores, 3).tolist() == [best, 0, 1]
    scores[::2] = -np.inf
    assert top_k(scores, 3).tolist() == [best, 1, 3] if best > 3 else [3, 1]


# -- approximate retrieval -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog():
    """A larger trained-like catalog where the graph search is really approximate."""
    rng = np.random.default_rng(7)
    rows = _item_rows(rng, 20_000, 16, ties=False)
    users = np.stack([_user(rng, 16, False) for _ in range(100)])
    return rows, users


INDEX_KINDS = {"hnsw": AnnIndex.build, "ivf": ClusterIndex.build}


@pytest.mark.parametrize("kind", list(INDEX_KINDS))
def test_ann_reaches_the_recall_and_answers_like_exact_scoring(catalog, kind):
    rows, users = catalog
    check = tune_ef(INDEX_KINDS[kind](rows), users, MIN_RECALL)
    assert check.index is not None and check.recall >= MIN_RECALL
    exact = ExactScan(rows)
    for uvec in users[:20]:
        got = check.index.search(Query(uvec), 10)
        want = exact.search(Query(uvec), 10)
        assert got.approximate and not want.approximate
        assert np.intersect1d(got.rows, want.rows).size >= 8


def test_a_bad_index_fails_the_recall_check():
    """A graph with two links per node searched with an expansion of 1 misses most of
    the true top 10; the check says so instead of serving it."""
    rng = np.random.default_rng(3)
    rows = _item_rows(rng, 5_000, 16, ties=False)
    users = np.stack([_user(rng, 16, False) for _ in range(50)])
    bad = AnnIndex.build(rows, connectivity=2, expansion_add=2, ef=1)
    check = tune_ef(bad, users, MIN_RECALL, ladder=(1,))
    assert check.index is None and check.recall < MIN_RECALL


def test_too_few_clusters_scanned_fail_the_recall_check():
    """500 clusters of which one is scanned per query miss most of the true top 10."""
    rng = np.random.default_rng(3)
    rows = _item_rows(rng, 5_000, 16, ties=False)
    users = np.stack([_user(rng, 16, False) for _ in range(50)])
    check = tune_ef(ClusterIndex.build(rows, lists=500), users, MIN_RECALL, ladder=(1,))
    assert check.index is None and check.recall < MIN_RECALL
    assert tune_ef(ClusterIndex.build(rows, lists=500), users, MIN_RECALL).index is not None


@pytest.mark.parametrize("kind", list(INDEX_KINDS))
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    share=st.sampled_from([0.0, 0.01, 0.3, 0.9, 0.999]),
    k=st.integers(1, 60),
    clustered=st.booleans(),
)
def test_ann_exclusions_never_leak_and_never_shorten_the_answer(
    catalog, kind, seed, share, k, clustered
):
    """Masked rows (excluded or deleted) are filtered with over-fetching (more clusters);
    when the index cannot give ``min(k, eligible)`` rows the exact scan answers."""
    rows, users = catalog
    index = _shared_index(rows, kind)
    rng = np.random.default_rng(seed)
    uvec = users[seed % len(users)]
    if clustered:  # mask the user's own best rows: the graph's first answers all go
        best = top_k(rows @ uvec, max(1, int(share * len(rows))))
        masked = np.sort(best)
    else:
        masked = np.flatnonzero(rng.random(len(rows)) < share).astype(np.int64)
    hits = index.search(Query(uvec, masked), k)
    assert not np.isin(hits.rows, masked).any()
    assert hits.rows.size == min(k, len(rows) - masked.size)


_INDEXES: dict[tuple[int, str], Retriever] = {}


def _shared_index(rows, kind):
    if (id(rows), kind) not in _INDEXES:
        _INDEXES[id(rows), kind] = INDEX_KINDS[kind](rows)
    return _INDEXES[id(rows), kind]


def test_two_stage_reranks_the_candidates():
    """A fuller score (here: popularity added to the factor score) reorders the
    candidates of the first stage."""
    rng = np.random.default_rng(1)
    rows = _item_rows(rng, 500, 4, ties=False)
    boost = np.zeros(500, np.float32)
    boost[::7] = 100.0
    two = TwoStage(
        ExactScan(rows), lambda q, r: exact_scores(rows, r, q.vector) + boost[r], candidates=50
    )
    uvec = _user(rng, 4, False)
    hits = two.search(Query(uvec), 5)
    candidates = ExactScan(rows).search(Query(uvec), 50).rows
    boosted = [r for r in candidates.tolist() if r % 7 == 0]
    assert hits.rows.tolist()[: len(boosted[:5])] == boosted[:5]


def test_exact_top_k_in_chunks_equals_a_full_sort(catalog):
    rows, users = catalog
    got = exact_top_k(rows, users[:10], 10, chunk=999)
    for row, uvec in zip(got, users[:10]):
        want, _ = _full_top_k(rows, uvec, 10, [])
        assert sorted(row.tolist()) == sorted(want.tolist())


# -- snapshots: the recall check, exact=True, mapped serving files ------------------------------


@pytest.fixture(scope="module")
def larger_model():
    data = make_synthetic(n_users=300, n_items=3_000, n_groups=8, per_user=20, seed=2)
    return HybridLightFM(no_components=16, epochs=3, random_state=0).fit(
        data.interactions, data.user_features, data.item_features
    )


@pytest.mark.parametrize("library,strategy", [("ivf", "ivf"), ("usearch", "hnsw")])
def test_snapshot_serves_the_index_when_its_recall_is_enough(
    larger_model, tmp_path, library, strategy
):
    snap = Snapshot.from_model(
        larger_model,
        version="v",
        directory=str(tmp_path),
        approximate=True,
        ann_min_items=1,
        ann_options={"library": library},
    )
    info = snap.retrieval
    assert info.kind == "approximate" and info.strategy == strategy
    assert info.recall >= MIN_RECALL and info.fallback is None and info.mapped
    rec = snap.recommend("u1", None, 10)
    assert rec.retrieval == "approximate"
    # exact=True scores every item: the exact scan's answer, marked exact
    audit = snap.recommend("u1", None, 10, exact=True)
    plain = Snapshot.from_model(larger_model, version="v", strategy="exact")
    assert audit.retrieval == "exact"
    assert audit.items == plain.recommend("u1", None, 10).items


def test_snapshot_falls_back_to_exact_scoring_on_a_bad_index(larger_model):
    snap = Snapshot.from_model(
        larger_model,
        version="v",
        approximate=True,
        ann_min_items=1,
        ann_options={"library": "usearch", "connectivity": 2, "expansion_add": 2},
        ef_ladder=(1,),
    )
    info = snap.retrieval
    assert info.kind == "exact" and info.recall < MIN_RECALL
    assert "recall@10" in info.fallback
    plain = Snapshot.from_model(larger_model, version="v", strategy="exact")
    rec = snap.recommend("u3", None, 10)
    assert rec.retrieval == "exact"
    assert rec.items == plain.recommend("u3", None, 10).items


@pytest.mark.parametrize("library", ["ivf", "usearch"])
def test_serving_files_are_built_once_then_mapped_and_rebuilt_when_corrupt(tmp_path, library):
    rng = np.random.default_rng(0)
    rows = _item_rows(rng, 2_000, 8, ties=False)
    calls = []

    def compute():
        calls.append(1)
        return rows

    opts = {"library": library}
    first = load_or_build(tmp_path, compute, len(rows), with_index=True, ann_options=opts)
    assert first.build_seconds > 0 and len(calls) == 1
    second = load_or_build(tmp_path, compute, len(rows), with_index=True, ann_options=opts)
    assert second.build_seconds == 0.0 and len(calls) == 1  # loaded, not rebuilt
    assert isinstance(second.items, np.memmap) and not second.items.flags.writeable
    np.testing.assert_array_equal(second.items, rows)
    uvec = _user(rng, 8, False)
    assert second.index.search(Query(uvec), 5).rows.size == 5
    # a corrupt file fails its checksum and the set is rebuilt
    items_file = tmp_path / "serving" / "items.npy"
    data = bytearray(items_file.read_bytes())
    data[-3] ^= 0xFF
    items_file.write_bytes(bytes(data))
    third = load_or_build(tmp_path, compute, len(rows), with_index=True, ann_options=opts)
    assert len(calls) == 2 and third.build_seconds > 0
    np.testing.assert_array_equal(third.items, rows)
