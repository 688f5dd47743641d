"""The embedded Redis: one shared server per data dir, persistent, stopped cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import redis

from hybridrec.config import Settings
from hybridrec.errors import StoreUnavailable
from hybridrec.store.connection import (
    EmbeddedServer,
    connect,
    embedded_status,
    stop_embedded,
)
from hybridrec.store.features import FeatureStore

CHILD = textwrap.dedent(
    """
    import os, sys, time
    from hybridrec.config import Settings
    from hybridrec.store.connection import connect
    if len(sys.argv) > 2:  # barrier: connect only once every child is ready
        barrier, n = sys.argv[2], int(sys.argv[3])
        open(os.path.join(barrier, str(os.getpid())), "w").close()
        while len(os.listdir(barrier)) < n:
            time.sleep(0.002)
    client = connect(Settings(redis_url=None, data_dir=sys.argv[1]))
    client.incr("starts")
    print(client.info("server")["process_id"])
    """
)


def test_data_survives_a_stop_and_a_restart(embedded_settings):
    store = FeatureStore(connect(embedded_settings))
    store.put_features("items", "i1", {"genre:drama": 1.0})
    first_pid = embedded_status(embedded_settings)["pid"]
    assert stop_embedded(embedded_settings) is True
    assert embedded_status(embedded_settings) is None
    assert stop_embedded(embedded_settings) is False

    store = FeatureStore(connect(embedded_settings))  # starts a new server on the same files
    assert store.get_features("items", "i1") == {"genre:drama": 1.0}
    assert store.catalog_ids() == ["i1"]
    assert embedded_status(embedded_settings)["pid"] != first_pid


def test_data_survives_a_killed_server(embedded_settings):
    """kill -9 leaves a stale socket and pidfile; the next connect cleans up and restarts."""
    client = connect(embedded_settings)
    client.set("answer", "42")
    server = EmbeddedServer(embedded_settings.data_dir)
    pid = server.pid()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while server.pid() == pid and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.socket_path.exists()  # left behind
    assert connect(embedded_settings).get("answer") == "42"  # replayed from the AOF
    assert server.pid() not in (None, pid)


def test_processes_starting_together_share_one_server(embedded_settings, tmp_path):
    """Three processes start at once: one server; it outlives them all."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(embedded_settings.data_dir), str(barrier), "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [child.communicate(timeout=60) for child in children]
    assert [c.returncode for c in children] == [0] * 3, outputs
    pids = {out.strip() for out, _err in outputs}
    assert len(pids) == 1
    client = connect(embedded_settings)  # the short-lived processes exited; it did not
    assert client.get("starts") == "3"
    assert str(client.info("server")["process_id"]) in pids


def test_a_long_lived_client_keeps_working_after_a_short_one_exits(embedded_settings):
    server_client = connect(embedded_settings)  # e.g. `hybridrec serve`
    server_client.set("k", "v")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(embedded_settings.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    assert server_client.get("k") == "v" and server_client.get("starts") == "1"


def test_a_deep_data_dir_puts_the_socket_in_the_temp_dir(tmp_path):
    deep = tmp_path.joinpath(*(["deeply-nested-directory"] * 5))
    server = EmbeddedServer(deep)
    assert len(str(deep / "redis.sock")) > 100
    assert not str(server.socket_path).startswith(str(deep))
    with server:
        settings = Settings(redis_url=None, data_dir=deep)
        connect(settings).set("k", "v")
        assert connect(settings).get("k") == "v"
    assert not server.running() and (deep / "redis.db").exists()


def test_an_unusable_data_dir_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="cannot start the embedded Redis"):
        connect(Settings(redis_url=None, data_dir=blocker / "sub"))


def test_the_server_files_live_in_the_data_dir(embedded_settings):
    connect(embedded_settings)
    names = {p.name for p in embedded_settings.data_dir.iterdir()}
    assert {"redis.conf", "redis.pid", "redis.sock", "redis.log", "redis.lock"} <= names
    mode = (embedded_settings.data_dir / "redis.sock").stat().st_mode & 0o777
    assert mode == 0o700  # only the owner may talk to it
    assert "port 0" in (embedded_settings.data_dir / "redis.conf").read_text()  # no TCP


def test_a_long_lived_client_reconnects_after_a_restart(embedded_settings):
    serving = connect(embedded_settings)
    serving.set("k", "v")
    stop_embedded(embedded_settings)
    with pytest.raises(redis.ConnectionError):
        serving.get("k")  # `hybridrec redis stop` while serving: requests fail ...
    connect(embedded_settings)  # ... until any command starts it again
    assert serving.get("k") == "v"
