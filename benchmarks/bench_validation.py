"""Per-request validation cost on the hot path: msgspec (served) vs pydantic v2 vs no validation.

The hot path is ``POST /v1/recommendations`` (a JSON body) and
``GET /v1/users/{id}/recommendations`` (path and query). For each, in one process:

- **msgspec**: what the API runs, :func:`hybridrec.serving.validation.decode_body` /
  :func:`~hybridrec.serving.validation.decode_params` on the declarations;
- **pydantic**: the same rules as pydantic v2 models (``model_validate_json`` /
  ``model_validate``, strict types, extra fields forbidden), the other candidate;
- **floor**: no validation at all: ``json.loads`` of the body (the first step of the hand
  validator msgspec replaced) or reading the query values with ``int()``/``split``.

It prints the median microseconds per call over ``--repeat`` rounds and the ratios to the
floor, then the whole request through the Flask app (test client, embedded Redis, a model
of the bundled sample) to show what share of a request validation is.

Run: ``python benchmarks/bench_validation.py`` (about a minute; pydantic must be
installed: ``pip install pydantic``). ``--no-app`` skips the whole-request part.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import timeit
from pathlib import Path
from typing import Annotated

BODIES = {
    "user_id + k": {"user_id": "123", "k": 10, "exclude_seen": True},
    "8 features + exclude": {
        "features": {f"genre:{g}": 1.0 for g in range(8)},
        "k": 20,
        "exclude": ["1", "2", "3"],
    },
    "100 candidate items": {"user_id": "5", "items": [str(i) for i in range(100)], "k": 10},
}
QUERIES = {"no query": {}, "k + exclude_seen + exclude": {"k": "10", "exclude_seen": "true",
                                                          "exclude": "1,2,3"}}  # fmt: skip


def pydantic_models(max_k: int):
    """The declarations' rules as pydantic v2 models (the candidate not chosen)."""
    from pydantic import BaseModel, ConfigDict, Field, StringConstraints

    from hybridrec.serving.validation import MAX_ID_LENGTH, MAX_LIST, WEIGHT_MAX

    Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
    Ids = Annotated[list[Id], Field(max_length=MAX_LIST)]
    Weight = Annotated[float, Field(ge=0, le=WEIGHT_MAX, allow_inf_nan=False)]
    K = Annotated[int, Field(ge=1, le=max_k)]

    class RecommendationRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        user_id: Id | None = None
        features: dict[Id, Weight] | None = None
        k: K = 10
        exclude: Ids = []
        exclude_seen: bool = True
        exact: bool = False
        items: Ids | None = None

    class UserRecommendationParams(BaseModel):
        model_config = ConfigDict(extra="forbid")  # lax: query values are text
        user_id: Id
        k: K = 10
        exclude_seen: bool = True
        exclude: Ids = []
        exact: bool = False

    return RecommendationRequest, UserRecommendationParams


