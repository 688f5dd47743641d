"""Issue 8 at 1M items: what a worker holds per item and what a request costs beside
the scoring.

Bugs pinned:
- a loaded model's id maps were Python tuples and dicts built in every worker (~160 MB
  of heap per worker at 1M items); they are now the artifact's id arrays, mapped, with
  the stored permutation that sorts them (binary search, nothing per id on the heap);
- titles cost every answer a second Redis round trip (an HMGET after scoring); a worker
  now keeps the metadata it fetched while the metadata generation, read in the same
  round trip as the user's features, stays the same, and an edit is seen at once.
"""

from __future__ import annotations

import mmap

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridrec.model.idmap import IdMap, sort_order
from hybridrec.modelstore.artifact import load_model, save_model
from hybridrec.serving.answers import MetadataCache

# -- id maps ------------------------------------------------------------------------------------

_ids = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(_ids, min_size=0, max_size=40), probes=st.lists(_ids, max_size=20))
def test_sorted_layout_answers_like_the_in_memory_map(values, probes):
    memory = IdMap.from_values(values)
    arrays = memory.as_array()
    mapped = IdMap.sorted(arrays, sort_order(arrays))
    assert mapped.is_sorted_layout == bool(values) and not memory.is_sorted_layout
    assert len(mapped) == len(memory) and mapped == memory
    assert mapped.external == memory.external
    for probe in [*values, *probes]:
        assert mapped.get(probe) == memory.get(probe)
        assert (probe in mapped) == (probe in memory)
    want = memory.convert_to_internal(probes, missing=-1)
    np.testing.assert_array_equal(mapped.convert_to_internal(probes, missing=-1), want)
    rows = list(range(len(memory)))[::-1]
    assert mapped.convert_to_external(rows) == memory.convert_to_external(rows)
    assert [mapped.id_at(i) for i in rows] == [memory.id_at(i) for i in rows]
    assert all(type(i) is str for i in mapped.convert_to_external(rows))
    grown = mapped.extend(["zz-new", *probes])
    assert grown == memory.extend(["zz-new", *probes])


def test_sorted_layout_refuses_duplicates_and_a_wrong_order():
    ids = np.array(["b", "a", "c"])
    assert IdMap.sorted(ids).get("c") == 2  # the order computed when not stored
    with pytest.raises(ValueError, match="unique"):
        IdMap.sorted(np.array(["a", "b", "a"]))
    with pytest.raises(ValueError, match="unique"):
        IdMap.sorted(ids, np.array([0, 1, 2]))  # does not sort them
    with pytest.raises(ValueError, match="permutation"):
        IdMap.sorted(ids, np.array([1, 0, 7]))
    with pytest.raises(KeyError, match="'zz'"):
        IdMap.sorted(ids).convert_to_internal(["a", "zz"])
    # a key longer than every id never matches one that shares its prefix
    assert IdMap.sorted(ids).get("a" * 40) is None


def _mapped(array: np.ndarray) -> bool:
    """True if ``array`` is a view of a file mapping (not a copy on the heap)."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, mmap.mmap)


def test_a_loaded_model_maps_its_ids_instead_of_building_them(serving_model, tmp_path):
    _, serving_model = serving_model
    save_model(serving_model, tmp_path / "v1")
    loaded = load_model(tmp_path / "v1")
    for space, trained in (
        (loaded.item_space_, serving_model.item_space_),
        (loaded.user_space_, serving_model.user_space_),
    ):
        ids = space.entities
        assert ids.is_sorted_layout and _mapped(ids._ids) and _mapped(ids._order)
        assert ids._external is None  # nothing built per id
        assert ids == trained.entities
        some = trained.entities.external[::7]
        assert ids.convert_to_internal(some).tolist() == list(range(0, len(trained.entities), 7))
    # recommending from the loaded model builds no per-id structure either
    from hybridrec.serving.snapshot import Snapshot

    snap = Snapshot.from_model(loaded, version="v1", directory=str(tmp_path / "v1"))
    user = serving_model.user_space_.entities.id_at(0)
    assert (
        snap.recommend(user, None, 5).items
        == Snapshot.from_model(serving_model, version="v1").recommend(user, None, 5).items
    )
    assert loaded.item_space_.entities._external is None


# -- titles without a second round trip ---------------------------------------------------------


def _hmgets(client) -> int:
    return int(client.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))


def test_titles_come_from_the_worker_cache_until_an_edit(serving_world):
    world = serving_world
    api = world.app(api_token="t").test_client()
    other_worker = world.app(api_token="t").test_client()
    items = list(world.model.item_space_.entities.external)
    world.feature_store.load_metadata(
        pd.DataFrame({"id": items, "title": [f"Movie {i}" for i in items]})
    )
    url = "/v1/users/u0/recommendations?k=5&exclude_seen=false"
    first = api.get(url).get_json()["items"]
    assert all(item["title"] == f"Movie {item['item_id']}" for item in first)
    client = world.feature_store.client
    before = _hmgets(client)
    again = api.get(url).get_json()["items"]
    assert again == first and _hmgets(client) == before  # no second round trip
    # an edit through another worker is seen by the next request of this one
    top = first[0]["item_id"]
    put = other_worker.put(
        f"/v1/items/{top}/metadata",
        json={"metadata": {"title": "Renamed"}},
        headers={"Authorization": "Bearer t"},
    )
    assert put.status_code == 200
    assert api.get(url).get_json()["items"][0]["title"] == "Renamed"
    # and a bulk load too
    world.feature_store.load_metadata(pd.DataFrame({"id": [top], "title": ["Again"]}))
    assert api.get(url).get_json()["items"][0]["title"] == "Again"


def test_metadata_cache_is_bounded_and_keyed_by_generation():
    calls = []

    def fetch(ids):
        calls.append(list(ids))
        return [{"title": f"t{i}"} if i != "none" else None for i in ids]

    cache = MetadataCache(capacity=3)
    assert cache.lookup(["a", "none", "a"], 1, fetch) == [{"title": "ta"}, None, {"title": "ta"}]
    assert calls == [["a", "none"]]
    assert cache.lookup(["none", "a"], 1, fetch) == [None, {"title": "ta"}]
    assert len(calls) == 1  # "no metadata" is kept too
    cache.lookup(["b", "c"], 1, fetch)  # four items seen, three kept: "a" went first
    cache.lookup(["a"], 1, fetch)
    assert calls[-1] == ["a"]
    cache.lookup(["c"], 2, fetch)  # a new generation: everything fetched again
    assert calls[-1] == ["c"]
