"""``hybridrec.client.Client`` against a real ``hybridrec serve`` (gunicorn, HTTP): typed
results for every endpoint, the API's errors as exceptions, the token, retries on 503
and on connection errors, ``wait_ready``; and the operator endpoints' rules (promote,
rollback, reports, seen items, search, item status, stats) through it."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import msgspec
import pytest
import requests

from hybridrec.client import (
    ApiError,
    Client,
    ConnectionFailed,
    ItemStatus,
    ModelVersions,
    Recommendations,
    Stats,
)

from .live_server import HYBRIDREC, free_port, live_server, server_env

TOKEN = "clïent-tøken"  # non-ASCII: the client sends it as UTF-8
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(shared_serving_world, tmp_path_factory):
    """A server on a world the tests below only read from, or put back as they found it."""
    env = server_env(shared_serving_world.settings, HYBRIDREC_API_TOKEN=TOKEN)
    with live_server(env, tmp_path_factory.mktemp("srv")) as srv:
        yield shared_serving_world, srv


@pytest.fixture
def world(shared):
    return shared[0]


@pytest.fixture
def server(shared):
    return shared[1]


@pytest.fixture
def api(server):
    with Client(server.base, token=TOKEN, timeout=20) as client:
        yield client


@pytest.fixture
def own(serving_world, tmp_path):
    """``(world, client)``: a world and server of the test's own, for registry moves."""
    env = server_env(serving_world.settings, HYBRIDREC_API_TOKEN=TOKEN)
    with live_server(env, tmp_path / "srv") as srv, Client(srv.base, token=TOKEN) as client:
        yield serving_world, client


def test_every_read_is_typed_and_equals_the_raw_answer(api, server, world):
    assert api.healthz().status == "ok"
    assert api.readyz().model_version == world.version
    model = api.model()
    assert model.model_version == world.version and model.items > 0
    rec = api.recommend("u0", k=5)
    assert isinstance(rec, Recommendations) and len(rec.items) == 5
    raw = requests.get(f"{server.base}/v1/users/u0/recommendations?k=5", timeout=10).json()
    assert [i.item_id for i in rec.items] == [i["item_id"] for i in raw["items"]]
    assert msgspec.to_builtins(rec) == raw
    visitor = api.recommend_for(features={"genre:0": 1.0}, k=3, exact=True)
    assert visitor.user_case == "new_with_features" and visitor.retrieval == "exact"
    among = api.recommend_for(user_id="u0", items=["i0", "i2", "nope"], k=3)
    assert set(among.unscorable) == {"nope"}
    similar = api.similar("i0", k=4)
    assert similar.item_id == "i0" and len(similar.items) == 4
    assert api.item_features("i0").features == world.data.item_features["i0"]
    assert api.user_features("u0").features == world.data.user_features["u0"]
    vocab = api.vocabulary("item")
    assert vocab.total == len(world.model.item_space_.vocabulary) and vocab.side == "item"
    assert api.vocabulary("user", q="GENRE:1").features == ["genre:1"]  # case-insensitive
    assert "hybridrec_http_requests_total" in api.metrics()
    assert "/v1/models" in api.openapi()["paths"]


def test_an_id_with_a_comma_is_excluded_through_post(api):
    """The query string's list separates ids by commas, so an id with one cannot go in a GET
    (the document declares query ids comma-free); the client sends such a list by POST."""
    top = api.recommend("u0", k=1).items[0].item_id
    rec = api.recommend("u0", k=5, exclude=["odd,", top])  # GET: "odd,,top", refused
    assert len(rec.items) == 5 and top not in {i.item_id for i in rec.items}


