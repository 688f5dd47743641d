"""Serving files saved with a model version, built once and mapped by every worker.

Beside an artifact (``<version>/``), the first worker that loads the version writes::

    serving/serving.json   format, sha256 and size of each file, index parameters
    serving/items.npy      item rows [q_i, b_i, 1], float32 (n, d + 2), uncompressed
    serving/ivf_*.npy      the clusters of those rows (large catalogs; the default index)
    serving/items.usearch  or the HNSW graph over them (``ann_options["library"]``)

under an exclusive lock (``<version>/.serving.lock``): other workers wait, then load.
The index is built in a child process with every core (usearch holds the GIL while it
adds vectors; the clustering's BLAS would be pinned to one thread in a worker).
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
from .ivf import IVF_FILES, ClusterIndex

__all__ = ["DEFAULT_LIBRARY", "SERVING_DIR", "ServingFiles", "load_or_build"]

SERVING_DIR = "serving"
ITEMS_FILE = "items.npy"
INDEX_FILE = "items.usearch"
META_FILE = "serving.json"
LOCK_FILE = ".serving.lock"
FORMAT = 1
DEFAULT_LIBRARY = "ivf"  # chosen over "usearch" by bench_serving/bench_ann (README)
_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_LIBRARIES = {"ivf": (ClusterIndex, IVF_FILES), "usearch": (AnnIndex, (INDEX_FILE,))}


@dataclass(frozen=True)
class ServingFiles:
    """Mapped item rows, the loaded index (or None) and how long the build took
    (0.0 when the files were already there)."""

    items: np.ndarray
    index: AnnIndex | ClusterIndex | None
    build_seconds: float
    directory: Path | None


def _library(ann_options: dict) -> tuple[str, dict]:
    """``(library, its build options)`` of ``ann_options``; ValueError when unknown."""
    options = dict(ann_options)
    library = options.pop("library", DEFAULT_LIBRARY)
    if library not in _LIBRARIES:
        raise ValueError(f"unknown index library {library!r}: one of {sorted(_LIBRARIES)}")
    return library, options


def _valid(target: Path, n_items: int, library: str | None) -> dict | None:
    """The metadata of a whole, verified set of files, or None."""
    try:
        meta = json.loads((target / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return None
    if meta.get("n_items") != n_items:
        return None
    if library is not None and not all(f in meta["files"] for f in _LIBRARIES[library][1]):
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


def _write(directory: Path, rows: np.ndarray, library: str | None, ann_options: dict) -> None:
    tmp = directory / f".{SERVING_DIR}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        np.save(tmp / ITEMS_FILE, np.ascontiguousarray(rows, dtype=np.float32))
        meta: dict = {"format": FORMAT, "n_items": int(len(rows)), "files": {}}
        if library is not None:
            _build_index_elsewhere(tmp / ITEMS_FILE, tmp, library, ann_options)
            meta["index"] = {"library": library, **ann_options}
        for name in (ITEMS_FILE, INDEX_FILE, *IVF_FILES):
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


def _build_index_elsewhere(items: Path, out: Path, library: str, ann_options: dict) -> None:
    """Build and save (into directory ``out``) the index of the rows in ``items`` in a
    child process that may use every core.

    usearch holds the GIL while it adds vectors: built in a worker's reloader thread,
    the index would stall that worker's requests for the whole build (and a busy
    request thread would starve the build), so another process builds it; the same
    goes for the clustering, whose BLAS products a worker pins to one thread.
    """
    options = json.dumps(ann_options)
    command = [sys.executable, "-m", __name__, str(items), str(out), library, options]
    cores = str(os.cpu_count() or 1)
    env = {**os.environ, **{k: cores for k in _BLAS_THREADS}}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
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
    ``ann_options``: ``library`` (``"ivf"``, the default, or ``"usearch"``) and that
    index's build options.
    """
    library, options = _library(ann_options or {})
    cls = _LIBRARIES[library][0]
    if directory is None:
        started = time.perf_counter()
        rows = rows_of_model()
        index = cls.build(rows, **options) if with_index else None
        return ServingFiles(rows, index, time.perf_counter() - started, None)
    directory = Path(directory)
    target = directory / SERVING_DIR
    wanted = library if with_index else None
    built = 0.0
    if _valid(target, n_items, wanted) is None:
        with _locked(directory / LOCK_FILE):
            if _valid(target, n_items, wanted) is None:  # nobody built it meanwhile
                started = time.perf_counter()
                _write(directory, rows_of_model(), wanted, options)
                built = time.perf_counter() - started
    items = np.load(target / ITEMS_FILE, mmap_mode="r", allow_pickle=False)
    index = None
    if with_index:
        index = cls.load(items, target / INDEX_FILE if library == "usearch" else target)
    return ServingFiles(items, index, built, target)


def _build_here(items_path: str, out: str, library: str, options: dict) -> None:
    mapped = np.load(items_path, mmap_mode="r", allow_pickle=False)
    index = _LIBRARIES[library][0].build(mapped, **options)
    index.save(Path(out) / INDEX_FILE if library == "usearch" else out)


if __name__ == "__main__":  # the child process of _build_index_elsewhere
    _build_here(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
