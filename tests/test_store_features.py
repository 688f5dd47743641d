"""The feature store against real Redis: one contract, run on a server and on a cluster."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from hybridrec.errors import StoreUnavailable
from hybridrec.io import read_features, read_interactions
from hybridrec.store.features import DIGEST_MODULUS, RESYNC, FeatureStore, item_digest


@pytest.fixture
def store(any_redis_client) -> FeatureStore:
    return FeatureStore(any_redis_client, prefix="hr", log_maxlen=1000)


def features_frame(rows):
    return pd.DataFrame(rows, columns=["id", "feature", "weight"])


# -- one entity ---------------------------------------------------------------------------


def test_put_get_replace_merge_delete(store):
    assert store.get_features("users", "u1") is None
    store.put_features("users", "u1", {"age:30": 1.0, "city:paris": 0.5})
    assert store.get_features("users", "u1") == {"age:30": 1.0, "city:paris": 0.5}
    store.put_features("users", "u1", {"age:31": 2.0})  # replace is the default
    assert store.get_features("users", "u1") == {"age:31": 2.0}
    store.put_features("users", "u1", {"vip": 1.0}, replace=False)
    assert store.get_features("users", "u1") == {"age:31": 2.0, "vip": 1.0}
    assert store.count("users") == 1
    assert store.delete_features("users", "u1") is True
    assert store.delete_features("users", "u1") is False
    assert store.get_features("users", "u1") is None
    assert store.count("users") == 0


def test_entity_put_without_features_is_known_and_in_catalog(store):
    store.put_features("items", "i1", {})
    assert store.get_features("items", "i1") == {}
    assert store.catalog_ids() == ["i1"]
    store.put_features("items", "i1", {"genre:x": 1.0})
    store.put_features("items", "i1", {})  # replace with nothing
    assert store.get_features("items", "i1") == {}


def test_weights_round_trip_exactly(store):
    weights = {"a": 0.1, "b": 1e-300, "c": 123456789.123456789, "d": 0.0, "e": -2.5}
    store.put_features("items", "i", weights)
    assert store.get_features("items", "i") == weights


@pytest.mark.parametrize("bad", [{"f": float("nan")}, {"f": float("inf")}, {"": 1.0}, {"f": "x"}])
def test_bad_features_are_refused_and_nothing_is_written(store, bad):
    with pytest.raises(ValueError):
        store.put_features("items", "i1", bad)
    assert store.get_features("items", "i1") is None
    assert store.catalog_ids() == []


def test_bad_kind_id_and_prefix(store, any_redis_client):
    with pytest.raises(ValueError, match="kind"):
        store.get_features("things", "x")
    with pytest.raises(ValueError, match="non-empty"):
        store.put_features("users", "", {"a": 1.0})
    with pytest.raises(ValueError, match="braces"):
        FeatureStore(any_redis_client, prefix="a{b}")


@pytest.mark.parametrize(
    "entity_id", ["007", "a b", "x}y", "}x", "{z}", "a:b:{c}", "é/ü\u2603", " "]
)
def test_awkward_ids_round_trip(store, entity_id):
    store.put_features("users", entity_id, {"f": 1.0})
    store.add_interactions(pd.DataFrame({"user_id": [entity_id], "item_id": ["i"]}))
    assert store.user_context(entity_id) == ({"f": 1.0}, {"i"})
    assert dict(store.iter_features("users")) == {entity_id: {"f": 1.0}}


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_keys_of_one_entity_share_a_slot_and_ids_never_collide(a, b):
    """Regression: an id starting with "}" once gave an empty hash tag, splitting slots."""
    fs = FeatureStore(None, prefix="p")
    keys = [fs.key("users", a), fs.seen_key(a)]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    if a != b:
        other = {fs.key("users", b), fs.seen_key(b), fs.key("items", b)}
        assert not other & set(keys)


# -- many entities ------------------------------------------------------------------------


def test_get_many_and_iteration(store):
    for n in range(30):
        store.put_features("items", f"i{n}", {f"f{n}": float(n)} if n % 3 else {})
    got = store.get_many("items", ["i1", "i3", "nope", "i2"])
    assert got == {"i1": {"f1": 1.0}, "i2": {"f2": 2.0}}  # no features or unknown: left out
    assert store.get_many("items", []) == {}
    listed = dict(store.iter_features("items", batch=7))
    assert len(listed) == 30 and listed["i3"] == {} and listed["i4"] == {"f4": 4.0}
    assert store.count("items") == 30
    assert store.catalog_ids() == sorted(f"i{n}" for n in range(30))
    assert store.count("users") == 0 and list(store.iter_features("users")) == []


def test_bulk_load_merges_or_replaces_entities_present(store):
    store.put_features("items", "a", {"old": 1.0, "keep": 2.0})
    store.put_features("items", "untouched", {"x": 1.0})
    frame = features_frame([("a", "old", 5.0), ("a", "new", 1.0), ("b", "f", 1.5)])
    assert store.load_features("items", frame) == 3
    assert store.get_features("items", "a") == {"old": 5.0, "keep": 2.0, "new": 1.0}
    assert store.load_features("items", frame, replace=True) == 3
    assert store.get_features("items", "a") == {"old": 5.0, "new": 1.0}
    assert store.get_features("items", "b") == {"f": 1.5}
    assert store.get_features("items", "untouched") == {"x": 1.0}
    assert store.catalog_ids() == ["a", "b", "untouched"]


def test_bulk_load_spans_many_pipelines_and_huge_entities(store):
    rng = np.random.default_rng(0)
    ids = np.repeat([f"u{n}" for n in range(4500)], 3)
    frame = features_frame(
        {
            "id": ids,
            "feature": [f"f{n % 7}" for n in range(len(ids))],
            "weight": rng.random(len(ids)),
        }
    )
    big = features_frame(
        {"id": "whale", "feature": [f"g{n}" for n in range(45_000)], "weight": 1.0}
    )
    frame = pd.concat([frame, big], ignore_index=True).sample(frac=1, random_state=1)
    assert store.load_features("users", frame, replace=True) == len(frame)
    assert store.count("users") == 4501
    assert len(store.get_features("users", "whale")) == 45_000
    expected = frame[frame["id"] == "u17"].set_index("feature")["weight"].to_dict()
    assert store.get_features("users", "u17") == pytest.approx(expected)


def test_bulk_load_checks_everything_before_writing(store):
    frame = features_frame([("a", "f", 1.0), ("b", "f", float("nan"))])
    with pytest.raises(ValueError, match="finite"):
        store.load_features("items", frame)
    with pytest.raises(ValueError, match="non-empty"):
        store.load_features("items", features_frame([("a", "f", 1.0), ("", "f", 1.0)]))
    assert store.catalog_ids() == [] and store.latest_change_cursor() == "0-0"


def test_load_from_the_file_reader(store, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,feature,weight\n1,genre:drama,1\n1,year:1995,0.5\n2,genre:comedy,1\n")
    assert store.load_features("items", read_features(path)) == 3
    assert store.get_many("items", ["1", "2"]) == {
        "1": {"genre:drama": 1.0, "year:1995": 0.5},
        "2": {"genre:comedy": 1.0},
    }


def test_a_replace_is_never_seen_half_done(store):
    """Readers racing a replacing writer see the old set or the new one, never a mix or none."""
    sets = [{f"a{n}": 1.0 for n in range(50)}, {f"b{n}": 2.0 for n in range(30)}]
    store.put_features("users", "u", sets[0])
    stop = threading.Event()
    wrong: list[object] = []

    def writer():
        n = 0
        while not stop.is_set():
            n += 1
            store.put_features("users", "u", sets[n % 2])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(400):
            got, _seen = store.user_context("u")
            if got not in sets:
                wrong.append(got)
    finally:
        stop.set()
        thread.join()
    assert wrong == []


# -- item change feed ---------------------------------------------------------------------


def test_item_changes_feed(store):
    assert store.latest_change_cursor() == "0-0"
    assert store.item_changes_since("0-0") == ("0-0", [])
    store.put_features("users", "u", {"f": 1.0})  # users are not in the item feed
    store.put_features("items", "i1", {"f": 1.0})
    cursor, changes = store.item_changes_since("0-0")
    assert changes == [("i1", "put", 1)] and cursor == store.latest_change_cursor()
    store.load_features("items", features_frame([("i2", "f", 1.0), ("i3", "f", 1.0)]))
    store.delete_features("items", "i1")
    store.delete_features("items", "never-there")
    cursor, changes = store.item_changes_since(cursor)
    assert changes == [("i2", "put", 2), ("i3", "put", 2), ("i1", "delete", 3)]
    assert store.item_changes_since(cursor) == (cursor, [])


def test_a_bulk_load_announces_every_item_in_few_feed_entries(store):
    frame = features_frame([(f"i{n}", "f", 1.0) for n in range(5000)])
    store.load_features("items", frame)
    assert 1 < store.client.xlen(store.changes_key) <= 10
    cursor, changes = store.item_changes_since("0-0")
    assert [change[:2] for change in changes] == [(f"i{n}", "put") for n in range(5000)]


def test_item_keys_share_one_slot_whatever_the_id():
    """Every item write is one script, so every item key must hash to one cluster slot."""
    fs = FeatureStore(None, prefix="p")
    keys = [*fs._item_keys, fs.key("items", "a"), fs.key("items", "}{x}"), fs.key("items", "{")]
    assert len({key_slot(k.encode()) for k in keys}) == 1


def test_item_states_carry_per_item_sequences(store):
    assert store.item_states(["i"]) == {"i": (0, None)}
    store.put_features("items", "i", {"f": 1.0})
    store.put_features("items", "j", {})
    (s1, f1), (s2, f2) = store.item_states(["i", "j"]).values()
    assert (f1, f2) == ({"f": 1.0}, {}) and 0 < s1 < s2
    assert store.delete_features("items", "i")
    seq, features = store.item_states(["i"])["i"]
    assert features is None and -seq > s2
    assert store.get_features("items", "i") is None and store.get_features("items", "j") == {}
    store.put_features("items", "i", {"g": 2.0}, replace=False)
    seq, features = store.item_states(["i"])["i"]
    assert features == {"g": 2.0} and seq == store.item_position()[0]
    assert store.item_position()[:3] == (seq, 2, store.latest_change_cursor())
    assert store.deleted_item_ids() == set()


@pytest.mark.parametrize("ids", [["a", "b"], ["é/ü\u2603", "x}{y", "1\n2", " "]])
def test_the_catalog_digest_is_the_sum_a_reader_computes(store, ids):
    """A worker compares one number with the store to know it applied the same states."""
    for n, item_id in enumerate(ids * 3):
        if n % 3 == 2:
            store.delete_features("items", item_id)
        else:
            store.put_features("items", item_id, {"f": float(n)})
    store.load_features("items", features_frame([(i, "g", 1.0) for i in ids[:1] + ["bulk"]]))
    live, _ = store.item_sequences()
    expected = sum(item_digest(i, seq) for i, seq in live.items()) % DIGEST_MODULUS
    assert store.item_position()[3] == expected and len(live) == store.count("items")


def test_regression_put_racing_delete_leaves_state_and_feed_in_one_order(store):
    """Regression (issue 9, item 2): a PUT and a DELETE of one item took several round
    trips each, so the feed's last op could contradict the final state."""
    wrong = []
    for n in range(60):
        store.put_features("items", "x", {"f": 1.0})
        gate = threading.Barrier(2)

        def run(write, gate=gate):
            gate.wait()
            write()

        threads = [
            threading.Thread(target=run, args=(lambda: store.put_features("items", "x", {}),)),
            threading.Thread(target=run, args=(lambda: store.delete_features("items", "x"),)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _, feed = store.item_changes_since("0-0")
        last_id, last_op, last_seq = feed[-1]
        seq, features = store.item_states(["x"])["x"]
        live = features is not None
        if last_id != "x" or (last_op == "put") != live or abs(seq) != last_seq:
            wrong.append((n, feed[-2:], seq))
        if live != ("x" in store.catalog_ids()) or live == ("x" in store.deleted_item_ids()):
            wrong.append((n, "catalog or tombstones disagree", seq))
    assert wrong == []


def test_tombstones_are_capped_except_for_items_a_model_knows(any_redis_client):
    """Regression (issue 9, item 9): the deleted-items set grew without bound (5,646
    entries after a churn test). Only items a served model knows need a tombstone past
    the feed; workers retire those, and the others are capped."""
    store = FeatureStore(any_redis_client, prefix="hr", tombstones_max=5)
    store.put_features("items", "model-item", {"f": 1.0})
    store.delete_features("items", "model-item")
    assert store.retire_items(["model-item", "never-deleted"]) == 1
    for n in range(50):
        store.put_features("items", f"churn{n}", {"f": 1.0})
        store.delete_features("items", f"churn{n}")
    kept = store.deleted_item_ids()
    assert kept == {"model-item"} | {f"churn{n}" for n in range(45, 50)}
    assert store.item_states(["churn0"])["churn0"] == (0, None)  # forgotten: unknown
    store.put_features("items", "model-item", {})  # put again: no tombstone any more
    store.delete_features("items", "churn49")  # not in the catalog: nothing happens
    assert store.deleted_item_ids() == kept - {"model-item"}


def test_items_of_the_earlier_layout_are_moved_once(any_redis_client):
    """Items written before item writes became scripts (set ``P:items:ids``, hashes
    ``P:{i:<id>}:f``, set ``P:items:deleted``) are moved, not lost."""
    r = any_redis_client
    r.sadd("hr:items:ids", "a", "b", "c")
    r.hset("hr:{i:a}:f", mapping={"f": "1.5", "g": "2"})
    r.hset("hr:{i:c}:f", mapping={"h": "1"})
    r.sadd("hr:items:deleted", "gone", "c")
    r.xadd("hr:items:changes", {"id": "a", "op": "put"})
    store = FeatureStore(r, prefix="hr")
    store.put_features("items", "c", {"new": 1.0})  # written after the upgrade: it wins
    assert store.get_features("items", "a") == {"f": 1.5, "g": 2.0}
    assert store.get_features("items", "b") == {}
    assert store.get_features("items", "c") == {"new": 1.0}
    assert store.catalog_ids() == ["a", "b", "c"] and store.deleted_item_ids() == {"gone"}
    assert not any(r.exists(k) for k in ["hr:items:ids", "hr:{i:a}:f", "hr:items:deleted"])
    assert not r.exists("hr:items:changes")
    assert [c[:2] for c in store.item_changes_since("0-0")[1]][-1] == ("c", "put")
    again = FeatureStore(r, prefix="hr")
    assert again.catalog_ids() == ["a", "b", "c"] and again.count("items") == 3
    live, _ = again.item_sequences()
    assert again.item_position()[3] == sum(item_digest(i, s) for i, s in live.items())


def test_item_changes_ask_for_a_resync_after_the_feed_was_trimmed(any_redis_client):
    store = FeatureStore(any_redis_client, prefix="hr", changes_maxlen=10)
    store.put_features("items", "first", {"f": 1.0})
    cursor = store.latest_change_cursor()
    for n in range(300):  # one feed entry each (a bulk load writes one per chunk)
        store.put_features("items", f"i{n}", {"f": 1.0})
    new_cursor, changes = store.item_changes_since(cursor)
    assert changes == [("*", RESYNC, 0)]
    assert new_cursor == store.latest_change_cursor()
    assert store.item_changes_since(new_cursor) == (new_cursor, [])


# -- interactions -------------------------------------------------------------------------


def test_interactions_log_and_seen_sets(store, tmp_path):
    path = tmp_path / "inter.csv"
    path.write_text("user_id,item_id,weight,timestamp\nu1,i1,1,100\nu1,i2,2.5,101\nu2,i1,1,102\n")
    frame = read_interactions(path)
    assert store.add_interactions(frame) == 3
    assert store.log_length() == 3
    assert store.get_seen("u1") == {"i1", "i2"} and store.get_seen("nobody") == set()
    log = store.read_interactions().drop(columns=["log_ms", "log_seq"])
    pd.testing.assert_frame_equal(log, frame, check_dtype=False, check_like=True)
    assert log["timestamp"].dtype == np.int64 and log["weight"].dtype == np.float64
    assert store.user_context("u1") == (None, {"i1", "i2"})

    store.add_interactions(pd.DataFrame({"user_id": ["u3"], "item_id": ["i9"]}))
    newer = store.read_interactions(since=log.attrs["last_id"])
    assert newer[["user_id", "item_id", "weight"]].values.tolist() == [["u3", "i9", 1.0]]
    assert newer["timestamp"].iloc[0] > 1_700_000_000  # defaults to now
    assert store.read_interactions(since=newer.attrs["last_id"]).empty


def test_interaction_log_is_capped_and_paged(any_redis_client):
    store = FeatureStore(any_redis_client, prefix="hr", log_maxlen=1000)
    n = 12_000
    frame = pd.DataFrame(
        {"user_id": [f"u{k % 50}" for k in range(n)], "item_id": [f"i{k}" for k in range(n)]}
    )
    store.add_interactions(frame)
    assert 1000 <= store.log_length() < 2000  # approximate trimming
    log = store.read_interactions()
    assert len(log) == store.log_length()
    assert log["item_id"].iloc[-1] == f"i{n - 1}"
    assert len(store.get_seen("u0")) == n // 50  # seen sets are not capped


def test_bad_interactions_write_nothing(store):
    bad = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "weight": [1.0, np.inf]})
    with pytest.raises(ValueError):
        store.add_interactions(bad)
    assert store.log_length() == 0 and store.get_seen("u") == set()


# -- faults -------------------------------------------------------------------------------


def test_unreachable_redis_raises_store_unavailable():
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=None)
    store = FeatureStore(dead, prefix="hr")
    assert store.ping() is False
    with pytest.raises(StoreUnavailable, match="feature store"):
        store.user_context("u")
    with pytest.raises(StoreUnavailable):
        list(store.iter_features("items"))


def test_ping(store):
    assert store.ping() is True