def test_refusals_raise_with_the_apis_code_and_message(api, server):
    with pytest.raises(ApiError) as bad_k:
        api.recommend("u0", k=0)
    assert bad_k.value.status == 400 and bad_k.value.code == "invalid_parameter"
    assert "k must be" in bad_k.value.message
    with pytest.raises(ApiError) as unknown:
        api.similar("no-such-item")
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    with Client(server.base, token="") as anonymous:
        assert anonymous.recommend("u0", k=2).items  # public
        for call in (
            lambda: anonymous.put_item_features("x", {"genre:0": 1.0}),
            lambda: anonymous.seen("u0"),
            lambda: anonymous.user_features("u0"),
            lambda: anonymous.promote("v"),
            lambda: anonymous.rollback(),
        ):
            with pytest.raises(ApiError) as refused:
                call()
            assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    with Client(server.base, token="wrong") as wrong, pytest.raises(ApiError) as refused:
        wrong.delete_item_features("i0")
    assert refused.value.status == 401


def test_an_item_put_becomes_recommendable_and_a_delete_retires_it(api):
    assert api.item("brand-new").in_catalog is False
    stored = api.put_item_features("brand-new", {"genre:2": 1.0, "not-in-vocabulary": 2.0})
    assert stored.unknown_features == 1
    status = _until(lambda: api.item("brand-new"), lambda s: s.recommendable)
    assert isinstance(status, ItemStatus)
    assert (status.in_model, status.in_catalog) == (False, True)
    assert (status.known_features, status.unknown_features) == (1, 1)
    found = api.search_items("BRAND")
    assert [i.item_id for i in found.items] == ["brand-new"] and found.items[0].recommendable
    assert api.put_item_metadata("brand-new", {"title": "Brand <New>"}).metadata == {
        "title": "Brand <New>"
    }
    assert api.item_metadata("brand-new").metadata["title"] == "Brand <New>"
    assert api.search_items("brand <n").items[0].title == "Brand <New>"  # by title
    api.put_item_metadata("brand-new", {})
    api.delete_item_features("brand-new")
    gone = _until(lambda: api.item("brand-new"), lambda s: not s.recommendable)
    assert gone.in_catalog is False and gone.features is None


def test_search_puts_the_exact_id_first_then_prefixes(api):
    found = api.search_items("i1", limit=100)
    ids = [i.item_id for i in found.items]
    assert ids[0] == "i1"
    assert ids[1:] == sorted((i for i in ids[1:]), key=lambda x: (len(x), x))
    assert all("i1" in i for i in ids) and not found.truncated
    assert api.search_items("i", limit=3).truncated


def test_seen_items_and_interactions(api):
    before = api.seen("u1").count
    assert api.add_interactions([{"user_id": "u1", "item_id": "zz-fresh"}]).accepted == 1
    seen = api.seen("u1", limit=10_000)
    assert seen.count == before + 1 and "zz-fresh" in [i.item_id for i in seen.items]
    assert seen.items == sorted(seen.items, key=lambda i: i.item_id)
    assert len(api.seen("u1", limit=1).items) == 1


def test_promote_rollback_and_their_refusals(own):
    world, api = own
    first = world.version
    second = world.publish(world.model)
    _until(api.model, lambda m: m.model_version == second)
    listed = api.models()
    assert isinstance(listed, ModelVersions)
    assert [v.version for v in listed.versions] == [second, first]  # newest first
    assert listed.current == second and listed.rollback_target == first
    assert listed.versions[0].current and listed.versions[0].status == "published"

    with pytest.raises(ApiError) as moved_on:
        api.rollback(expect="someone-else")
    assert (moved_on.value.status, moved_on.value.code) == (409, "conflict")
    back = api.rollback(expect=first)
    assert (back.model_version, back.previous, back.serving) == (first, second, first)
    statuses = {v.version: v.status for v in api.models().versions}
    assert statuses == {first: "published", second: "rolled_back"}
    with pytest.raises(ApiError) as nothing:
        api.rollback()
    assert nothing.value.status == 409 and "nothing to roll back" in nothing.value.message

    forward = api.promote(second)
    assert (forward.model_version, forward.serving) == (second, second)
    world.registry.record(first, {"status": "refused", "reasons": ["worse than the champion"]})
    with pytest.raises(ApiError) as refused:
        api.promote(first)
    assert (refused.value.status, refused.value.code) == (409, "refused")
    assert api.models().versions[1].reasons == ["worse than the champion"]
    assert api.promote(first, force=True).serving == first
    with pytest.raises(ApiError) as unknown:
        api.promote("20990101T000000Z-000000")
    assert unknown.value.status == 404
    with pytest.raises(ApiError) as invalid:
        api.promote(".hidden version")
    assert invalid.value.status == 400


