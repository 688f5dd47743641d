"""Issue 10 item 10: ``train``'s progress in a log file.

Bug pinned: tqdm's carriage-return redraws filled log files when stderr was not a
terminal. Now a terminal gets the bar and anything else a few plain lines. Runs the real
command in a subprocess, against a real Redis, with stderr a file and then a pty.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from hybridrec.io.files import write_interactions

from .synthetic import make_synthetic


@pytest.fixture
def train_command(settings, tmp_path):
    path = tmp_path / "train.csv"
    write_interactions(make_synthetic(n_users=60, n_items=30, seed=2).interactions, path)
    env = {
        **os.environ,
        "HYBRIDREC_REDIS_URL": settings.redis_url,
        "HYBRIDREC_KEY_PREFIX": settings.key_prefix,
        "HYBRIDREC_MODEL_STORE": settings.model_store,
    }
    hybridrec = str(Path(sys.executable).parent / "hybridrec")
    args = ["train", "--interactions", str(path), "--components", "4", "--epochs", "20"]
    return [hybridrec, *args], env


def test_progress_is_plain_lines_when_stderr_is_a_file(train_command, tmp_path):
    command, env = train_command
    with open(tmp_path / "err.log", "wb") as err:
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=err, timeout=120)
    log = (tmp_path / "err.log").read_text()
    assert done.returncode == 0, log
    assert "\r" not in log
    lines = log.splitlines()
    final = [line for line in lines if line.startswith("final fit: epoch ")]
    assert [line.split()[3] for line in final] == [f"{n}/20," for n in range(2, 21, 2)]
    assert final[-1].startswith("final fit: epoch 20/20, ")


def test_a_terminal_still_gets_the_bar(train_command):
    command, env = train_command
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        done = subprocess.run(
            command, env=env, stdout=subprocess.PIPE, stderr=follower, timeout=120
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the other end is closed and everything was read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    shown = b"".join(chunks).decode(errors="replace")
    assert done.returncode == 0, shown
    assert "final fit: 20/20 epochs" in shown and "\r" in shown
