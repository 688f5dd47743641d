"""Interactions beyond Redis (issue 14) and poison rows in the log (issue 9 item 1),
against a real Redis server and real processes."""

from __future__ import annotations

import json
import queue
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from hybridrec.cli import main
from hybridrec.io.files import write_interactions
from hybridrec.modelstore.artifact import load_model
from hybridrec.store.features import FeatureStore
from hybridrec.store.log import Archive, archive_log, read_training_interactions

from .synthetic import make_synthetic

COLUMNS = ["user_id", "item_id", "weight", "timestamp"]


@pytest.fixture
def run(settings, tmp_path):
    def invoke(*args: str):
        env = {
            "HYBRIDREC_KEY_PREFIX": settings.key_prefix,
            "HYBRIDREC_REDIS_URL": settings.redis_url,
            "HYBRIDREC_ARCHIVE": str(tmp_path / "archive"),
        }
        opts = ["--model-store", settings.model_store]
        return CliRunner().invoke(main, [*opts, *args], env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def store(settings, redis_client):
    return FeatureStore(redis_client, settings.key_prefix)


def _version(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


POISON = [
    {"u": "u1", "i": "i1", "w": "1e39", "t": "1"},  # finite in float64, infinite in float32
    {"u": "u1", "i": "i2", "w": "-2", "t": "1"},
    {"u": "u2", "i": "i3", "w": "abc", "t": "1"},
    {"u": "u2", "i": "i4", "w": "1", "t": "soon"},
    {"i": "i5", "w": "1", "t": "1"},
]


def test_poison_rows_in_the_log_are_skipped_counted_and_reported(run, store, tmp_path):
    """Regression, issue 9 item 1: one weight of 1e39 in the log made every train and
    retrain fail with 'Not all input values are finite' until someone deleted it."""
    data = make_synthetic(n_users=60, n_items=30, per_user=6, seed=4)
    store.add_interactions(data.interactions)
    for fields in POISON:  # written as an old client or a hand-edit would: no validation
        store.client.xadd(store.log_key, fields)
    result = run("train", "--epochs", "2", "--components", "4", "--holdout", "0", "--publish")
    version = _version(result)
    assert "skipped 5 unusable interaction rows" in result.output
    manifest = json.loads(Path(tmp_path / "models" / version / "manifest.json").read_text())
    skipped = manifest["extra"]["data"]["skipped_rows"]
    assert skipped == {
        "missing_id": 1,
        "weight_not_a_number": 1,
        "weight_not_finite_in_float32": 1,
        "weight_negative": 1,
        "timestamp_not_an_integer": 1,
    }
    assert manifest["extra"]["data"]["interactions"] == len(data.interactions)
    assert manifest["extra"]["throughput"]["interactions_per_second"] > 0
    # the retraining cycle goes on too, and its report says what it skipped
    newer = int(data.interactions["timestamp"].max()) + 1  # unseen by the champion
    store.add_interactions(data.interactions.head(40).assign(item_id="i0", timestamp=newer))
    store.client.xadd(store.log_key, POISON[0])
    cycle = run("retrain", "--json", "--threads", "1")
    assert cycle.exit_code == 0, cycle.output
    report = json.loads(cycle.output.strip().splitlines()[-1])
    assert report["data"]["skipped_rows"]["weight_not_finite_in_float32"] == 2
    assert report["throughput"]["interactions_per_epoch"] > 0


def _fill_log(store, n: int, days: int = 3, seed: int = 0) -> None:
    """``n`` entries with explicit ids spread over ``days`` days a week ago."""
    rng = np.random.default_rng(seed)
    start = int((time.time() - 7 * 86_400) * 1000)
    stamps = np.sort(rng.integers(start, start + days * 86_400_000, size=n))
    pipe = store.client.pipeline(transaction=False)
    for j, ms in enumerate(stamps):
        fields = {"u": f"u{j % 97}", "i": f"i{j}", "w": str(1 + j % 3), "t": str(ms // 1000)}
        pipe.xadd(store.log_key, fields, id=f"{ms}-{j}")
    pipe.execute()


def _lines(stream) -> queue.Queue:
    """The lines of ``stream`` as they come, read by a daemon thread."""
    lines: queue.Queue = queue.Queue()

    def pump():
        for raw in stream:
            lines.put(raw.decode(errors="replace"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _everything(store, archive: Archive) -> pd.DataFrame:
    """Archive rows plus log rows, as written (no cleaning), sorted by entry id."""
    both = pd.concat([archive.read(), store.read_interactions(raw=True)], ignore_index=True)
    return both.sort_values(["log_ms", "log_seq"], kind="stable").reset_index(drop=True)


@pytest.mark.slow
def test_archive_killed_at_random_points_never_loses_or_duplicates(settings, store, tmp_path):
    _fill_log(store, 30_000)
    written = store.read_interactions(raw=True)
    url = str(tmp_path / "archive")
    archive = Archive(url)
    command = [
        sys.executable,
        "-c",
        "from hybridrec.cli import main; main()",
        "--redis-url",
        settings.redis_url,
        "interactions",
        "archive",
        "--retention",
        "0",
        "--batch",
        "700",
        "--to",
        url,
    ]
    env = {"HYBRIDREC_KEY_PREFIX": settings.key_prefix, "PATH": "/usr/bin:/bin"}
    rng = random.Random(14)
    mid_run = 0
    for n in range(6):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if n % 3 == 0:  # anywhere, start-up included
            time.sleep(rng.uniform(0.2, 3.0))
        else:  # once it is moving entries (a loaded machine starts slowly), a little later
            batches = _lines(proc.stderr)
            assert batches.get(timeout=120).startswith("archived"), "no batch archived"
            time.sleep(rng.uniform(0.0, 0.4))
        proc.kill()  # SIGKILL: no cleanup, wherever it is
        proc.wait()
        # new entries keep arriving between runs (ids: now)
        extra = pd.DataFrame(
            {"user_id": [f"late{n}"] * 5, "item_id": [f"x{n}-{j}" for j in range(5)]}
        )
        store.add_interactions(extra)
        written = pd.concat([written, store.read_interactions(raw=True).tail(5)])
        got = _everything(store, archive)
        assert len(got) == len(written), f"kill {n}: {len(got)} rows, wrote {len(written)}"
        assert not got.duplicated(["log_ms", "log_seq"]).any()
        archived = len(archive.read())
        mid_run += 0 < archived < len(written) and store.log_length() > 0
    assert mid_run >= 2, "the kills should land while a run is moving entries"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert store.log_length() == 0
    got = _everything(store, archive)
    expected = written.sort_values(["log_ms", "log_seq"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_dtype=False)
    days = {p.parent.name for p in Path(url).rglob("*.parquet")}
    assert len(days) >= 3 and all(d.startswith("day=") for d in days)
    assert not list(Path(url).rglob(".tmp-*"))  # a killed run's temporary files are gone


def test_training_from_archive_plus_tail_equals_training_from_one_file(run, store, tmp_path):
    data = make_synthetic(n_users=80, n_items=40, per_user=8, seed=9)
    rows = data.interactions[COLUMNS]
    half = len(rows) // 2
    store.add_interactions(rows.iloc[:half])
    time.sleep(0.01)  # the second half arrives later (entry ids are arrival times)
    boundary = int(time.time() * 1000)
    time.sleep(0.01)
    store.add_interactions(rows.iloc[half:])
    result = archive_log(store, Archive(tmp_path / "archive"), older_than_ms=boundary)
    assert result.archived == half and store.log_length() == len(rows) - half
    combined = read_training_interactions(store, Archive(tmp_path / "archive"))
    pd.testing.assert_frame_equal(combined[COLUMNS], rows, check_dtype=False)

    one_file = tmp_path / "all.csv"
    write_interactions(rows, one_file)
    args = ("--epochs", "3", "--components", "8", "--threads", "1", "--seed", "0")
    from_store = _version(run("train", *args))
    from_file = _version(run("train", "--interactions", str(one_file), *args))
    a = load_model(str(tmp_path / "models" / from_store))
    b = load_model(str(tmp_path / "models" / from_file))
    assert a.item_ids_.external == b.item_ids_.external
    np.testing.assert_array_equal(a.item_embeddings, b.item_embeddings)
    np.testing.assert_array_equal(a.user_embeddings, b.user_embeddings)

    # a directory of Parquet files partitioned by day is a training source too
    from_dir = _version(run("train", "--interactions", str(tmp_path / "archive"), *args))
    c = load_model(str(tmp_path / "models" / from_dir))
    assert c.interactions_.nnz == half


def test_archive_lock_refuses_a_second_live_run(store, tmp_path):
    store.client.set(f"{store.log_key}:archive-lock", "elsewhere:1:x")
    with pytest.raises(Exception, match="holds the lock"):
        archive_log(store, Archive(tmp_path / "a"), older_than_ms=int(time.time() * 1000))
