"""The interaction log beyond Redis: cleaning rows for training, the Parquet archive,
and reading archive plus live tail.

**Cleaning.** Whatever reached the log (or a file) before validation was strict, a bad
row is skipped and counted by reason, never fatal: missing ids, a weight that is not a
number, not finite in float32 (1e39 is finite in float64 and infinite for LightFM),
negative, or a timestamp that is not an integer.

**Archive.** A directory or fsspec URL of Parquet files partitioned by the day (UTC)
an entry reached the log: ``ROOT/day=YYYY-MM-DD/<first>_<last>.parquet``, named by the
first and last log entry ids they hold (``1700000000000-0``). Columns: ``user_id``,
``item_id``, ``weight`` (NaN when the log held no number), ``timestamp`` (null likewise),
``log_ms``, ``log_seq`` (the entry id). :func:`archive_log` moves entries older than a
retention out of Redis, one batch at a time: write a hidden temporary file, read it back
and compare it with the batch, rename it (atomic), then trim the log up to its last id
(``XTRIM MINID``, exact). The archived position is the newest id in the archive's file
names, so a run killed at any point loses and duplicates nothing: a temporary file is
ignored and removed, a file renamed but not yet trimmed is trimmed by the next run, and
reads take from the log only what is newer than the archive.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import HybridrecError
from .connection import _pid_alive

__all__ = [
    "SKIP_REASONS",
    "clean_interactions",
    "parse_log_entries",
    "ArchiveResult",
    "Archive",
    "read_interactions_dir",
]

SKIP_REASONS = (
    "missing_id",
    "weight_not_a_number",
    "weight_not_finite_in_float32",
    "weight_negative",
    "timestamp_not_an_integer",
)
_INT64_MAX = float(np.iinfo(np.int64).max)
_DAY_MS = 86_400_000
_NAME = re.compile(r"^(\d+)-(\d+)_(\d+)-(\d+)\.parquet$")
_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("weight", pa.float64()),
        ("timestamp", pa.int64()),
        ("log_ms", pa.int64()),
        ("log_seq", pa.int64()),
    ]
)


# ------------------------------------------------------------------------------ cleaning


def clean_interactions(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without the rows training cannot use; ``attrs["skipped"]`` counts them
    by reason (``SKIP_REASONS``; only reasons that occurred).

    ``frame`` has ``user_id``, ``item_id`` (str or missing), ``weight`` and ``timestamp``
    (numbers, NaN where the source had none). The result has ``weight`` float64 and
    ``timestamp`` int64; other columns and ``attrs`` are kept.
    """
    n = len(frame)
    attrs = dict(frame.attrs)
    users = frame["user_id"]
    items = frame["item_id"]
    missing = (
        users.isna().to_numpy()
        | items.isna().to_numpy()
        | (users.astype(str) == "").to_numpy()
        | (items.astype(str) == "").to_numpy()
    )
    w = pd.to_numeric(frame["weight"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    with np.errstate(over="ignore", invalid="ignore"):
        w32 = w.astype(np.float32)
    t = pd.to_numeric(frame["timestamp"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    reasons = {
        "missing_id": missing,
        "weight_not_a_number": ~missing & np.isnan(w),
        "weight_not_finite_in_float32": ~missing & ~np.isnan(w) & ~np.isfinite(w32),
        "weight_negative": ~missing & np.isfinite(w32) & (w < 0),
    }
    bad = np.zeros(n, dtype=bool)
    for mask in reasons.values():
        bad |= mask
    with np.errstate(invalid="ignore"):
        bad_t = ~np.isfinite(t) | (t != np.floor(t)) | (np.abs(t) >= _INT64_MAX)
    reasons["timestamp_not_an_integer"] = ~bad & bad_t
    bad |= bad_t
    skipped = {r: int(m.sum()) for r, m in reasons.items() if m.any()}
    # no deep copy of a clean frame: millions of id strings are the bulk of its memory
    out = frame.loc[~bad].reset_index(drop=True) if bad.any() else frame.copy(deep=False)
    for column in ("user_id", "item_id"):
        if pd.api.types.infer_dtype(out[column], skipna=False) != "string":
            out[column] = out[column].astype(str)
    out["weight"] = w[~bad] if bad.any() else w
    out["timestamp"] = (t[~bad] if bad.any() else t).astype(np.int64)
    previous = attrs.get("skipped") or {}
    attrs["skipped"] = {r: previous.get(r, 0) + skipped.get(r, 0) for r in {*previous, *skipped}}
    out.attrs = attrs
    return out


def parse_log_entries(entries: list) -> pd.DataFrame:
    """XRANGE entries ``[(id, {"u", "i", "w", "t"})]`` as a raw frame: ``user_id``,
    ``item_id`` (None when absent), ``weight``, ``timestamp`` (float64, NaN when absent
    or not a number), ``log_ms``, ``log_seq`` (the entry id). Nothing is dropped here."""
    ids = [e[0] for e in entries]
    fields = [e[1] for e in entries]
    ms, _, seq = np.char.partition(np.asarray(ids, dtype=str), "-").T if ids else ([], [], [])
    return pd.DataFrame(
        {
            "user_id": pd.Series([f.get("u") for f in fields], dtype=object),
            "item_id": pd.Series([f.get("i") for f in fields], dtype=object),
            "weight": pd.to_numeric(pd.Series([f.get("w") for f in fields]), errors="coerce"),
            "timestamp": pd.to_numeric(pd.Series([f.get("t") for f in fields]), errors="coerce"),
            "log_ms": np.asarray(ms, dtype=np.int64),
            "log_seq": np.asarray(seq, dtype=np.int64),
        }
    ).astype({"weight": np.float64, "timestamp": np.float64})


def _id(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


def newer_than(frame: pd.DataFrame, cursor: tuple[int, int] | None) -> np.ndarray:
    """Boolean mask of the rows whose log entry id is after ``cursor``."""
    if cursor is None:
        return np.ones(len(frame), dtype=bool)
    ms, seq = frame["log_ms"].to_numpy(), frame["log_seq"].to_numpy()
    return (ms > cursor[0]) | ((ms == cursor[0]) & (seq > cursor[1]))


def parse_cursor(text: str | None) -> tuple[int, int] | None:
    if not text or text == "0-0":
        return None
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


# ------------------------------------------------------------------------------- archive


@dataclass
class ArchiveResult:
    archived: int = 0  # entries moved out of Redis by this run
    files: int = 0
    trimmed: int = 0  # entries XTRIM removed (includes those of an earlier, killed run)
    cursor: str | None = None  # newest archived log entry id


class Archive:
    """The Parquet archive of the interaction log at ``url`` (a directory or fsspec URL)."""

    def __init__(self, url: str):
        self.url = str(url)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self._local = "file" in (
            (self.fs.protocol,) if isinstance(self.fs.protocol, str) else self.fs.protocol
        )

    # -- listing --------------------------------------------------------------------

    def files(self) -> list[tuple[tuple[int, int], tuple[int, int], str]]:
        """``[(first_id, last_id, path)]`` of the complete files, oldest first."""
        if not self.fs.exists(self.root):
            return []
        out = []
        for path in self.fs.find(self.root):
            m = _NAME.match(path.rsplit("/", 1)[-1])
            if m:
                a, b, c, d = (int(x) for x in m.groups())
                out.append(((a, b), (c, d), path))
        return sorted(out)

    def cursor(self) -> tuple[int, int] | None:
        """The newest archived log entry id (None for an empty archive)."""
        files = self.files()
        return max(f[1] for f in files) if files else None

    # -- reading --------------------------------------------------------------------

    def read(self, until: tuple[int, int] | None = None) -> pd.DataFrame:
        """Every archived row (files whose last id is at most ``until``), oldest first,
        as a raw frame (see :func:`parse_log_entries`)."""
        tables = [
            self._read_file(path)
            for _, last, path in self.files()
            if until is None or last <= until
        ]
        if not tables:
            return parse_log_entries([])
        frame = pa.concat_tables(tables).to_pandas()
        return frame.astype({"weight": np.float64, "timestamp": np.float64})

    def _read_file(self, path: str) -> pa.Table:
        with self.fs.open(path, "rb") as f:
            return pq.read_table(f, schema=_SCHEMA)

    # -- writing --------------------------------------------------------------------

    def _write_verified(self, frame: pd.DataFrame) -> str:
        """Write one batch (one day) as a complete file: temporary, verified, renamed."""
        first = (int(frame["log_ms"].iloc[0]), int(frame["log_seq"].iloc[0]))
        last = (int(frame["log_ms"].iloc[-1]), int(frame["log_seq"].iloc[-1]))
        day = time.strftime("%Y-%m-%d", time.gmtime(first[0] / 1000))
        directory = f"{self.root}/day={day}"
        self.fs.makedirs(directory, exist_ok=True)
        final = f"{directory}/{_id(*first)}_{_id(*last)}.parquet"
        tmp = f"{directory}/.tmp-{uuid.uuid4().hex}.parquet"
        table = _to_table(frame)
        if self._local:
            pq.write_table(table, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        else:
            with self.fs.open(tmp, "wb") as f:
                pq.write_table(table, f)
        back = self._read_file(tmp)
        if not back.equals(table):
            self.fs.rm(tmp)
            raise HybridrecError(
                f"archive {self.url}: {final} did not read back as written; nothing trimmed"
            )
        self.fs.mv(tmp, final)
        return final

    def remove_temporary(self) -> int:
        """Remove temporary files left by a killed run; returns how many."""
        if not self.fs.exists(self.root):
            return 0
        stale = [p for p in self.fs.find(self.root) if p.rsplit("/", 1)[-1].startswith(".tmp-")]
        for path in stale:
            self.fs.rm(path)
        return len(stale)


def _to_table(frame: pd.DataFrame) -> pa.Table:
    ts = frame["timestamp"].to_numpy(np.float64)
    ok = np.isfinite(ts) & (np.abs(ts) < _INT64_MAX) & (ts == np.floor(ts))
    return pa.table(
        {
            "user_id": pa.array(frame["user_id"].tolist(), pa.string()),
            "item_id": pa.array(frame["item_id"].tolist(), pa.string()),
            "weight": pa.array(frame["weight"].to_numpy(np.float64)),
            "timestamp": pa.array(np.where(ok, ts, 0).astype(np.int64), mask=~ok),
            "log_ms": pa.array(frame["log_ms"].to_numpy(np.int64)),
            "log_seq": pa.array(frame["log_seq"].to_numpy(np.int64)),
        },
        schema=_SCHEMA,
    )


def read_interactions_dir(url: str) -> pd.DataFrame:
    """Interactions from a directory or fsspec URL of Parquet files (e.g. partitioned by
    day): every ``*.parquet`` below it in path order (an archive: in log order), cleaned
    (:func:`clean_interactions`). Columns ``user_id, item_id[, weight][, timestamp]``."""
    archive = Archive(url)
    if archive.files():
        frame = archive.read()
        frame.attrs["archive_cursor"] = _id(*archive.cursor())
        return clean_interactions(frame)
    fs, root = archive.fs, archive.root
    paths = sorted(
        p
        for p in (fs.find(root) if fs.exists(root) else [])
        if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith(".")
    )
    if not paths:
        raise HybridrecError(f"{url}: no Parquet files (*.parquet) found")
    tables = []
    for path in paths:
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        missing = {"user_id", "item_id"} - set(table.column_names)
        if missing:
            raise HybridrecError(f"{path}: missing column(s) {sorted(missing)}")
        tables.append(table)
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    n = len(frame)
    if "weight" not in frame:
        frame["weight"] = np.ones(n)
    if "timestamp" not in frame:
        frame["timestamp"] = np.arange(n)
    elif pd.api.types.is_datetime64_any_dtype(frame["timestamp"]):
        frame["timestamp"] = frame["timestamp"].astype("int64") // 10**9
    frame = frame[["user_id", "item_id", "weight", "timestamp"]]
    return clean_interactions(frame.astype({"weight": np.float64, "timestamp": np.float64}))


# ------------------------------------------------------------------------ archive runs


_TAKE_LOCK = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return 1
end
return 0
"""


def archive_log(
    store,
    archive: Archive,
    *,
    older_than_ms: int,
    batch: int = 200_000,
    lock_ttl_ms: int = 600_000,
    on_batch: Callable[[int, str], None] | None = None,
) -> ArchiveResult:
    """Move log entries whose id (arrival time) is before ``older_than_ms`` into
    ``archive``, ``batch`` entries (and at most one day) per file; see the module doc.

    One run at a time: a lock in Redis, taken over at once when its holder was a
    process of this host that no longer exists, else after ``lock_ttl_ms``.
    """
    client = store.client
    lock_key = f"{store.log_key}:archive-lock"
    me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    holder = client.get(lock_key)
    stale = ""
    if holder:
        host, _, rest = str(holder).partition(":")
        pid = rest.partition(":")[0]
        if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
            stale = str(holder)
    if not client.eval(_TAKE_LOCK, 1, lock_key, me, stale or me, lock_ttl_ms):
        raise HybridrecError(
            f"another 'interactions archive' run holds the lock ({holder}); "
            "run one at a time (the lock expires by itself)"
        )
    result = ArchiveResult()
    try:
        archive.remove_temporary()
        cursor = archive.cursor()
        result.trimmed += _trim(client, store.log_key, cursor)
        while True:
            start = f"({_id(*cursor)}" if cursor else "-"
            head = client.xrange(store.log_key, start, "+", count=1)
            if not head:
                break
            first_ms = parse_cursor(head[0][0])[0]
            if first_ms >= older_than_ms:
                break
            day_end = (first_ms // _DAY_MS + 1) * _DAY_MS - 1
            end = str(min(older_than_ms - 1, day_end))
            entries = client.xrange(store.log_key, start, end, count=batch)
            frame = parse_log_entries(entries)
            archive._write_verified(frame)
            cursor = (int(frame["log_ms"].iloc[-1]), int(frame["log_seq"].iloc[-1]))
            result.archived += len(frame)
            result.files += 1
            result.trimmed += _trim(client, store.log_key, cursor)
            client.eval(_TAKE_LOCK, 1, lock_key, me, me, lock_ttl_ms)  # renew
            if on_batch:
                on_batch(len(frame), _id(*cursor))
        result.cursor = _id(*cursor) if cursor else None
        return result
    finally:
        client.eval(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end",
            1,
            lock_key,
            me,
        )


def _trim(client, key: str, cursor: tuple[int, int] | None) -> int:
    """Remove every log entry up to ``cursor`` (inclusive); exact."""
    if cursor is None:
        return 0
    return int(client.xtrim(key, minid=_id(cursor[0], cursor[1] + 1), approximate=False))


def read_training_interactions(store, archive: Archive | None) -> pd.DataFrame:
    """Archive plus live tail, in log order, cleaned: every entry once.

    Reads the archive's position, then the log after it, then checks that the position
    did not move meanwhile (an archive run trims only what its files hold, so a stable
    position means the two parts neither overlap nor leave a gap), retrying if it did.
    ``attrs``: ``last_id`` (newest log entry read), ``archive_cursor``, ``skipped``.
    """
    for _ in range(10):
        cursor = archive.cursor() if archive is not None else None
        tail = store.read_interactions(since=_id(*cursor) if cursor else None, raw=True)
        if archive is None or archive.cursor() == cursor:
            break
    else:
        raise HybridrecError("the archive kept moving while reading it: try again")
    last_id = tail.attrs.get("last_id")
    if cursor is not None:
        frame = pd.concat([archive.read(until=cursor), tail], ignore_index=True)
        if last_id in (None, "0-0"):
            last_id = _id(*cursor)
    else:
        frame = tail
    frame.attrs = {"last_id": last_id, "archive_cursor": _id(*cursor) if cursor else None}
    return clean_interactions(frame)
