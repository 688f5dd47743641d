"""``hybridrec demo``: sample -> store -> train -> publish -> serve, and its printed requests
work when pasted into a shell."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from hybridrec.store.connection import EmbeddedServer

from .live_server import stop_server

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("curl") is None, reason="the printed examples use curl")
def test_demo_serves_and_its_examples_work(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDREC_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    hybridrec = str(Path(sys.executable).parent / "hybridrec")
    out, err = open(tmp_path / "out.txt", "wb"), open(tmp_path / "err.txt", "wb")
    proc = subprocess.Popen(
        [hybridrec, "demo", "--epochs", "1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=out,
        stderr=err,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None, (tmp_path / "err.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "the demo did not become ready"
            time.sleep(0.2)
        time.sleep(1.0)  # both workers
        lines = (tmp_path / "out.txt").read_text().splitlines()
        commands = [line for line in lines if line.startswith("curl ")]
        assert len(commands) >= 7, lines
        for command in commands:  # pasted one after the other, as fast as a shell runs them
            done = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=30, cwd=tmp_path
            )
            assert done.returncode == 0, (command, done.stderr)
            if "/metrics" in command:
                assert "hybridrec_recommendations_total" in done.stdout
                continue
            body = json.loads(done.stdout)
            assert "error" not in body, (command, body)
        recs = requests.get(f"{base}/v1/users/1/recommendations?k=5", timeout=5).json()
        assert recs["strategy"] == "personalized" and len(recs["items"]) == 5
        # issue 10 items 5 and 12: a person can read the answer and knows its scale
        assert recs["score_type"] == "blend"  # user 1 has a history: LightFM + item-item
        assert all(item["title"] for item in recs["items"]), recs
        assert "# user 1 rated e.g. " in lines[1] and "(19" in lines[1]  # titles with years
        assert "# movies like 1: Toy Story (1995)" in lines
    finally:
        stop_server(proc)
        out.close()
        err.close()
        EmbeddedServer(tmp_path / ".hybridrec").stop()
