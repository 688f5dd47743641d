"""Tokens, privacy, the reload rate limit and secrets, against the real server over HTTP."""

from __future__ import annotations

import subprocess
import time
from dataclasses import replace

import pytest
import requests

from hybridrec.serving.openapi import FORCED_RELOAD_INTERVAL
from hybridrec.serving.security import Interval, TokenCheck, exposure_warning

from .live_server import HYBRIDREC, free_port, live_server, server_env

pytestmark = pytest.mark.slow

TOKEN = "Sésame-Å"  # ends in U+00C5, UTF-8 C3 85: 0x85 is whitespace to str.strip()
SECRET = "Sup3r/Secret"


@pytest.fixture(scope="module")
def live(shared_serving_world, tmp_path_factory):
    env = server_env(shared_serving_world.settings, HYBRIDREC_API_TOKEN=TOKEN)
    with live_server(env, tmp_path_factory.mktemp("security")) as server:
        yield server


def _bearer(token: str, encoding: str) -> dict[str, bytes]:
    return {"Authorization": f"Bearer {token}".encode(encoding)}


def test_regression_a_non_ascii_token_works_in_utf8(live):
    # Regression: only a Latin-1 encoded token was accepted (issue 9 item 8)
    url = f"{live.base}/v1/users/u0/features"
    assert requests.get(url, headers=_bearer(TOKEN, "utf-8"), timeout=5).status_code == 200
    assert requests.get(url, headers=_bearer(TOKEN, "latin-1"), timeout=5).status_code == 200
    for wrong in ("Sésame-", "sésame-Å", TOKEN + "x"):
        response = requests.get(url, headers=_bearer(wrong, "utf-8"), timeout=5)
        assert response.status_code == 401, wrong
    response = requests.get(url, timeout=5)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"


def test_regression_user_data_needs_the_token_item_features_do_not(live):
    # Regression: GET /v1/users/{id}/features answered anyone (issue 9 item 8)
    assert requests.get(f"{live.base}/v1/users/u0/features", timeout=5).status_code == 401
    assert requests.get(f"{live.base}/v1/items/i0/features", timeout=5).status_code == 200
    assert requests.get(f"{live.base}/v1/users/u0/recommendations", timeout=5).status_code == 200


def test_regression_forced_reloads_need_the_token_and_are_rate_limited(live):
    # Regression: POST /v1/admin/reload?force=true (1-2 s of CPU) had no limit (issue 9 item 8)
    url = f"{live.base}/v1/admin/reload?force=true"
    assert requests.post(url, timeout=30).status_code == 401
    auth = _bearer(TOKEN, "utf-8")
    statuses = []
    for _ in range(5):
        response = requests.post(url, headers=auth, timeout=30)
        statuses.append(response.status_code)
        if response.status_code == 429:
            limited = response
    assert statuses.count(200) <= 1 and statuses.count(429) >= 4, statuses
    wait = int(limited.headers["Retry-After"])
    assert 1 <= wait <= FORCED_RELOAD_INTERVAL
    assert limited.json()["error"]["code"] == "rate_limited"
    assert f"every {FORCED_RELOAD_INTERVAL:.0f} s" in limited.json()["error"]["message"]
    # a plain reload (loads only a new version) is not limited
    for _ in range(3):
        plain = requests.post(f"{live.base}/v1/admin/reload", headers=auth, timeout=30)
        assert plain.status_code == 200


def test_forced_reload_interval():
    gate = Interval(10.0)
    assert gate.take() == 0.0
    assert 9.0 < gate.take() <= 10.0


def test_token_check_compares_bytes():
    check = TokenCheck(TOKEN)
    assert check.matches("Bearer " + TOKEN.encode().decode("latin-1"))
    assert check.matches("bearer  " + TOKEN.encode("latin-1").decode("latin-1") + " ")
    assert not check.matches("Basic " + TOKEN.encode().decode("latin-1"))
    assert not check.matches("Bearer " + TOKEN.encode().decode("latin-1")[:-1])
    assert TokenCheck("€uro").matches("Bearer " + "€uro".encode().decode("latin-1"))


def test_exposure_warning_only_beyond_loopback_without_a_token():
    for host in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"):
        assert exposure_warning(host, None) is None, host
    for host in ("0.0.0.0", "::", "192.0.2.7"):
        warning = exposure_warning(host, None)
        assert "HYBRIDREC_API_TOKEN" in warning and "\n" not in warning
        assert exposure_warning(host, "t") is None


def _no_address(text: str, port: int) -> None:
    assert str(port) not in text and "127.0.0.1" not in text and SECRET not in text
    assert "unavailable: the feature store" not in text  # issue 10 item 10: not doubled


def test_regression_store_addresses_never_reach_http_bodies(settings, tmp_path):
    # Regression: 503 bodies echoed 'cannot reach Redis at redis://:Sup3r...' (issue 9 item 3)
    port = free_port()  # nothing listens there
    down = replace(settings, redis_url=f"redis://:Sup3r%2FSecret@127.0.0.1:{port}/0")
    with live_server(server_env(down), tmp_path, ready="") as server:
        for method, path, body in (
            ("put", "/v1/items/x/features", {"features": {"a": 1}}),
            ("post", "/v1/interactions", {"interactions": [{"user_id": "u", "item_id": "i"}]}),
            ("get", "/v1/users/u0/features", None),
            ("post", "/v1/admin/reload", None),
        ):
            response = requests.request(method, server.base + path, json=body, timeout=10)
            assert response.status_code == 503, (path, response.text)
            _no_address(response.text, port)
        response = requests.put(
            f"{server.base}/v1/items/x/features", json={"features": {"a": 1}}, timeout=10
        )
        assert response.json()["error"] == {
            "code": "store_unavailable",
            "message": "the feature store (Redis) is unavailable; retry later (the server log "
            "says why)",
        }
        time.sleep(0.3)
        log = server.log_text()
    assert "store_unavailable" in log and "Sup3r" not in log and "Secret" not in log


@pytest.mark.parametrize("password", ["Sup3r/Secret", "Sup3r?Secret", "Sup3r#Secret"])
def test_regression_an_unencoded_password_stops_the_start_on_one_line(settings, tmp_path, password):
    # Regression: 'redis://:Sup3r/Secret@127.0.0.1:6379/0' started a server that echoed the
    # password in 503 bodies and in the log (issue 9 item 3)
    url = f"redis://:{password}@127.0.0.1:6379/0"
    env = server_env(replace(settings, redis_url=url))
    for command in (["serve", "--port", str(free_port())], ["models", "list"]):
        t0 = time.monotonic()
        done = subprocess.run(
            [HYBRIDREC, *command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1 and time.monotonic() - t0 < 30
        assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
        assert "malformed Redis URL 'redis://***@127.0.0.1:6379/0'" in done.stderr
        assert "Secret" not in done.stderr and "%2F" in done.stderr  # how to fix it
