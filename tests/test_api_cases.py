"""The 16 cases of DESIGN.md end to end over HTTP, against a real Redis.

Users and items get their state through the API and the feature store; the expected
scores come from ``LightFM.predict`` with the feature matrices training would build from
the same features (the oracle).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from lightfm import LightFM

USER_CASES = {  # name -> (user_id, features put in the store or None, user_case)
    "known+features": ("u0", None, "known_with_features"),
    "known": ("u1", None, "known"),
    "new+features": ("visitor", {"genre:2": 1.0, "unheard-of": 1.0}, "new_with_features"),
    "new": ("stranger", None, "unknown"),
}
ITEM_CASES = {  # name -> (item_id, features put in the store or None)
    "known+features": ("i0", None),
    "known": ("i1", None),
    "new+features": ("fresh", {"genre:2": 1.0, "tag:5": 1.0}),
    "new": ("bare", {}),  # in the catalog, no features: unscorable
}
ROMAN = "I II III IV V VI VII VIII IX X XI XII XIII XIV XV XVI".split()
CASES = [
    pytest.param(u, i, id=f"{ROMAN[col * 4 + row]}-user:{u}-item:{i}")
    for col, i in enumerate(ITEM_CASES)
    for row, u in enumerate(USER_CASES)
]


def _oracle(model, user_id, user_features, item_id, item_features):
    users = model.user_space_
    u = users.matrix([user_id], {user_id: user_features})
    i = model.item_space_.matrix([item_id], {item_id: item_features})
    return float(
        LightFM.predict(
            model,
            np.zeros(1, np.int32),
            np.zeros(1, np.int32),
            item_features=sp.csr_matrix(i),
            user_features=sp.csr_matrix(u),
        )[0]
    )


@pytest.mark.parametrize("user_case, item_case", CASES)
def test_the_sixteen_cases(serving_world, user_case, item_case):
    world = serving_world
    api = world.app().test_client()
    user_id, put_user, expected_case = USER_CASES[user_case]
    item_id, put_item = ITEM_CASES[item_case]
    if put_user is not None:
        assert (
            api.put(f"/v1/users/{user_id}/features", json={"features": put_user}).status_code == 200
        )
    if put_item is not None:
        assert (
            api.put(f"/v1/items/{item_id}/features", json={"features": put_item}).status_code == 200
        )
        _wait_for_catalog(world, item_id, put_item)

    body = {"user_id": user_id, "items": [item_id], "exclude_seen": False, "k": 5}
    response = api.post("/v1/recommendations", json=body)
    assert response.status_code == 200, response.json
    out = response.json
    assert out["user_case"] == expected_case
    assert out["model_version"] == world.version
    assert out["degraded"] is False

    model = world.model
    user_features = world.feature_store.get_features("users", user_id) or {}
    item_features = world.feature_store.get_features("items", item_id)
    if item_features is None:  # a model item never put in the store: its training row
        item_features = world.data.item_features.get(item_id, {})
    if item_case == "new":
        assert out["unscorable"] == [item_id] and out["items"] == []
        return
    assert out["unscorable"] == []
    [scored] = out["items"]
    assert scored["item_id"] == item_id
    if user_case == "new":
        assert out["strategy"] == "baseline"
        idx = model.item_space_.entities.get(item_id)
        assert scored["score"] == pytest.approx(0.0 if idx is None else model.popularity_[idx])
    else:
        assert out["strategy"] == "personalized"
        want = _oracle(model, user_id, user_features, item_id, item_features)
        assert scored["score"] == pytest.approx(want, rel=1e-5, abs=1e-5)


def _wait_for_catalog(world, item_id, features, timeout=5.0):
    import time

    snap_of = lambda: world.apps[-1].extensions["hybridrec"].state.snapshot  # noqa: E731
    deadline = time.monotonic() + timeout
    scorable = bool(set(features) & set(world.model.item_space_.vocabulary.external))
    while time.monotonic() < deadline:
        if (item_id in snap_of()) == scorable:
            return
        time.sleep(0.02)
    raise AssertionError(f"{item_id} not applied within {timeout} s")


def test_get_by_id_matches_post_and_excludes_seen(serving_world):
    api = serving_world.app().test_client()
    got = api.get("/v1/users/u0/recommendations?k=5").json
    posted = api.post("/v1/recommendations", json={"user_id": "u0", "k": 5}).json
    assert got == posted
    seen = set(serving_world.feature_store.get_seen("u0"))
    assert seen and not seen & {x["item_id"] for x in got["items"]}
    with_seen = api.get("/v1/users/u0/recommendations?k=40&exclude_seen=false").json
    assert seen <= {x["item_id"] for x in with_seen["items"]}


def test_inline_features_replace_stored_ones(serving_world):
    api = serving_world.app().test_client()
    body = {"user_id": "u0", "features": {}, "k": 3, "exclude_seen": False}
    out = api.post("/v1/recommendations", json=body).json
    assert out["user_case"] == "known"  # indicator only: the empty mapping replaced them
    anonymous = api.post("/v1/recommendations", json={"features": {"genre:1": 1.0}}).json
    assert anonymous["user_id"] is None and anonymous["user_case"] == "new_with_features"
    nothing = api.post("/v1/recommendations", json={}).json
    assert nothing["strategy"] == "baseline" and len(nothing["items"]) == 10


def test_exclude_list_and_interactions_posted_are_excluded_at_once(serving_world):
    api = serving_world.app().test_client()
    first = api.get("/v1/users/u2/recommendations?k=3").json["items"]
    top = first[0]["item_id"]
    out = api.get(f"/v1/users/u2/recommendations?k=3&exclude={top},nonexistent").json
    assert top not in [x["item_id"] for x in out["items"]]
    posted = api.post(
        "/v1/interactions", json={"interactions": [{"user_id": "u2", "item_id": top}]}
    )
    assert posted.status_code == 202 and posted.json == {"accepted": 1}
    again = api.get("/v1/users/u2/recommendations?k=3").json["items"]
    assert top not in [x["item_id"] for x in again]


def test_features_crud_and_similar(serving_world):
    api = serving_world.app().test_client()
    assert api.get("/v1/users/nobody/features").status_code == 404
    assert (
        api.put("/v1/users/nobody/features", json={"features": {"genre:0": 2}}).status_code == 200
    )
    assert api.get("/v1/users/nobody/features").json == {
        "user_id": "nobody",
        "features": {"genre:0": 2.0},
    }
    assert api.delete("/v1/users/nobody/features").status_code == 204
    assert api.delete("/v1/users/nobody/features").status_code == 404
    similar = api.get("/v1/items/i0/similar?k=4").json
    assert similar["item_id"] == "i0" and len(similar["items"]) == 4
    assert "i0" not in [x["item_id"] for x in similar["items"]]
    missing = api.get("/v1/items/never/similar")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"


def test_regression_a_put_says_how_many_feature_names_the_model_does_not_know(serving_world):
    # Regression: an item PUT of features all unknown to the model was a silent 200, and
    # /similar then called it "without features in the store" (issue 10 item 8)
    api = serving_world.app().test_client()
    put = api.put("/v1/items/odd/features", json={"features": {"nope:1": 1, "nope:2": 1}})
    assert put.status_code == 200
    assert put.json == {"item_id": "odd", "features": {"nope:1": 1.0, "nope:2": 1.0},
                        "unknown_features": 2}  # fmt: skip
    known = serving_world.model.item_space_.vocabulary.external[0]
    mixed = api.put("/v1/items/half/features", json={"features": {known: 1, "nope:1": 1}})
    assert mixed.json["unknown_features"] == 1
    known = serving_world.model.user_space_.vocabulary.external[0]
    user = api.put("/v1/users/newbie/features", json={"features": {known: 1, "zz": 1}})
    assert user.json["unknown_features"] == 1
    similar = api.get("/v1/items/odd/similar")
    error = similar.json["error"]
    assert similar.status_code == 404 and error["code"] == "unscorable"
    assert "has 2 features in the store" in error["message"]
    assert f"model {serving_world.version} knows none of them" in error["message"]
    assert "without features" not in error["message"]
    assert api.get("/v1/items/half/similar").status_code == 200
    api.delete("/v1/items/odd/features")
    gone = api.get("/v1/items/odd/similar").json["error"]
    assert gone["code"] == "not_found" and "no features in the store" in gone["message"]


def test_model_health_and_metrics(serving_world):
    api = serving_world.app().test_client()
    assert api.get("/healthz").json == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json["model_version"] == serving_world.version
    info = api.get("/v1/model").json
    assert info["model_version"] == serving_world.version
    assert info["items"] == 40 and info["users"] == 60 and info["store"] == "ok"
    api.get("/v1/users/u0/recommendations")
    api.get("/v1/users/stranger/recommendations")
    api.post("/v1/recommendations", json={"features": {"genre:1": 1, "zzz": 1}})
    api.put("/v1/items/i9/features", json={"features": {"genre:2": 1, "new-a": 1, "new-b": 1}})
    text = api.get("/metrics").data.decode()
    for needle in (
        'hybridrec_http_requests_total{method="GET",route="/v1/users/<user_id>/recommendations",'
        'status="200"}',
        "hybridrec_http_request_duration_seconds_bucket",
        'hybridrec_recommendations_total{degraded="false",strategy="baseline",user_case="unknown"}',
        'hybridrec_unknown_features_total{side="user"} 1.0',
        'hybridrec_unknown_features_total{side="item"} 2.0',
        f'hybridrec_model_info{{version="{serving_world.version}"}} 1.0',
        "hybridrec_snapshot_age_seconds",
        'hybridrec_model_reloads_total{result="success"} 1.0',
    ):
        assert needle in text, needle