def test_reports_are_listed_and_served_as_written(own):
    world, api = own
    version = world.version
    assert api.reports(version).reports == []
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    world.model_store.write_report(version, "report.json", {"decision": {"status": "published"}})
    world.model_store.write_report(version, "report.png", png)
    assert api.reports(version).reports == ["report.json", "report.png"]
    assert api.report(version, "report.png") == png
    assert msgspec.json.decode(api.report(version, "report.json"))["decision"] == {
        "status": "published"
    }
    (entry,) = [v for v in api.models().versions if v.version == version]
    assert entry.reports == ["report.json", "report.png"] and entry.artifact == "ok"
    with pytest.raises(ApiError) as missing:
        api.report(version, "nothing.png")
    assert missing.value.status == 404
    with pytest.raises(ApiError) as unknown:
        api.reports("20990101T000000Z-000000")
    assert unknown.value.status == 404


def test_stats_summarise_the_service(api, world):
    for _ in range(5):
        api.recommend("u0", k=3)
    stats = api.stats()
    assert isinstance(stats, Stats)
    assert stats.model_version == stats.registry_version == world.version
    assert (stats.store, stats.degraded, stats.reload_failures) == ("ok", False, 0)
    assert stats.reloads >= 1
    (worker,) = stats.workers
    assert worker.model_version == world.version and worker.catalog_items == api.model().items
    assert stats.catalog.model_items == len(world.model.item_space_.entities)


def test_503_is_retried_until_a_model_is_published(settings, serving_model, tmp_path):
    from hybridrec.modelstore.registry import Registry, publish_model
    from hybridrec.modelstore.store import ModelStore
    from hybridrec.store.connection import connect

    env = server_env(settings)
    with live_server(env, tmp_path / "srv", ready="") as srv:  # up, without a model
        with Client(srv.base, retries=1, backoff=0.05) as impatient:
            with pytest.raises(ApiError) as none:
                impatient.model()
            assert (none.value.status, none.value.code) == (503, "no_model")
            with pytest.raises(TimeoutError, match="no_model"):
                impatient.wait_ready(timeout=0.3)

        client = connect(settings)
        published: list[str] = []

        def publish_later():
            time.sleep(1.0)
            registry = Registry(client, settings.key_prefix)
            store = ModelStore(settings.model_store)
            published.append(publish_model(store, registry, serving_model[1])["version"])

        thread = threading.Thread(target=publish_later)
        started = time.monotonic()
        thread.start()
        with Client(srv.base, retries=30, backoff=0.1, max_backoff=0.3) as patient:
            info = patient.model()  # 503 until the worker loads the model
        thread.join()
        client.close()
        assert info.model_version == published[0]
        assert time.monotonic() - started >= 1.0


def test_connection_errors_are_retried_then_raised(tmp_path, serving_world):
    port = free_port()  # nothing listens there yet
    with Client(f"http://127.0.0.1:{port}", retries=2, backoff=0.01) as client:
        started = time.monotonic()
        with pytest.raises(ConnectionFailed, match="after 3 attempts"):
            client.healthz()
        assert time.monotonic() - started < 5
        with pytest.raises(TimeoutError, match="ConnectError"):
            client.wait_ready(timeout=0.3)

    # a client that waits for a server still starting gets it as soon as it is ready
    env = server_env(serving_world.settings)
    result: dict = {}

    def wait() -> None:
        with Client(f"http://127.0.0.1:{port}") as waiting:
            result["status"] = waiting.wait_ready(timeout=90)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.5)  # the client is polling a closed port
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [HYBRIDREC, "serve", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, env=env, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        thread.join(90)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
    assert result["status"].model_version == serving_world.version


def _until(read, done, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            assert done(value), value
            return value
        time.sleep(0.1)
