"""Approximate retrieval through the API: the index served, audited with ``exact=true``,
kept current with catalog changes, and shared between worker processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from hybridrec.model import HybridLightFM

from .live_server import live_server, server_env
from .synthetic import make_synthetic
from .test_serving_server import _wait, _world


def test_api_reports_and_audits_the_index(serving_world):
    """Index served from 1 item on: ``/v1/model`` and ``/metrics`` show its recall,
    answers say ``approximate``, and ``exact=true`` (query or body) scores every item."""
    api = serving_world.app(ann_min_items=1).test_client()
    info = api.get("/v1/model").get_json()["retrieval"]
    assert info["kind"] == "approximate" and info["strategy"] == "ivf"  # the default index
    assert info["recall_at_10"] >= info["min_recall"] == 0.98
    assert info["mapped"] is True and info["fallback"] is None

    approx = api.get("/v1/users/u0/recommendations?k=5").get_json()
    audit = api.get("/v1/users/u0/recommendations?k=5&exact=true").get_json()
    body = api.post("/v1/recommendations", json={"user_id": "u0", "k": 5, "exact": True})
    assert approx["retrieval"] == "approximate"
    assert audit["retrieval"] == body.get_json()["retrieval"] == "exact"
    assert audit["items"] == body.get_json()["items"]
    # the exact scan of the same model, with the store's features and seen items
    from hybridrec.serving.snapshot import Snapshot

    exact = Snapshot.from_model(serving_world.model, strategy="exact")
    features, seen = serving_world.feature_store.user_context("u0")
    want = exact.recommend("u0", features or {}, 5, exclude=seen)
    assert [(i["item_id"], i["score"]) for i in audit["items"]] == want.items

    bad = api.get("/v1/users/u0/recommendations?exact=maybe")
    assert bad.status_code in (400, 422)
    bad = api.post("/v1/recommendations", json={"user_id": "u0", "exact": "yes"})
    assert bad.status_code in (400, 422)

    metrics = api.get("/metrics").get_data(as_text=True)
    assert "hybridrec_retrieval_recall" in metrics
    assert 'hybridrec_retrievals_total{retrieval="approximate"}' in metrics


# -- real servers ---------------------------------------------------------------------------------


def _serve(tmp_path, settings):
    """``hybridrec serve --workers 2`` with the index used from 1 item on."""
    env = server_env(settings, HYBRIDREC_ANN_MIN_ITEMS="1")
    return live_server(env, tmp_path, "--workers", "2", ready="")


def _loaded(log: Path, version: str) -> int:
    return sum(
        1 for line in log.read_text().splitlines() if "model_loaded" in line and version in line
    )


@pytest.mark.slow
def test_new_item_is_recommendable_under_ann_on_every_worker(
    embedded_settings, serving_model, tmp_path
):
    from hybridrec.modelstore.registry import publish_model

    data, model = serving_model
    with _serve(tmp_path, embedded_settings) as server:
        base, log = server.base, server.log
        client, store, registry, models = _world(embedded_settings)
        for user_id, features in data.user_features.items():
            store.put_features("users", user_id, features)
        version = publish_model(models, registry, model)["version"]
        _wait(lambda: _loaded(log, version) == 2, 30, "both workers loaded")
        info = requests.get(f"{base}/v1/model", timeout=5).json()["retrieval"]
        assert info["kind"] == "approximate"

        def everywhere(predicate) -> bool:  # 12 answers: both workers, almost surely
            return all(predicate() for _ in range(12))

        def listed(item: str) -> bool:
            r = requests.get(f"{base}/v1/users/u0/recommendations?k=1000", timeout=5).json()
            # every item wanted: the clusters' answer is then an exact scan of them all
            assert r["retrieval"] in ("approximate", "exact")
            short = requests.get(f"{base}/v1/users/u0/recommendations?k=3", timeout=5).json()
            assert short["retrieval"] == "approximate"
            return item in {i["item_id"] for i in r["items"]}

        put = requests.put(
            f"{base}/v1/items/brand-new/features",
            json={"features": {"genre:1": 1.0, "tag:2": 1.0}},
            timeout=5,
        )
        assert put.status_code == 200
        started = time.monotonic()
        _wait(lambda: everywhere(lambda: listed("brand-new")), 5, "the new item everywhere")
        assert time.monotonic() - started < 5
        assert requests.delete(f"{base}/v1/items/brand-new/features", timeout=5).status_code == 204
        _wait(lambda: everywhere(lambda: not listed("brand-new")), 5, "the item gone everywhere")
        client.close()


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _mapping(pid: int, suffix: str) -> dict[str, int] | None:
    """Summed smaps fields (kB) of ``pid``'s mappings of files ending in ``suffix``."""
    fields: dict[str, int] | None = None
    current = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and len(parts) >= 5 and ":" in parts[3]:  # a header
            current = len(parts) >= 6 and parts[-1].endswith(suffix)
            if current:
                fields = fields or {}
        elif current and len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            fields[parts[0][:-1]] = fields.get(parts[0][:-1], 0) + int(parts[1])
    return fields


@pytest.mark.slow
def test_two_workers_share_the_mapped_files(embedded_settings, tmp_path):
    """Item rows, index and model arrays are file mappings in both workers, clean and
    shared: the second worker holds no private copy of them."""
    from hybridrec.modelstore.registry import publish_model

    data = make_synthetic(n_users=400, n_items=20_000, n_groups=16, per_user=4, seed=5)
    model = HybridLightFM(no_components=32, epochs=1, random_state=0).fit(
        data.interactions, data.user_features, data.item_features
    )
    with _serve(tmp_path, embedded_settings) as server:
        base, log, proc = server.base, server.log, server.process
        client, store, registry, models = _world(embedded_settings)
        version = publish_model(models, registry, model)["version"]
        _wait(lambda: _loaded(log, version) == 2, 60, "both workers loaded")
        for n in range(40):  # both workers answer, touching the same pages
            r = requests.get(f"{base}/v1/users/u{n}/recommendations?k=10", timeout=5)
            assert r.status_code == 200 and r.json()["retrieval"] == "approximate"
        workers = _children(proc.pid)
        workers = [w for w in workers if _mapping(w, "items.npy") is not None]
        assert len(workers) == 2, "both workers map the item rows"
        for suffix in ("items.npy", "ivf_rows.npy", "ivf_order.npy", "model.npz"):
            for pid in workers:
                m = _mapping(pid, suffix)
                assert m is not None, (suffix, pid)
                assert m.get("Private_Dirty", 0) == 0, (suffix, pid, m)
                assert m.get("Anonymous", 0) == 0, (suffix, pid, m)
        # the item rows were read whole by each worker's recall check: shared pages
        rows = [_mapping(pid, "items.npy") for pid in workers]
        size_kb = (Path(models.path(version)) / "serving" / "items.npy").stat().st_size / 1024
        for m in rows:
            assert m["Shared_Clean"] >= 0.9 * size_kb - 8, m
            assert m["Pss"] <= 0.6 * m["Rss"] + 8, m
        client.close()
