"""The blend as hybridrec fits, stores, evaluates and serves it (issue 12).

- the snapshot's blended top k (candidates + a bound, ``serving/blending.py``) is the
  exact top k of the whole-catalog blend, for warm users with a history, new users with
  features, after catalog changes, and when the bound forces a wider search;
- ``evaluate`` scores what serving would answer;
- the artifact stores the blend pickle-free and versioned; an artifact without one (as
  older hybridrec wrote) loads and is served by LightFM alone; a blend format this
  hybridrec does not read is refused by name;
- retraining with warm start refits the item-item part on the new data;
- bad blend settings are refused with a clear message, never a traceback.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridrec.model.blend import BLEND_DEFAULTS, check_blend_params
from hybridrec.modelstore.artifact import BLEND_FILE, ArtifactError, load_model, save_model
from hybridrec.serving import blending
from hybridrec.serving.answers import score_type
from hybridrec.serving.snapshot import Snapshot
from hybridrec.training.evaluation import evaluate
from hybridrec.training.trainer import fit_model

from .synthetic import make_synthetic

SMALL = {"no_components": 8, "epochs": 5, "item_item_l2": 5.0}


@pytest.fixture(scope="module")
def world():
    data = make_synthetic(n_users=90, n_items=70, n_groups=4, per_user=10, seed=11)
    model = fit_model(data.interactions, data.user_features, data.item_features, SMALL, seed=0)
    return data, model


def history_of(model, user_id: str) -> list[str]:
    i = model.user_ids_.get(user_id)
    m = model.interactions_
    return model.item_ids_.convert_to_external(m.indices[m.indptr[i] : m.indptr[i + 1]])


def catalog_blend(snap: Snapshot, uvec, history: list[str], exclude=()) -> dict[str, float]:
    """The blend of every live item of ``snap``, scored at once (the reference)."""
    model = snap.model
    ids = snap.item_ids()
    F = np.vstack([snap.item_vector(i) for i in ids]).astype(np.float64)
    idx = model.item_ids_.convert_to_internal(ids, missing=-1)
    hist = model.item_ids_.convert_to_internal([h for h in history if h in snap], missing=-1)
    scores = model.blend_.score(uvec, F, model.item_item_, hist[hist >= 0], items=idx).scores
    return {i: s for i, s in zip(ids, scores.tolist()) if i not in set(exclude)}


def assert_top_k(rec, reference: dict[str, float], k: int) -> None:
    """``rec`` holds a top k of ``reference`` (ties may come in either order)."""
    want = sorted(reference.values(), reverse=True)[:k]
    got = [s for _, s in rec.items]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for item, score in rec.items:
        assert reference[item] == pytest.approx(score, rel=1e-5, abs=1e-5)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    user=st.integers(0, 89),
    k=st.sampled_from([1, 3, 10, 40]),
    n_excluded=st.integers(0, 15),
    candidates=st.sampled_from([1, 5, 50]),
)
def test_a_warm_users_answer_is_the_top_k_of_the_whole_catalog_blend(
    world, monkeypatch, user, k, n_excluded, candidates
):
    data, model = world
    monkeypatch.setattr(blending, "CANDIDATES", candidates)  # 1: the bound forces retries
    snap = Snapshot.from_model(model)
    uid = f"u{user}"
    if uid not in model.user_ids_:
        return
    history = history_of(model, uid)
    exclude = history[:n_excluded]
    rec = snap.recommend(uid, None, k, exclude=exclude, history=history)
    assert rec.score_parts == ("factors", "item_item")
    assert score_type(rec, snap) == "blend"
    uvec = snap.user_vector(uid, None)[0]
    assert_top_k(rec, catalog_blend(snap, uvec, history, exclude), k)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    genre=st.integers(0, 3),
    k=st.sampled_from([1, 10, 30]),
    candidates=st.sampled_from([1, 50]),
    changes=st.integers(0, 3),
)
def test_new_users_and_catalog_changes_get_the_whole_catalog_blend(
    world, monkeypatch, genre, k, candidates, changes
):
    """A new user with features (factors + popularity) and a warm user, after items were
    added (scored from features), changed (a new row, same item-item weights) and
    deleted."""
    data, model = world
    monkeypatch.setattr(blending, "CANDIDATES", candidates)
    snap = Snapshot.from_model(model)
    edits = [
        {"new-a": {"genre:0": 1.0}, "new-b": {f"genre:{genre}": 1.0, "tag:1": 1.0}},
        {"i3": {"genre:2": 1.0}},  # a known item, changed
        {"i4": None, "i8": None},  # deleted
    ][:changes]
    for edit in edits:
        snap = snap.with_items(edit)
    features = {f"genre:{genre}": 1.0}
    rec = snap.recommend(None, features, k)
    assert rec.score_parts == ("factors", "popularity")
    uvec = snap.user_vector(None, features)[0]
    assert_top_k(rec, catalog_blend(snap, uvec, []), k)

    uid = next(u for u in model.user_ids_.external if u in data.user_features)
    history = history_of(model, uid)
    rec = snap.recommend(uid, None, k, exclude=history, history=history)
    assert_top_k(rec, catalog_blend(snap, snap.user_vector(uid, None)[0], history, history), k)


def test_candidate_items_are_scored_with_the_blend(world):
    data, model = world
    snap = Snapshot.from_model(model)
    uid = model.user_ids_.external[0]
    history = history_of(model, uid)
    items = ["i1", "i2", "nope", "i5", "i1"]
    rec = snap.recommend(uid, None, 10, items=items, history=history, exclude=["i2"])
    assert rec.unscorable == ["nope"]
    reference = catalog_blend(snap, snap.user_vector(uid, None)[0], history)
    assert {i for i, _ in rec.items} == {"i1", "i5"}
    for item, score in rec.items:
        assert score == pytest.approx(reference[item], rel=1e-5, abs=1e-5)


def test_a_user_with_neither_vector_nor_history_keeps_the_baseline(world):
    _, model = world
    snap = Snapshot.from_model(model)
    rec = snap.recommend("stranger", {}, 5)
    assert rec.strategy == "baseline" and rec.score_parts == ()
    assert score_type(rec, snap) == "popularity"


def test_evaluate_scores_what_serving_answers(world):
    """Precision@k of ``evaluate`` equals the precision of the snapshot's answers (the
    training items excluded and used as the history, as ``exclude_seen`` does)."""
    data, _ = world
    df = data.interactions.sort_values("timestamp")
    train, test = df.iloc[: int(0.8 * len(df))], df.iloc[int(0.8 * len(df)) :]
    model = fit_model(train, data.user_features, data.item_features, SMALL, seed=1)
    result = evaluate(model, test, user_features=data.user_features, sample_users=0)
    snap = Snapshot.from_model(model)
    precision = {"warm_users": [], "cold_users": []}
    for uid, rows in test.groupby("user_id"):
        warm = uid in model.user_ids_
        history = history_of(model, uid) if warm else []
        positives = set(rows["item_id"]) - set(history)
        positives &= set(model.item_ids_.external)
        if not positives:
            continue
        features = None if warm else data.user_features.get(uid, {})
        rec = snap.recommend(uid, features, 10, exclude=history, history=history)
        hits = sum(item in positives for item, _ in rec.items)
        precision["warm_users" if warm else "cold_users"].append(hits / 10)
    for seg, values in precision.items():
        if values:
            assert result["segments"][seg]["users"] == len(values)
            assert result["segments"][seg]["precision"] == pytest.approx(np.mean(values))


# -- the artifact ---------------------------------------------------------------------------------


def test_the_blend_round_trips_through_the_artifact_pickle_free(world, tmp_path):
    _, model = world
    manifest = save_model(model, tmp_path / "a")
    entry = manifest["blend"]
    assert entry["format"] == 1 and entry["file"] == BLEND_FILE
    assert entry["params"] == {**BLEND_DEFAULTS, "item_item_l2": 5.0}
    assert BLEND_FILE in manifest["files"]
    with np.load(tmp_path / "a" / BLEND_FILE, allow_pickle=False) as npz:
        assert all(npz[name].dtype != object for name in npz.files)
    loaded = load_model(tmp_path / "a")
    a, b = Snapshot.from_model(model), Snapshot.from_model(loaded)
    for uid in model.user_ids_.external[:20]:
        history = history_of(model, uid)
        ra = a.recommend(uid, None, 10, exclude=history, history=history)
        rb = b.recommend(uid, None, 10, exclude=history, history=history)
        assert ra.items == rb.items and rb.score_parts == ("factors", "item_item")

    (tmp_path / "a" / BLEND_FILE).write_bytes(b"not the blend")
    with pytest.raises(ArtifactError, match="blend.npz"):
        load_model(tmp_path / "a")


def test_an_artifact_without_a_blend_is_served_by_lightfm_alone(world, tmp_path):
    """What hybridrec wrote before blends: no "blend" in the manifest, no blend.npz."""
    data, _ = world
    from hybridrec.model import HybridLightFM

    old = HybridLightFM(no_components=8, epochs=3, random_state=0).fit(
        data.interactions, data.user_features, data.item_features
    )
    manifest = save_model(old, tmp_path / "old")
    assert "blend" not in manifest and not (tmp_path / "old" / BLEND_FILE).exists()
    loaded = load_model(tmp_path / "old")
    assert loaded.blend_ is None and loaded.blend_params_ is None
    snap = Snapshot.from_model(loaded)
    uid = loaded.user_ids_.external[0]
    history = history_of(loaded, uid)
    rec = snap.recommend(uid, None, 5, exclude=history, history=history)
    assert rec.score_parts == () and score_type(rec, snap) == "model"
    uvec = loaded.user_vector(loaded.user_row(uid))
    scores = loaded.item_factors().astype(np.float64) @ uvec
    assert rec.items[0][1] == pytest.approx(
        max(s for i, s in zip(loaded.item_ids_.external, scores) if i not in history), rel=1e-5
    )


def test_a_blend_format_this_hybridrec_does_not_read_is_refused(world, tmp_path):
    _, model = world
    save_model(model, tmp_path / "a")
    path = tmp_path / "a" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["blend"]["format"] = 2
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="blend format 2 is not supported"):
        load_model(tmp_path / "a", verify=False)


def test_item_item_weight_zero_trains_lightfm_alone(world, tmp_path):
    data, _ = world
    model = fit_model(
        data.interactions, data.user_features, None, {**SMALL, "item_item_weight": 0}, seed=0
    )
    assert model.blend_ is None and model.item_item_ is None
    manifest = save_model(model, tmp_path / "off")
    assert (
        manifest["blend"]["file"] is None and manifest["blend"]["params"]["item_item_weight"] == 0
    )
    loaded = load_model(tmp_path / "off")
    assert loaded.blend_ is None and loaded.blend_params_["item_item_weight"] == 0


@pytest.mark.parametrize(
    "params, message",
    [
        ({"item_item_weight": -1}, "item_item_weight must be a finite number >= 0"),
        ({"item_item_weight": float("nan")}, "item_item_weight must be a finite number >= 0"),
        ({"item_item_max_items": 0}, "item_item_max_items must be an integer >= 1"),
        ({"item_item_neighbors": 2.5}, "item_item_neighbors must be an integer >= 1"),
        ({"item_item_l2": 0}, "item_item_l2 must be a finite number > 0"),
        ({"popularity_weight": "1"}, "popularity_weight must be a finite number >= 0"),
    ],
)
def test_bad_blend_parameters_are_refused_by_name(params, message):
    with pytest.raises(ValueError, match=message):
        check_blend_params(params)
