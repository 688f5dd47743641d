"""The vectorised feature matrix and id maps (issue 14) against the one-row builder that
serving uses: one rule, two implementations, pinned together here."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridrec.model.features import FeatureSpace, feature_names
from hybridrec.model.idmap import IdMap

names = st.sampled_from(["a", "b", "c", "genre:x", "tag 1", "é"])
weights = st.one_of(
    st.floats(-1, 5, allow_nan=False), st.just(0.0), st.integers(0, 3), st.just(float("nan"))
)
ids = st.sampled_from(["u1", "u2", "u3", "new", "007", "7"])


@settings(max_examples=200, deadline=None)
@given(
    entities=st.lists(ids, unique=True, max_size=4),
    vocab=st.lists(names, unique=True, max_size=5),
    feats=st.dictionaries(ids, st.dictionaries(names, weights, max_size=4), max_size=6),
    rows=st.lists(st.one_of(ids, st.none()), max_size=8),
    use_indicators=st.booleans(),
    feature_weight=st.one_of(st.none(), st.floats(0.1, 3)),
    normalize=st.booleans(),
)
def test_matrix_rows_equal_row(
    entities, vocab, feats, rows, use_indicators, feature_weight, normalize
):
    space = FeatureSpace(
        IdMap.from_values(entities),
        IdMap.from_values(vocab),
        use_indicators,
        feature_weight,
        normalize,
    )
    m = space.matrix(rows, feats)
    assert m.shape == (len(rows), space.n_columns) and m.dtype == np.float32
    for r, entity in enumerate(rows):
        one = space.row(entity, feats.get(entity) if entity is not None else None)
        lo, hi = m.indptr[r], m.indptr[r + 1]
        assert list(m.indices[lo:hi]) == list(one.indices)
        np.testing.assert_allclose(m.data[lo:hi], one.values, rtol=1e-6)


@given(st.lists(st.one_of(st.text(max_size=3), st.integers(-5, 5)), max_size=20))
def test_idmap_keeps_first_seen_order_and_converts_both_ways(values):
    m = IdMap.from_values(values)
    expected = list(dict.fromkeys(str(v) for v in values))
    assert list(m.external) == expected
    assert list(m.convert_to_internal(values)) == [expected.index(str(v)) for v in values]
    assert m.convert_to_external(m.convert_to_internal(values)) == [str(v) for v in values]
    grown = m.extend(["zz-new", *values])
    assert grown.external[: len(m)] == m.external
    assert list(grown.convert_to_internal(["missing"], missing=-1)) == [-1]


def test_feature_names_is_the_sorted_vocabulary_of_the_given_ids():
    feats = {"a": {"y": 1.0, "x": 0.0}, "b": {"z": 2.0}, "c": {"w": 1.0}}
    assert feature_names(["a", "b", "unknown"], feats) == ["x", "y", "z"]
