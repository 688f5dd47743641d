"""Issue 10 item 5: scores on three unrelated scales, undocumented.

Bug pinned: personalised scores (around -56), popularity counts (341) and fold-in scores
(around 8) came back in the same ``score`` field with nothing saying which was which.
Every answer now says what its scores are (``score_type``), and each type is checked
against what it claims to be. Real Redis (the serving world fixtures).
"""

from __future__ import annotations

import numpy as np
import pytest

from hybridrec.model import HybridLightFM
from hybridrec.serving.answers import SCORE_TYPES, score_type
from hybridrec.serving.snapshot import Snapshot


def test_each_answer_names_its_scale_and_the_scores_are_what_it_says(serving_world):
    world = serving_world
    api = world.app().test_client()
    model = world.model

    known = api.get("/v1/users/u0/recommendations?k=3").get_json()
    assert (known["strategy"], known["score_type"]) == ("personalized", "model")

    stranger = api.get("/v1/users/stranger/recommendations?k=3").get_json()
    assert (stranger["strategy"], stranger["score_type"]) == ("baseline", "popularity")
    counts = world.data.interactions.groupby("item_id")["weight"].sum()
    assert [i["score"] for i in stranger["items"]] == [
        counts[i["item_id"]] for i in stranger["items"]
    ]

    body = {"interactions": [{"user_id": "newbie", "item_id": i} for i in ("i0", "i4", "i8")]}
    assert api.post("/v1/interactions", json=body).status_code == 202
    folded = api.get("/v1/users/newbie/recommendations?k=3").get_json()
    assert (folded["strategy"], folded["score_type"]) == ("personalized", "fold_in")
    snap = Snapshot.from_model(model, version="v")
    q_u = snap.fold_in(["i0", "i4", "i8"])
    for item in folded["items"]:
        # q_u . q_i + b_i: the item's row [q_i, b_i, 1] times [q_u, 1, 0]
        row = snap.item_vector(item["item_id"])
        assert item["score"] == pytest.approx(float(row @ q_u), rel=1e-5)

    similar = api.get("/v1/items/i0/similar?k=3").get_json()
    assert similar["score_type"] == "cosine"
    assert all(-1.0 <= i["score"] <= 1.0 for i in similar["items"])
    assert {known["score_type"], stranger["score_type"], folded["score_type"]} <= set(SCORE_TYPES)


@pytest.mark.parametrize("user_indicators", [True, False])
def test_score_type_says_fold_in_exactly_when_the_snapshot_folds_in(serving_model, user_indicators):
    data, _ = serving_model
    model = HybridLightFM(
        no_components=4, epochs=2, random_state=0, user_indicators=user_indicators
    ).fit(data.interactions, data.user_features, data.item_features)
    snap = Snapshot.from_model(model, version="v")
    history = ["i1", "i2"]
    users = ["u0", "u1", "stranger"]
    for user in users:
        for features in (None, {}, {"genre:1": 1.0}, {"unheard-of": 1.0}):
            for seen in ((), history):
                rec = snap.recommend(user, features, 3, history=seen)
                vector = snap.user_vector(user, features)[0]
                truth = (
                    "popularity"
                    if vector is None and not seen
                    else "fold_in"
                    if vector is None
                    else "model"
                )
                assert score_type(rec, snap) == truth, (user, features, seen)
                assert np.isfinite([s for _, s in rec.items]).all()
