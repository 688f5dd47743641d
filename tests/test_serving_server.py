"""``hybridrec serve`` as a real gunicorn process with two workers on the embedded Redis."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from hybridrec.model import HybridLightFM

from .live_server import free_port, stop_server

pytestmark = pytest.mark.slow


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")


@pytest.fixture
def server(embedded_settings, serving_model, tmp_path):
    """``hybridrec serve --workers 2`` on a fresh embedded Redis, nothing published yet."""
    port = free_port()
    env = {
        **os.environ,
        "HYBRIDREC_DATA_DIR": str(embedded_settings.data_dir),
        "HYBRIDREC_MODEL_STORE": embedded_settings.model_store,
        "HYBRIDREC_RELOAD_INTERVAL": "0.3",
        "HYBRIDREC_API_TOKEN": "t0ken",
    }
    env.pop("HYBRIDREC_REDIS_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [str(Path(sys.executable).parent / "hybridrec"), "serve", "--port", str(port)]
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [*command, "--workers", "2"], cwd=tmp_path, env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: requests.get(f"{base}/healthz", timeout=1).ok, 30, "server start")
        yield base, replace(embedded_settings, api_token="t0ken"), proc
    finally:
        stop_server(proc)
        log.close()


def _world(settings):
    from hybridrec.modelstore.registry import Registry
    from hybridrec.modelstore.store import ModelStore
    from hybridrec.store.connection import connect
    from hybridrec.store.features import FeatureStore

    client = connect(settings)
    return (
        client,
        FeatureStore(client, settings.key_prefix),
        Registry(client, settings.key_prefix),
        ModelStore(settings.model_store),
    )


def test_serve_with_two_workers(server, serving_model, tmp_path):
    from hybridrec.modelstore.registry import publish_model

    base, settings, proc = server
    data, model = serving_model
    client, store, registry, models = _world(settings)
    # the master started the embedded Redis before forking; nothing is published yet
    assert requests.get(f"{base}/readyz", timeout=2).status_code == 503
    for user_id, features in data.user_features.items():
        store.put_features("users", user_id, features)
    store.add_interactions(data.interactions)
    first = publish_model(models, registry, model)["version"]
    # Regression (flaky before): ten /v1/model answers can all come from one worker, so
    # wait until each worker has logged the load of this version.
    log = tmp_path / "serve.log"
    _wait(lambda: _workers_loaded(log, first) == 2, 10, "both workers ready")

    # hot reload while requests run: no request fails
    stop = threading.Event()
    results: list[tuple[int, str]] = []

    def hammer() -> None:
        session = requests.Session()
        while not stop.is_set():
            r = session.get(f"{base}/v1/users/u0/recommendations?k=5", timeout=5)
            results.append((r.status_code, r.json().get("model_version", "")))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        newer = HybridLightFM(no_components=8, epochs=3, random_state=5).fit(
            data.interactions, data.user_features, data.item_features
        )
        second = publish_model(models, registry, newer)["version"]
        _wait(lambda: _all_workers_serve(base, second), 10, "both workers on the new version")
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(results) > 50 and {status for status, _ in results} == {200}
    assert {version for _, version in results} == {first, second}

    # a new item, put through one worker, is recommendable on both within 5 s
    headers = {"Authorization": "Bearer t0ken"}
    put = requests.put(
        f"{base}/v1/items/hot-item/features",
        json={"features": {"genre:2": 1.0, "tag:4": 1.0}},
        headers=headers,
        timeout=5,
    )
    assert put.status_code == 200
    assert requests.put(f"{base}/v1/items/x/features", json={"features": {}}).status_code == 401
    started = time.monotonic()

    def everywhere() -> bool:
        seen = set()
        for _ in range(12):
            out = requests.get(f"{base}/v1/users/u0/recommendations?k=1000", timeout=5).json()
            seen.add("hot-item" in {x["item_id"] for x in out["items"]})
        return seen == {True}

    _wait(everywhere, 5, "the new item on every worker")
    assert time.monotonic() - started < 5

    # /metrics reports both workers, BLAS runs one thread per worker
    text = requests.get(f"{base}/metrics", timeout=5).text
    pids = set(re.findall(r'hybridrec_catalog_items\{pid="(\d+)"\}', text))
    assert len(pids) == 2, text[:2000]
    total = sum(
        float(v)
        for v in re.findall(
            r'hybridrec_http_requests_total\{method="GET",route="/v1/users/<user_id>/'
            r'recommendations",status="200"\} ([0-9.e+]+)',
            text,
        )
    )
    assert total >= len(results)
    blas = {requests.get(f"{base}/v1/model", timeout=2).json()["blas_threads"] for _ in range(8)}
    assert blas == {1}

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    client.close()


def _workers_loaded(log: Path, version: str) -> int:
    """How many worker processes logged ``model_loaded`` for ``version``."""
    pids = set()
    for line in log.read_text(errors="replace").splitlines():
        if '"model_loaded"' in line and f'"version": "{version}"' in line:
            pids.add(re.search(r'"pid": (\d+)', line).group(1))
    return len(pids)


def _all_workers_serve(base: str, version: str) -> bool:
    versions = {
        requests.get(f"{base}/v1/model", timeout=2).json().get("model_version") for _ in range(10)
    }
    return versions == {version}


def test_choose_server_keeps_non_ascii_tokens_working():
    from hybridrec.config import Settings
    from hybridrec.errors import HybridrecError
    from hybridrec.serving.server import choose_server

    assert choose_server(None, Settings()) == "granian"
    assert choose_server(None, Settings(api_token="ascii-token")) == "granian"
    assert choose_server("gunicorn", Settings(api_token="ascii")) == "gunicorn"
    # granian hands the app an empty header for non-ASCII bytes (see the test below)
    assert choose_server(None, Settings(api_token="Sésame")) == "gunicorn"
    with pytest.raises(HybridrecError, match="--server gunicorn"):
        choose_server("granian", Settings(api_token="Sésame"))


def _echo_authorization():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain; charset=latin-1")])
        return [environ.get("HTTP_AUTHORIZATION", "<none>").encode("latin-1")]

    return app


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_which_server_passes_a_non_ascii_header(server, tmp_path):
    """Why choose_server avoids granian for a non-ASCII token: pinned against the real
    servers, so that an upgrade that fixes granian shows up here."""
    port = free_port()
    code = (
        "import sys; from tests.test_serving_server import _echo_authorization; "
        "from hybridrec.serving.server import run_app; "
        f"run_app(_echo_authorization, '127.0.0.1', {port}, 1, server={server!r}, threads=1)"
    )
    log = open(tmp_path / "echo.log", "wb")
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait(lambda: requests.get(url, timeout=1).ok, 30, "echo server")
        token = "Bearer Sésame".encode()
        got = requests.get(url, headers={"Authorization": token}, timeout=5).content
        ascii_got = requests.get(url, headers={"Authorization": "Bearer x"}, timeout=5).content
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        log.close()
    assert ascii_got == b"Bearer x"
    assert got == (b"" if server == "granian" else token)
