"""One JSON log format for the whole product (issue 10 item 10: serving wrote
``"ts"``/``"info"`` while ``retrain --every`` wrote ``"time"``/``"INFO"``)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from hybridrec.logs import JsonLines, log_event

KEYS = ["ts", "level", "pid", "logger"]


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("hybridrec.x", level, __file__, 1, message, None, None)


def test_a_json_message_is_merged_and_plain_text_goes_under_message():
    merged = json.loads(JsonLines().format(_record('{"event": "model_loaded", "items": 3}')))
    assert list(merged)[:4] == KEYS and merged["level"] == "info"
    assert merged["event"] == "model_loaded" and merged["items"] == 3
    assert merged["pid"] == os.getpid() and merged["ts"].endswith("Z")
    plain = json.loads(JsonLines().format(_record('a "quoted" line', logging.WARNING)))
    assert plain["message"] == 'a "quoted" line' and plain["level"] == "warning"


def test_log_event_writes_one_event(caplog):
    logger = logging.getLogger("hybridrec.test")
    with caplog.at_level(logging.INFO, logger="hybridrec.test"):
        log_event(logger, logging.INFO, "worker_ready", version="v1")
    assert json.loads(caplog.records[0].getMessage()) == {"event": "worker_ready", "version": "v1"}


def test_retrain_loop_logs_the_same_format_as_serve(settings, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDREC_")}
    env.update(
        HYBRIDREC_REDIS_URL=settings.redis_url,
        HYBRIDREC_KEY_PREFIX=settings.key_prefix,
        HYBRIDREC_MODEL_STORE=settings.model_store,
    )
    done = subprocess.run(
        [str(Path(sys.executable).parent / "hybridrec"), "retrain", "--every", "1s",
         "--max-cycles", "1"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert lines, done.stderr
    for entry in lines:
        assert list(entry)[:4] == KEYS, entry  # "ts", not "time"
        assert entry["level"] in ("info", "warning", "error"), entry  # not "INFO"
    assert any(e["logger"] == "hybridrec.retrain" and "cycle 1" in e["message"] for e in lines)
