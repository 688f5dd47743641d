"""Serving files saved with a model version, built once and mapped by every worker.

Beside an artifact (``<version>/``), the first worker that loads the version writes::

    serving/serving.json   format, sha256 and size of each file, index parameters
    serving/items.npy      item rows [q_i, b_i, 1], float32 (n, d + 2), uncompressed
    serving/items.usearch  the HNSW graph over those rows (large catalogs only)

under an exclusive lock (``<version>/.serving.lock``): other workers wait, then load.
The index is built in a child process (usearch holds the GIL while it adds vectors).
Files are written into a temporary directory and renamed into place, and verified
against ``serving.json`` on every load; a missing, partial or corrupt set is rebuilt.
Loading maps them read-only (``np.load(mmap_mode="r")``, usearch ``view``), so N
workers on one machine hold one copy in the page cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...modelstore.artifact import file_sha256
from .ann import AnnIndex

__all__ = ["SERVING_DIR", "ServingFiles", "load_or_build"]

SERVING_DIR = "serving"
ITEMS_FILE = "items.npy"
INDEX_FILE = "items.usearch"
META_FILE = "serving.json"
LOCK_FILE = ".serving.lock"
FORMAT = 1


@dataclass(frozen=True)
class ServingFiles:
    """Mapped item rows, the loaded index (or None) and how long the build took
    (0.0 when the files were already there)."""

    items: np.ndarray
    index: AnnIndex | None
    build_seconds: float
    directory: Path | None


def _valid(target: Path, n_items: int, with_index: bool) -> dict | None:
    """The metadata of a whole, verified set of files, or None."""
    try:
        meta = json.loads((target / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return None
    if meta.get("n_items") != n_items or (with_index and INDEX_FILE not in meta["files"]):
        return None
    for name, entry in meta["files"].items():
        path = target / name
        try:
            if path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
                return None
        except (OSError, KeyError, TypeError):
            return None
    return meta


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write(directory: Path, rows: np.ndarray, with_index: bool, ann_options: dict) -> None:
    tmp = directory / f".{SERVING_DIR}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        np.save(tmp / ITEMS_FILE, np.ascontiguousarray(rows, dtype=np.float32))
        meta: dict = {"format": FORMAT, "n_items": int(len(rows)), "files": {}}
        if with_index:
            _build_index_elsewhere(tmp / ITEMS_FILE, tmp / INDEX_FILE, ann_options)
            meta["index"] = {"library": "usearch", "metric": "l2sq", **ann_options}
        for name in (ITEMS_FILE, INDEX_FILE):
            path = tmp / name
            if path.exists():
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
                meta["files"][name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
        with open(tmp / META_FILE, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        target = directory / SERVING_DIR
        if target.exists():  # stale or partial: replaced (mapped files stay valid)
            old = directory / f".{SERVING_DIR}.old-{secrets.token_hex(4)}"
            os.rename(target, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_index_elsewhere(items: Path, out: Path, ann_options: dict) -> None:
    """Build and save the index of the rows in ``items`` in a child process.

    usearch holds the GIL while it adds vectors: built in a worker's reloader thread,
    the index would stall that worker's requests for the whole build (and a busy
    request thread would starve the build), so another process builds it.
    """
    command = [sys.executable, "-m", __name__, str(items), str(out), json.dumps(ann_options)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or "").strip().splitlines()[-3:]
        raise RuntimeError(f"building the index of {items} failed: {' / '.join(tail)}")


def load_or_build(
    directory: str | os.PathLike | None,
    rows_of_model,
    n_items: int,
    *,
    with_index: bool,
    ann_options: dict | None = None,
) -> ServingFiles:
    """The serving files of the artifact in ``directory``, built first if needed.

    ``rows_of_model()`` computes the item rows (only called to build); ``directory``
    None (a remote model store) builds everything in this process's memory.
    """
    ann_options = dict(ann_options or {})
    if directory is None:
        started = time.perf_counter()
        rows = rows_of_model()
        index = AnnIndex.build(rows, **ann_options) if with_index else None
        return ServingFiles(rows, index, time.perf_counter() - started, None)
    directory = Path(directory)
    target = directory / SERVING_DIR
    built = 0.0
    if _valid(target, n_items, with_index) is None:
        with _locked(directory / LOCK_FILE):
            if _valid(target, n_items, with_index) is None:  # nobody built it meanwhile
                started = time.perf_counter()
                _write(directory, rows_of_model(), with_index, ann_options)
                built = time.perf_counter() - started
    items = np.load(target / ITEMS_FILE, mmap_mode="r", allow_pickle=False)
    index = AnnIndex.load(items, target / INDEX_FILE) if with_index else None
    return ServingFiles(items, index, built, target)


if __name__ == "__main__":  # the child process of _build_index_elsewhere
    items_path, index_path, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    mapped = np.load(items_path, mmap_mode="r", allow_pickle=False)
    AnnIndex.build(mapped, **options).save(index_path)
