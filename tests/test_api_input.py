"""Every input rule of the API: each refusal is a 4xx with ``{"error": {code, message}}``."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

LONG = "x" * 257
W = 1e39  # finite in float64, infinite in float32


def _refused(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.data[:300])
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


@pytest.fixture(scope="module")
def serving_world(shared_serving_world):
    return shared_serving_world


@pytest.fixture(scope="module")
def api(serving_world):
    return serving_world.app().test_client()


@pytest.mark.parametrize("k", ["0", "1001", "-1", "abc", "1.5", "", " ", "1e3", "٣"])
def test_k_outside_1_to_max_k_is_refused(api, k):
    _refused(api.get(f"/v1/users/u0/recommendations?k={k}"), 400, "invalid_parameter")
    _refused(api.get(f"/v1/items/i0/similar?k={k}"), 400, "invalid_parameter")


@pytest.mark.parametrize("k", [0, 1001, -3, 2.5, "10", True, None, 1001.0, [5]])
def test_k_in_a_body_must_be_an_integer_within_range(api, k):
    _refused(api.post("/v1/recommendations", json={"k": k}), 422, "invalid_body")


def test_k_bounds_are_accepted_and_max_k_is_a_setting(serving_world, api):
    assert api.get("/v1/users/u0/recommendations?k=1").status_code == 200
    assert api.get("/v1/users/u0/recommendations?k=1000").status_code == 200
    small = serving_world.app(max_k=5).test_client()
    assert small.get("/v1/users/u0/recommendations?k=5").status_code == 200
    _refused(small.get("/v1/users/u0/recommendations?k=6"), 400)


def test_ids_longer_than_256_characters_are_refused(api):
    ok = "y" * 256
    assert api.get(f"/v1/users/{ok}/recommendations").status_code == 200
    _refused(api.get(f"/v1/users/{LONG}/recommendations"), 400, "invalid_parameter")
    _refused(api.get(f"/v1/users/u0/recommendations?exclude=a,{LONG}"), 400)
    _refused(api.get(f"/v1/items/{LONG}/similar"), 400)
    _refused(api.get(f"/v1/items/{LONG}/features"), 400)
    _refused(api.put(f"/v1/items/{LONG}/features", json={"features": {"a": 1}}), 400)
    for body in (
        {"user_id": LONG},
        {"exclude": [LONG]},
        {"items": ["ok", LONG]},
        {"features": {LONG: 1.0}},
        {"user_id": ""},
        {"items": [""]},
    ):
        _refused(api.post("/v1/recommendations", json=body), 422, "invalid_body")
    _refused(
        api.post("/v1/interactions", json={"interactions": [{"user_id": LONG, "item_id": "i"}]}),
        422,
    )
    _refused(api.put("/v1/users/u9/features", json={"features": {LONG: 1}}), 422)


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999", "-1", '"2"', "true"])
def test_feature_weights_must_be_finite_non_negative_numbers(api, raw):
    body = '{"features": {"genre:1": RAW}}'.replace("RAW", raw)
    ct = {"content_type": "application/json"}
    status = 400 if raw in ("NaN", "Infinity", "-Infinity") else 422
    _refused(api.post("/v1/recommendations", data=body, **ct), status)
    _refused(api.put("/v1/users/u3/features", data=body, **ct), status)
    _refused(api.put("/v1/items/i3/features", data=body, **ct), status)
    interactions = '{"interactions": [{"user_id": "u", "item_id": "i", "weight": RAW}]}'
    interactions = interactions.replace("RAW", raw)
    _refused(api.post("/v1/interactions", data=interactions, **ct), status)


def test_bodies_larger_than_the_limit_are_refused(serving_world, api):
    big = json.dumps({"items": ["x" * 200] * 6000, "k": 3})
    assert len(big) > 1 << 20
    _refused(api.post("/v1/recommendations", data=big, content_type="application/json"), 413)
    small = serving_world.app(max_body_bytes=100).test_client()
    body = json.dumps({"features": {"a" * 50: 1.0, "b" * 50: 1.0}})
    _refused(small.put("/v1/users/u2/features", data=body, content_type="application/json"), 413)
    _refused(small.post("/v1/recommendations", data=body, content_type="application/json"), 413)
    assert small.post("/v1/recommendations", json={"k": 2}).status_code == 200


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_wrong_content_type_is_refused(api, content_type):
    kwargs = {"data": '{"k": 3}'}
    if content_type:
        kwargs["content_type"] = content_type
    _refused(api.post("/v1/recommendations", **kwargs), 415, "unsupported_media_type")
    _refused(api.put("/v1/items/i2/features", **kwargs), 415)
    assert (
        api.post(
            "/v1/recommendations", data='{"k": 3}', content_type="application/json; charset=utf-8"
        ).status_code
        == 200
    )


@pytest.mark.parametrize(
    "data", ["", "{", "[1, 2]", '"text"', "null", "\xff\xfe", '{"k": 3}{"k": 4}', "[" * 100_000]
)
def test_malformed_json_is_refused(api, data):
    response = api.post("/v1/recommendations", data=data, content_type="application/json")
    assert response.status_code in (400, 422)
    _refused(response, response.status_code)


@pytest.mark.parametrize(
    "body",
    [
        {"user": "u0"},  # misspelt field
        {"features": [1, 2]},
        {"features": {"a": None}},
        {"exclude": "i1,i2"},
        {"exclude_seen": "yes"},
        {"items": "i1"},
        {"items": [1, 2]},
        {"user_id": 7},
        {"exclude": {}},  # Regression: accepted as an empty list (issue 9 item 7)
        {"exclude": None},
        {"k": 10.5},
        {"exact": "true"},
    ],
)
def test_recommendation_bodies_that_break_a_rule(api, body):
    _refused(api.post("/v1/recommendations", json=body), 422, "invalid_body")


def test_a_lone_surrogate_is_not_json(api):
    # '\ud800' without its pair is no Unicode character: the JSON text is invalid
    error = _refused(api.post("/v1/recommendations", json={"user_id": "\ud800"}), 400)
    assert error["code"] == "invalid_json" and "surrogate" in error["message"]


def test_whole_numbers_written_as_floats_are_integers(api):
    # JSON (and the document's schema) do not tell 10 from 10.0
    response = api.post("/v1/recommendations", json={"user_id": "u0", "k": 3.0})
    assert response.status_code == 200 and len(response.json["items"]) == 3
    body = {"interactions": [{"user_id": "f1", "item_id": "i1", "timestamp": 1.7e9}]}
    assert api.post("/v1/interactions", json=body).status_code == 202


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"interactions": []},
        {"interactions": {}},
        {"interactions": [{"user_id": "u"}]},
        {"interactions": [{"user_id": "u", "item_id": "i", "rating": 5}]},
        {"interactions": [{"user_id": "u", "item_id": "i", "timestamp": "yesterday"}]},
        {"interactions": [{"user_id": "u", "item_id": "i", "timestamp": 2**63}]},
        {"interactions": [{"user_id": "u", "item_id": "i", "timestamp": True}]},
        # Regression: null meant "now", and +/-2^63 were accepted (issue 9 item 7)
        {"interactions": [{"user_id": "u", "item_id": "i", "timestamp": None}]},
        {"interactions": [{"user_id": "u", "item_id": "i", "timestamp": 2**63 - 1}]},
        {"interactions": [{"user_id": "u", "item_id": "i", "timestamp": -(2**63)}]},
        {"interactions": [{"user_id": "u", "item_id": "i", "timestamp": "2024-01-02T03:04:05"}]},
        {"interactions": [{"user_id": "u", "item_id": "i", "timestamp": 1.5}]},
        {"interactions": ["u,i"]},
        {"events": []},
    ],
)
def test_interaction_bodies_that_break_a_rule(api, body):
    _refused(api.post("/v1/interactions", json=body), 422, "invalid_body")


def test_interaction_timestamps_accept_unix_seconds_and_iso(serving_world, api):
    body = {
        "interactions": [
            {"user_id": "t1", "item_id": "i1", "timestamp": 1_700_000_000},
            {"user_id": "t1", "item_id": "i2", "timestamp": "2024-01-02T03:04:05Z", "weight": 2},
        ]
    }
    assert api.post("/v1/interactions", json=body).status_code == 202
    log = serving_world.feature_store.read_interactions()
    assert log.tail(2)["timestamp"].tolist() == [1_700_000_000, 1_704_164_645]


@pytest.mark.parametrize(
    "query",
    [
        "exclude_seen=maybe",
        "exclude_seen=",
        "exclude=" + ",".join(["a"] * 10_001),
        "exclude=a,,b",  # Regression (fuzz): empty ids were skipped, the document refuses them
        "exclude=,,",
        "exclude=",  # [""] as much as []: leave the parameter out for none
        "exact=sure",
        "exlude_seen=false",  # misspelt: refused, never silently ignored
    ],
)
def test_query_flags_and_lists(api, query):
    _refused(api.get(f"/v1/users/u0/recommendations?{query}"), 400, "invalid_parameter")


def test_query_flags_accept_true_false_1_0(api):
    for query in ("exclude_seen=FALSE&exact=1", "exclude_seen=0&exact=true", "exclude=a,b"):
        response = api.get(f"/v1/users/u0/recommendations?{query}")
        assert response.status_code == 200, (query, response.json)
        assert response.json["retrieval"] == "exact"


@pytest.mark.parametrize(
    "method, path, body, field, allowed",
    [
        ("post", "/v1/recommendations", {"k": 1001}, "k", "an integer within 1..1000"),
        ("post", "/v1/recommendations", {"items": ["ok", 3]}, "items[1]", "1..256 characters"),
        ("post", "/v1/recommendations", {"user": "u0"}, "'user'", "allowed: user_id, features"),
        (
            "post",
            "/v1/interactions",
            {"interactions": [{"user_id": "u", "item_id": "i", "timestamp": None}]},
            "interactions[0].timestamp",
            "unix seconds within -62135596800..253402300799",
        ),
        (
            "put",
            "/v1/items/i3/features",
            {"features": {"genre:1": 1, "genre:2": -1}},
            'features["genre:2"]',
            "a number within 0..3.4028235e+38",
        ),
        ("put", "/v1/items/i3/features", {}, "'features'", "an object of feature name"),
    ],
)
def test_messages_name_the_field_and_what_it_allows(api, method, path, body, field, allowed):
    message = _refused(getattr(api, method)(path, json=body), 422, "invalid_body")["message"]
    assert field in message and allowed in message, message


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("post", "/v1/interactions", {"interactions": [{"user_id": "u", "item_id": "i",
                                                        "weight": W}]}),
        ("put", "/v1/items/i3/features", {"features": {"genre:1": W}}),
        ("put", "/v1/users/u3/features", {"features": {"genre:1": W}}),
        ("post", "/v1/recommendations", {"features": {"genre:1": W}}),
    ],
)  # fmt: skip
def test_regression_weights_not_finite_in_float32_are_refused(api, method, path, body):
    # Regression: "weight": 1e39 was accepted (202) and then every training failed with
    # "Not all input values are finite" (issue 9 item 1, API side)
    response = getattr(api, method)(path, json=body)
    message = _refused(response, 422, "invalid_body")["message"]
    assert "within 0..3.4028235e+38" in message and "1e+39" in message


def test_the_largest_float32_weight_is_accepted(api):
    body = {"interactions": [{"user_id": "w", "item_id": "i1", "weight": 3.4028234663852886e38}]}
    assert api.post("/v1/interactions", json=body).status_code == 202


def test_unknown_routes_and_methods(api):
    _refused(api.get("/v2/anything"), 404, "not_found")
    _refused(api.get("/v1/users/u0"), 404)
    response = api.delete("/v1/recommendations")
    _refused(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]
    _refused(api.post("/v1/users/u0/recommendations"), 405)


def test_features_put_needs_a_features_object(api):
    _refused(api.put("/v1/items/i2/features", json={}), 422)
    _refused(api.put("/v1/items/i2/features", json={"features": {"a": 1}, "x": 1}), 422)
    _refused(api.put("/v1/items/i2/features", json={"features": "genre:1"}), 422)


TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def token_api(serving_world):
    return serving_world.app(api_token=TOKEN).test_client()


class TestToken:
    TOKEN = TOKEN

    WRITES = [
        ("put", "/v1/users/u5/features", {"features": {"genre:1": 1}}),
        ("delete", "/v1/users/u4/features", None),
        ("put", "/v1/items/i5/features", {"features": {"genre:1": 1}}),
        ("delete", "/v1/items/i4/features", None),
        ("post", "/v1/interactions", {"interactions": [{"user_id": "u", "item_id": "i"}]}),
        ("post", "/v1/admin/reload", None),
    ]

    @pytest.mark.parametrize("method, path, body", WRITES)
    @pytest.mark.parametrize(
        "header",
        [None, "Bearer wrong", "Bearer", "Basic czNjcmV0LXRva2Vu", "s3cret-token", "Bearer é"],
    )
    def test_writes_and_admin_need_the_token(self, token_api, method, path, body, header):
        api = token_api
        headers = {"Authorization": header} if header else {}
        kwargs = {"json": body} if body is not None else {}
        response = getattr(api, method)(path, headers=headers, **kwargs)
        _refused(response, 401, "unauthorized")

    @pytest.mark.parametrize("method, path, body", WRITES)
    def test_the_right_token_passes(self, token_api, method, path, body):
        api = token_api
        kwargs = {"json": body} if body is not None else {}
        headers = {"Authorization": f"Bearer {self.TOKEN}"}
        response = getattr(api, method)(path, headers=headers, **kwargs)
        assert response.status_code in (200, 202, 204), response.json

    def test_reads_need_no_token(self, token_api):
        api = token_api
        assert api.get("/v1/users/u0/recommendations").status_code == 200
        assert api.post("/v1/recommendations", json={"user_id": "u0"}).status_code == 200
        assert api.get("/v1/items/i0/features").status_code == 200  # item features: public
        assert api.get("/v1/items/i0/similar").status_code == 200
        assert api.get("/v1/model").status_code == 200

    def test_regression_a_users_features_need_the_token(self, token_api):
        # Regression: anyone could read a user's features with a token set (issue 9 item 8)
        _refused(token_api.get("/v1/users/u0/features"), 401, "unauthorized")
        headers = {"Authorization": f"Bearer {self.TOKEN}"}
        response = token_api.get("/v1/users/u0/features", headers=headers)
        assert response.status_code == 200 and response.json["user_id"] == "u0"

    def test_the_token_is_checked_before_the_body(self, token_api):
        api = token_api
        response = api.put("/v1/items/i5/features", data="not json", content_type="text/plain")
        _refused(response, 401)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_FIELDS = ["user_id", "features", "k", "exclude", "exclude_seen", "exact", "items",
           "interactions", "item_id", "weight", "timestamp", "genre:1", ""]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    body=st.dictionaries(
        st.sampled_from(_FIELDS),
        _JSON | st.lists(st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=4), max_size=2),
        max_size=4,
    )
)
def test_any_json_body_is_accepted_or_refused_with_a_one_line_message(body):
    from hybridrec.serving import validation as v

    data = json.dumps(body).encode()
    for tp in (v.declarations(1000).RecommendationRequest, v.InteractionsBody, v.FeaturesBody):
        try:
            v.decode_body(tp, "application/json", data, 1 << 20)
        except v.ApiError as exc:
            assert exc.status in (400, 422) and exc.message and "\n" not in exc.message


@settings(max_examples=300, deadline=None)
@given(query=st.dictionaries(st.sampled_from(["k", "exclude", "exclude_seen", "exact", "force",
                                              "x"]), st.text(max_size=12), max_size=4),
       path=st.text(max_size=300))  # fmt: skip
def test_any_query_string_is_accepted_or_refused_with_a_400(query, path):
    from hybridrec.serving import validation as v

    d = v.declarations(1000)
    for tp, names in ((d.UserRecommendationParams, {"user_id": path}),
                      (d.SimilarParams, {"item_id": path}), (v.ReloadParams, {})):  # fmt: skip
        try:
            v.decode_params(tp, names, query)
        except v.ApiError as exc:
            assert exc.status == 400 and exc.message and "\n" not in exc.message
