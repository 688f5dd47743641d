"""The model store: versioned artifacts under one root, written so that none is ever half there.

Layout under the root (a local directory, or any ``fsspec`` URL such as ``s3://bucket/x``)::

    <version>/manifest.json, model.npz, optimizer.npz   one artifact (see artifact.py)
    <version>/reports/<name>                            reports written beside it
    .tmp-<version>-<random>/                            an artifact being written (local)
    .tmp-<version>-<random>.lock                        held (flock) by its live writer

Locally an artifact is written under ``.tmp-...``, its files and directory fsynced, then
renamed to ``<version>`` (atomic) and verified against its checksums. The writer holds
an exclusive ``flock`` on the ``.lock`` beside its directory from before the directory
exists until after the rename; the kernel drops it when the writer dies, however it
dies, so each write first removes the ``.tmp-*`` of dead writers (and never one that a
live writer holds). On an object store,
where there is no rename, the array files are uploaded first and the manifest last; a
version is whole only once its manifest exists, so a crash leaves something that
:meth:`ModelStore.versions` ignores. Either way the registry pointer moves only after that.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import HybridrecError
from .artifact import (
    BLEND_FILE,
    MANIFEST,
    MODEL_FILE,
    OPTIMIZER_FILE,
    ArtifactError,
    load_model,
    new_version_id,
    read_manifest,
    save_model,
    verify_artifact,
)

__all__ = ["ModelStore"]

TMP_PREFIX = ".tmp-"
LOCK_SUFFIX = ".lock"
REPORTS = "reports"
log = logging.getLogger("hybridrec.modelstore")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise HybridrecError(
            f"{what} {name!r} is not a valid name: use letters, digits, '.', '_' and '-' "
            "(at most 128, not starting with '.')"
        )
    return name


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(dirpath))


class ModelStore:
    """Artifacts by version under ``root`` (a path or an fsspec URL).

    Versions are the names of whole artifacts; ``write`` returns the manifest of the new
    one. Nothing here knows which version is current: that is the registry's job.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        self._fs: Any = None
        if "://" in self.root and not self.root.startswith("file://"):
            self._fs = _filesystem(self.root)
            self.root = self.root.rstrip("/")
        elif self.root.startswith("file://"):
            self.root = self.root[len("file://") :]

    def __repr__(self) -> str:
        return f"ModelStore({self.root!r})"

    @property
    def is_local(self) -> bool:
        return self._fs is None

    # -- paths --------------------------------------------------------------------------

    def path(self, version: str) -> str:
        """Where the artifact of ``version`` lives (it may not exist)."""
        _check_name(version, "version")
        return str(Path(self.root) / version) if self.is_local else f"{self.root}/{version}"

    def exists(self, version: str) -> bool:
        """True if ``version`` is a whole artifact (its manifest exists)."""
        if self.is_local:
            return (Path(self.path(version)) / MANIFEST).is_file()
        return bool(self._fs.exists(f"{self.path(version)}/{MANIFEST}"))

    def versions(self) -> list[str]:
        """Whole artifacts, sorted by name (version ids sort by creation time)."""
        if self.is_local:
            root = Path(self.root)
            if not root.is_dir():
                return []
            names = [p.name for p in root.iterdir() if p.is_dir()]
        else:
            if not self._fs.exists(self.root):
                return []
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self._fs.ls(self.root, detail=False)]
        return sorted(n for n in names if _SAFE_NAME.fullmatch(n) and self.exists(n))

    def manifest(self, version: str) -> dict[str, Any]:
        """The manifest of ``version``; :class:`ArtifactError` if it is not a whole artifact."""
        self._require(version)
        if self.is_local:
            return read_manifest(self.path(version))
        with tempfile.TemporaryDirectory(prefix="hybridrec-") as tmp:
            self._fs.get_file(f"{self.path(version)}/{MANIFEST}", str(Path(tmp) / MANIFEST))
            return read_manifest(tmp)

    def _require(self, version: str) -> None:
        if not self.exists(version):
            known = self.versions()
            hint = f"known versions: {', '.join(known[-5:])}" if known else "the store is empty"
            raise ArtifactError(f"no model version {version!r} in {self.root} ({hint})")

    # -- write / read -------------------------------------------------------------------

    def write(
        self,
        model: Any,
        metrics: dict | None = None,
        extra: dict | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """Write ``model`` as a new, verified artifact; return its manifest.

        Raises :class:`ArtifactError` if ``version`` exists already. On any failure no
        version appears; a local writer killed midway leaves a ``.tmp-*`` that the next
        write removes (see :meth:`clean_tmp`).
        """
        version = _check_name(new_version_id() if version is None else version, "version")
        if self.exists(version):
            raise ArtifactError(f"model version {version!r} already exists in {self.root}")
        if not self.is_local:
            return self._write_remote(model, metrics, extra, version)
        root = Path(self.root)
        root.mkdir(parents=True, exist_ok=True)
        removed = self.clean_tmp()
        if removed:
            log.info("removed %d temporary directories of dead writers: %s", len(removed), removed)
        tmp = root / f"{TMP_PREFIX}{version}-{secrets.token_hex(4)}"
        lock = Path(f"{tmp}{LOCK_SUFFIX}")
        with open(lock, "wb") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # before the directory exists
            try:
                save_model(model, tmp, version=version, metrics=metrics, extra=extra)
                _fsync_tree(tmp)
                self._publish_dir(tmp, root / version)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            finally:
                lock.unlink(missing_ok=True)
        return verify_artifact(root / version, with_optimizer=True)

    def _publish_dir(self, tmp: Path, final: Path) -> None:
        """Rename a fully written ``tmp`` to ``final`` (atomic), then sync the parent."""
        try:
            os.rename(tmp, final)  # fails if final exists and is not empty
        except OSError as exc:
            raise ArtifactError(f"cannot publish {final}: {exc.strerror or exc}") from None
        _fsync_dir(final.parent)

    def _write_remote(
        self, model: Any, metrics: dict | None, extra: dict | None, version: str
    ) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="hybridrec-") as tmp:
            save_model(model, tmp, version=version, metrics=metrics, extra=extra)
            verify_artifact(tmp, with_optimizer=True)
            target = self.path(version)
            for name in (MODEL_FILE, OPTIMIZER_FILE, BLEND_FILE, MANIFEST):  # manifest last
                if (Path(tmp) / name).exists():  # blend.npz: models with a blend only
                    self._fs.put_file(str(Path(tmp) / name), f"{target}/{name}")
        return self.verify(version, with_optimizer=True)

    def verify(self, version: str, with_optimizer: bool = False) -> dict[str, Any]:
        """Check the artifact's files against its manifest's checksums; return the manifest."""
        self._require(version)
        if self.is_local:
            return verify_artifact(self.path(version), with_optimizer=with_optimizer)
        with self._local_copy(version, with_optimizer) as local:
            return verify_artifact(local, with_optimizer=with_optimizer)

    def load(self, version: str, with_optimizer: bool = False) -> Any:
        """The model of ``version`` (a ``HybridLightFM``), checksums verified."""
        self._require(version)
        if self.is_local:
            return load_model(self.path(version), with_optimizer=with_optimizer)
        with self._local_copy(version, with_optimizer) as local:
            return load_model(local, with_optimizer=with_optimizer)

    @contextlib.contextmanager
    def _local_copy(self, version: str, with_optimizer: bool) -> Iterator[str]:
        """A temporary local directory holding the files of a remote artifact."""
        names = [MANIFEST, MODEL_FILE, BLEND_FILE] + ([OPTIMIZER_FILE] if with_optimizer else [])
        with tempfile.TemporaryDirectory(prefix="hybridrec-") as tmp:
            for name in names:
                src = f"{self.path(version)}/{name}"
                if self._fs.exists(src):  # a missing file is reported by verify_artifact
                    self._fs.get_file(src, str(Path(tmp) / name))
            yield tmp

    # -- reports ------------------------------------------------------------------------

    def write_report(self, version: str, name: str, data: bytes | str | dict | list) -> str:
        """Write a report (``dict``/``list`` as JSON, ``str`` as UTF-8) beside ``version``.

        Replaces a report of the same name atomically; returns its path.
        """
        self._require(version)
        _check_name(name, "report name")
        if isinstance(data, (dict, list)):
            payload = json.dumps(data, indent=2, sort_keys=True).encode()
        elif isinstance(data, str):
            payload = data.encode()
        elif isinstance(data, (bytes, bytearray, memoryview)):
            payload = bytes(data)
        else:
            raise TypeError(f"a report is bytes, str, dict or list, not {type(data).__name__}")
        if not self.is_local:
            target = f"{self.path(version)}/{REPORTS}/{name}"
            self._fs.pipe_file(target, payload)
            return target
        directory = Path(self.path(version)) / REPORTS
        directory.mkdir(exist_ok=True)
        tmp = directory / f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}"
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / name)
        _fsync_dir(directory)
        return str(directory / name)

    def reports(self, version: str) -> list[str]:
        """Names of the reports of ``version``, sorted."""
        self._require(version)
        if self.is_local:
            directory = Path(self.path(version)) / REPORTS
            names = [p.name for p in directory.iterdir()] if directory.is_dir() else []
        else:
            directory = f"{self.path(version)}/{REPORTS}"
            names = (
                [p.rstrip("/").rsplit("/", 1)[-1] for p in self._fs.ls(directory, detail=False)]
                if self._fs.exists(directory)
                else []
            )
        return sorted(n for n in names if not n.startswith(TMP_PREFIX))

    def read_report(self, version: str, name: str) -> bytes:
        """The bytes of one report; :class:`ArtifactError` if there is none."""
        _check_name(name, "report name")
        path = f"{self.path(version)}/{REPORTS}/{name}"
        try:
            if self.is_local:
                return Path(path).read_bytes()
            return bytes(self._fs.cat_file(path))
        except FileNotFoundError:
            raise ArtifactError(f"model version {version!r} has no report {name!r}") from None

    # -- housekeeping -------------------------------------------------------------------

    def clean_tmp(self, older_than: float = 3600.0) -> list[str]:
        """Remove the ``.tmp-*`` directories of dead writers; return their names.

        A directory whose ``.lock`` no process holds is stale at once (its writer died);
        one without a ``.lock`` (an older release's writer) once older than
        ``older_than`` seconds. A live writer's directory is never touched.
        """
        root = Path(self.root)
        if not self.is_local or not root.is_dir():
            return []
        removed = []
        cutoff = time.time() - older_than
        for p in root.iterdir():
            if not p.name.startswith(TMP_PREFIX) or p.name.endswith(LOCK_SUFFIX):
                continue
            lock = Path(f"{p}{LOCK_SUFFIX}")
            try:
                if not lock.exists():
                    if p.lstat().st_mtime < cutoff:
                        _remove(p)
                        removed.append(p.name)
                    continue
                with open(lock, "rb") as fh:
                    try:
                        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live writer
                    _remove(p)
                    lock.unlink(missing_ok=True)
                    removed.append(p.name)
            except FileNotFoundError:  # finished or removed meanwhile
                continue
        for lock in root.glob(f"{TMP_PREFIX}*{LOCK_SUFFIX}"):  # a writer killed after rename
            if not Path(str(lock)[: -len(LOCK_SUFFIX)]).exists():
                try:
                    with open(lock, "rb") as fh:
                        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        lock.unlink(missing_ok=True)
                except (BlockingIOError, FileNotFoundError):
                    continue
        return sorted(removed)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _filesystem(url: str) -> Any:
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec is a dependency
        raise HybridrecError(f"{url}: a URL model store needs fsspec: pip install fsspec") from None
    try:
        fs, _path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise HybridrecError(f"model store {url}: {exc}") from None
    return fs
