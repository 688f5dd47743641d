"""Several API replicas sharing one Redis follow publishes and rollbacks (issue 5).

Two ``hybridrec serve`` processes on different ports, one standalone Redis (the
``redis_server`` fixture), one model store directory. Each must serve a newly published
version within 10 s, and both must follow a rollback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from hybridrec.cli._env import Env

from .conftest import _free_port
from .synthetic import make_synthetic

pytestmark = pytest.mark.slow


def _version(base: str) -> str | None:
    try:
        r = requests.get(f"{base}/v1/model", timeout=2)
    except requests.RequestException:
        return None
    return r.json().get("model_version") if r.status_code == 200 else None


def _all_serve(bases: list[str], version: str, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if all(_version(b) == version for b in bases):
            return time.monotonic() - t0
        time.sleep(0.1)
    got = {b: _version(b) for b in bases}
    raise AssertionError(f"not every replica serves {version} after {timeout} s: {got}")


@pytest.fixture
def replicas(settings, tmp_path):
    env = {
        **os.environ,
        "HYBRIDREC_REDIS_URL": settings.redis_url,
        "HYBRIDREC_KEY_PREFIX": settings.key_prefix,
        "HYBRIDREC_MODEL_STORE": settings.model_store,
        "HYBRIDREC_RELOAD_INTERVAL": "1.0",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    exe = str(Path(sys.executable).parent / "hybridrec")
    procs, bases = [], []
    for n in range(2):
        port = _free_port()
        log = open(tmp_path / f"serve{n}.log", "wb")
        procs.append(
            subprocess.Popen(
                [exe, "serve", "--port", str(port), "--workers", "1"],
                cwd=tmp_path,
                env=env,
                stdout=log,
                stderr=log,
            )
        )
        bases.append(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if all(requests.get(f"{b}/healthz", timeout=1).ok for b in bases):
                    break
            except requests.RequestException:
                time.sleep(0.1)
        yield bases
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_two_replicas_follow_publish_and_rollback(settings, replicas):
    from hybridrec.training.trainer import fit_model

    e = Env(settings)
    data = make_synthetic(n_users=50, n_items=30, seed=7)
    versions = []
    for seed in (0, 1):
        model = fit_model(
            data.interactions,
            data.user_features,
            data.item_features,
            {"no_components": 4, "epochs": 2},
            seed=seed,
        )
        versions.append(e.model_store.write(model)["version"])

    e.registry.publish(versions[0], {"status": "published"})
    _all_serve(replicas, versions[0], 10)
    e.registry.publish(versions[1], {"status": "published"})
    took = _all_serve(replicas, versions[1], 10)
    assert took < 10
    assert e.registry.rollback() == versions[0]
    _all_serve(replicas, versions[0], 10)
    # both answer requests with the version they report
    for base in replicas:
        body = requests.get(f"{base}/v1/users/u1/recommendations?k=3", timeout=5).json()
        assert body["model_version"] == versions[0] and len(body["items"]) == 3
    e.close()
