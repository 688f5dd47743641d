"""The OpenAPI document matches the real routes, and a fuzz driven by it finds no 5xx.

The fuzz uses schemathesis' strategies with plain hypothesis (its pytest plugin does not
support pytest 9 yet): for each operation, data that fits the document (positive) and
data that breaks it (negative), sent through the app in-process.
"""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from hybridrec.config import Settings
from hybridrec.serving.openapi import openapi_document

_IGNORED = {"HEAD", "OPTIONS"}
TOKEN = "fuzz-token"
DOC = openapi_document(Settings(api_token=TOKEN))
LABELS = sorted(op.ok().label for op in schemathesis.openapi.from_dict(DOC).get_all_operations())


def _has_input(label: str) -> bool:
    method, path = label.split(" ", 1)
    item = DOC["paths"][path]
    return bool(item.get("parameters") or set(item[method.lower()]) & {"parameters", "requestBody"})


FUZZ = [
    pytest.param(label, mode, id=f"{label}-{mode.value}")
    for label in LABELS
    if label != "GET /openapi.json"  # schemathesis leaves out the document's own route
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or _has_input(label)  # nothing to break otherwise
]


def _flask_routes(app) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        out |= {(path, m) for m in rule.methods - _IGNORED}
    return out


def _spec_routes(doc) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in doc["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch")
    }


@pytest.fixture(scope="module")
def fuzz_app(shared_serving_world):
    return shared_serving_world.app(api_token=TOKEN)


def test_every_route_is_documented_and_every_documented_route_exists(fuzz_app):
    doc = fuzz_app.test_client().get("/openapi.json").get_json()
    assert doc == openapi_document(fuzz_app.extensions["hybridrec"].settings)
    assert _flask_routes(fuzz_app) == _spec_routes(doc)


def test_the_document_is_valid_openapi():
    assert len(LABELS) == len(_spec_routes(DOC)) == 18


def test_the_document_lists_the_token_only_when_one_is_set():
    def guarded(doc):
        return {
            (path, method)
            for path, item in doc["paths"].items()
            for method, op in item.items()
            if isinstance(op, dict) and op.get("security")
        }

    assert guarded(openapi_document(Settings())) == set()
    assert guarded(DOC) == {
        ("/v1/users/{user_id}/features", "put"),
        ("/v1/users/{user_id}/features", "delete"),
        ("/v1/items/{item_id}/features", "put"),
        ("/v1/items/{item_id}/features", "delete"),
        ("/v1/items/{item_id}/metadata", "put"),
        ("/v1/interactions", "post"),
        ("/v1/admin/reload", "post"),
    }


@pytest.fixture(scope="module")
def operations(fuzz_app):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)
    return {op.ok().label: op.ok() for op in schema.get_all_operations()}


@pytest.mark.parametrize("label, mode", FUZZ)
def test_fuzz_from_the_openapi_document_finds_no_server_error(operations, label, mode):
    operation = operations[label]

    @settings(
        max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        # the valid token on every call; schemathesis' auth check replays without it
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
        response = case.call()
        refused_reload = response.status_code == 503 and case.path == "/v1/admin/reload"
        assert response.status_code < 500 or refused_reload, (
            case.method, case.formatted_path, case.query, case.body, response.status_code,
            response.text[:300],
        )  # fmt: skip
        if mode is GenerationMode.POSITIVE:
            case.validate_response(response)

    run()