def median_us(call, number: int, repeat: int) -> float:
    return statistics.median(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def bench_validation(number: int, repeat: int) -> None:
    from hybridrec.serving.validation import declarations

    max_k = 1000
    d = declarations(max_k)
    try:
        p_body, p_params = pydantic_models(max_k)
    except ImportError:
        raise SystemExit("this benchmark compares with pydantic: pip install pydantic") from None

    print(f"{'POST body':28s} {'floor':>8s} {'msgspec':>8s} {'pydantic':>9s}   msgspec/floor "
          "pydantic/floor pydantic/msgspec")  # fmt: skip
    for name, body in BODIES.items():
        _row(name, _post_times(json.dumps(body).encode(), d, p_body, number, repeat))
    print(f"\n{'GET path + query':28s} {'floor':>8s} {'msgspec':>8s} {'pydantic':>9s}")
    for name, query in QUERIES.items():
        _row(name, _get_times(query, d, p_params, number, repeat))


def _post_times(data: bytes, d, p_body, number: int, repeat: int) -> dict[str, float]:
    from hybridrec.serving.validation import decode_body

    def msgspec_() -> object:
        return decode_body(d.recommendation_request, "application/json", data, 1 << 20)

    return {
        "floor": median_us(lambda: json.loads(data), number, repeat),
        "msgspec": median_us(msgspec_, number, repeat),
        "pydantic": median_us(lambda: p_body.model_validate_json(data), number, repeat),
    }


def _get_times(query: dict, d, p_params, number: int, repeat: int) -> dict[str, float]:
    from werkzeug.datastructures import MultiDict

    from hybridrec.serving.validation import decode_params

    args = MultiDict(query)  # what Flask's request.args is

    def floor() -> object:
        return (
            "u42",
            int(args.get("k", 10)),
            args.get("exclude_seen", "true") == "true",
            args.get("exclude", "").split(","),
        )

    def msgspec_() -> object:
        return decode_params(d.UserRecommendationParams, {"user_id": "u42"}, args)

    def pydantic() -> object:
        values = {"user_id": "u42", **args.to_dict()}
        if "exclude" in values:
            values["exclude"] = [x for x in values["exclude"].split(",") if x]
        return p_params.model_validate(values)

    return {
        "floor": median_us(floor, number, repeat),
        "msgspec": median_us(msgspec_, number, repeat),
        "pydantic": median_us(pydantic, number, repeat),
    }


def _row(name: str, t: dict[str, float]) -> None:
    print(
        f"{name:28s} {t['floor']:7.2f}us {t['msgspec']:7.2f}us {t['pydantic']:8.2f}us   "
        f"{t['msgspec'] / t['floor']:13.2f} {t['pydantic'] / t['floor']:14.2f} "
        f"{t['pydantic'] / t['msgspec']:16.2f}"
    )


def bench_app(requests: int, repeat: int) -> None:
    """Whole requests through the Flask app: how much of one is validation."""
    from hybridrec.config import Settings
    from hybridrec.io.sample import load_sample
    from hybridrec.model import HybridLightFM
    from hybridrec.modelstore.registry import Registry, publish_model
    from hybridrec.modelstore.store import ModelStore
    from hybridrec.serving import create_app
    from hybridrec.store.connection import EmbeddedServer, connect
    from hybridrec.store.features import FeatureStore

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "redis", model_store=f"{tmp}/models")
        with EmbeddedServer(settings.data_dir):
            client = connect(settings)
            store = FeatureStore(client, settings.key_prefix)
            sample = load_sample()
            store.load_features("users", sample.user_features)
            store.load_features("items", sample.item_features)
            store.add_interactions(sample.interactions)
            users = {u: dict(f) for u, f in store.iter_features("users")}
            items = {i: dict(f) for i, f in store.iter_features("items")}
            model = HybridLightFM(no_components=32, epochs=1, random_state=0)
            model.fit(sample.interactions, users, items)
            registry = Registry(client, settings.key_prefix)
            publish_model(ModelStore(settings.model_store), registry, model)
            app = create_app(settings)
            try:
                ctx = app.extensions["hybridrec"]
                assert ctx.reloader.wait_ready(60), "no model loaded"
                api = app.test_client()
                body = json.dumps(BODIES["8 features + exclude"]).encode()
                calls = {
                    "POST /v1/recommendations": lambda: api.post(
                        "/v1/recommendations", data=body, content_type="application/json"
                    ),
                    "GET /v1/users/1/recommendations?k=10": lambda: api.get(
                        "/v1/users/1/recommendations?k=10&exclude_seen=true"
                    ),
                }
                print(f"\nwhole request (Flask test client, {len(items)} items)")
                for name, call in calls.items():
                    assert call().status_code == 200
                    print(f"{name:40s} {median_us(call, requests, repeat):8.1f}us per request")
            finally:
                app.extensions["hybridrec"].close()
                client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per round")
    parser.add_argument("--repeat", type=int, default=7, help="rounds (the median is shown)")
    parser.add_argument("--no-app", action="store_true", help="skip the whole-request part")
    args = parser.parse_args()
    bench_validation(args.number, args.repeat)
    if not args.no_app:
        bench_app(max(args.number // 100, 50), args.repeat)


if __name__ == "__main__":
    main()
