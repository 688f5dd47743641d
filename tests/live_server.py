"""``hybridrec serve`` as a real process on a free loopback port, for tests over HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from hybridrec.config import Settings

HYBRIDREC = str(Path(sys.executable).parent / "hybridrec")


def stop_server(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM a server this test started (a graceful stop), SIGKILL it after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    base: str
    process: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def server_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a server on ``settings``'s Redis, prefix and model store."""
    env = {
        **os.environ,
        "HYBRIDREC_REDIS_URL": settings.redis_url or "",
        "HYBRIDREC_KEY_PREFIX": settings.key_prefix,
        "HYBRIDREC_MODEL_STORE": settings.model_store,
        "HYBRIDREC_DATA_DIR": str(settings.data_dir),
        "HYBRIDREC_RELOAD_INTERVAL": "0.3",
        **extra,
    }
    for name in ("PROMETHEUS_MULTIPROC_DIR", "HYBRIDREC_API_TOKEN"):
        if name not in extra:
            env.pop(name, None)
    return env


@contextlib.contextmanager
def live_server(
    env: dict[str, str], directory: Path, *args: str, ready: str = "/readyz", timeout: float = 60
) -> Iterator[LiveServer]:
    """``hybridrec serve --workers 1 ARGS`` until the block ends (SIGTERM, then SIGKILL).

    Waits until ``ready`` answers 200 (``ready=""``: until the port answers at all).
    """
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [HYBRIDREC, "serve", "--port", str(port), "--workers", "1", *args],
            cwd=directory,
            env=env,
            stdout=log,
            stderr=log,
        )
        server = LiveServer(f"http://127.0.0.1:{port}", proc, log_path)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    r = requests.get(f"{server.base}{ready or '/healthz'}", timeout=2)
                    if r.status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the server did not start:\n{server.log_text()[-3000:]}")
                time.sleep(0.05)
            yield server
        finally:
            stop_server(proc)
