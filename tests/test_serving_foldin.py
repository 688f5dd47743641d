"""Fold-in between trainings (issue 5): a user outside the model with interactions
gets a personalised list from those interactions, not the baseline."""

from __future__ import annotations

import numpy as np

from hybridrec.model.foldin import FoldIn, fold_in_vector, latent_centroid
from hybridrec.serving.snapshot import Snapshot


def test_fold_in_vector_is_the_centroid_difference():
    factors = np.array([[1.0, 0.0, 0.5, 1], [0.0, 1.0, 0.1, 1], [1.0, 1.0, 0.0, 1]])
    centroid = latent_centroid(factors)
    np.testing.assert_allclose(centroid, [2 / 3, 2 / 3])
    vec = fold_in_vector(factors[[0]], centroid)
    np.testing.assert_allclose(vec, [1 / 3, -2 / 3, 1.0, 0.0])
    # scores keep the items' biases: q_u . q_i + b_i
    np.testing.assert_allclose(factors @ vec, [1 / 3 + 0.5, -2 / 3 + 0.1, -1 / 3])
    assert fold_in_vector(factors[[]], centroid) is None
    np.testing.assert_allclose(FoldIn.build(factors).vector(np.array([0])), vec)


def test_snapshot_folds_in_an_unknown_user_from_history(serving_model):
    data, model = serving_model
    snap = Snapshot.from_model(model, version="v")
    history = list(model.item_ids_.external[:3])
    baseline = snap.recommend("stranger", {}, 5)
    folded = snap.recommend("stranger", {}, 5, history=history, exclude=history)
    assert baseline.strategy == "baseline"
    assert folded.strategy == "personalized" and folded.user_case == "unknown"
    factors = model.item_factors().astype(np.float64)
    vec = fold_in_vector(factors[:3], latent_centroid(factors))
    expected = factors @ vec
    expected[:3] = -np.inf
    best = np.argsort(-expected, kind="stable")[:5]
    assert [i for i, _ in folded.items] == model.item_ids_.convert_to_external(best)
    np.testing.assert_allclose([s for _, s in folded.items], expected[best], rtol=1e-5)
    # a user the model knows is not folded in: history only matters without a vector
    known = model.user_ids_.external[0]
    assert snap.recommend(known, {}, 5, history=history).items == snap.recommend(known, {}, 5).items


def test_interactions_posted_through_the_api_fold_in_and_are_excluded(serving_world):
    api = serving_world.app().test_client()
    before = api.get("/v1/users/newcomer/recommendations?k=5").get_json()
    assert before["strategy"] == "baseline"
    picked = [before["items"][0]["item_id"], before["items"][1]["item_id"]]
    r = api.post(
        "/v1/interactions",
        json={"interactions": [{"user_id": "newcomer", "item_id": i} for i in picked]},
    )
    assert r.status_code == 202
    after = api.get("/v1/users/newcomer/recommendations?k=5").get_json()
    assert after["strategy"] == "personalized" and after["user_case"] == "unknown"
    assert not set(picked) & {i["item_id"] for i in after["items"]}  # excluded at once
