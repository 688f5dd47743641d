"""Pickle-free model artifacts: a directory with ``manifest.json`` and ``.npz`` arrays.

Layout of an artifact directory::

    manifest.json    version, created time, hyperparameters, sizes, library versions,
                     sha256 and size of every array file, metrics
    model.npz        what serving needs: embeddings, biases, feature matrices, ids
    optimizer.npz    Adagrad/Adadelta accumulators, only for warm-start training
    blend.npz        the blend's item-item (EASE) weights and statistics, when the model
                     has a blend (manifest ``"blend"``: its own format number and
                     parameters); an artifact without it is served by LightFM alone

Every ``.npz`` is read with ``allow_pickle=False``; ids are stored as unicode arrays.

``model.npz`` is an uncompressed zip whose members start on 64-byte boundaries, so a
serving load (``with_optimizer=False``) **maps** every array read-only from the file
instead of copying it: N workers on one machine share one copy of the embeddings,
feature matrices and ids in the page cache. Artifacts written before (unaligned members)
are mapped too; a compressed or object member is read with ``np.load`` as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import secrets
import struct
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import HybridrecError
from ..model.features import FeatureSpace
from ..model.hybrid import HybridLightFM
from ..model.idmap import IdMap, sort_order

__all__ = [
    "ArtifactError",
    "BLEND_FILE",
    "BLEND_FORMAT",
    "FORMAT_VERSION",
    "file_sha256",
    "load_model",
    "new_version_id",
    "read_manifest",
    "save_model",
    "verify_artifact",
]

FORMAT_VERSION = 1
_SIZE_KEYS = ("no_components", "n_users", "n_items", "n_user_features", "n_item_features")
MANIFEST = "manifest.json"
MODEL_FILE = "model.npz"
OPTIMIZER_FILE = "optimizer.npz"
BLEND_FILE = "blend.npz"
BLEND_FORMAT = 1  # the manifest's "blend" entry and blend.npz's arrays

# optimizer accumulator -> the parameter array whose shape it shares
_OPTIMIZER_KEYS = {
    f"{side}_{part}_{kind}": f"{side}_{'embeddings' if part == 'embedding' else 'biases'}"
    for side in ("user", "item")
    for part in ("embedding", "bias")
    for kind in ("gradients", "momentum")
}


class ArtifactError(HybridrecError):
    """An artifact is missing, corrupt, tampered with or incompatible."""


def new_version_id() -> str:
    """A sortable, unique version id such as ``20261127T114500Z-3fa9c1``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("hybridrec", "rectools-lightfm", "numpy", "scipy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "unknown"
    return out


def _csr_arrays(prefix: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_data": m.data.astype(np.float32),
        f"{prefix}_indices": m.indices.astype(np.int32),
        f"{prefix}_indptr": m.indptr.astype(np.int64),
        f"{prefix}_shape": np.asarray(m.shape, dtype=np.int64),
    }


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def save_model(
    model: HybridLightFM,
    directory: str | os.PathLike,
    *,
    version: str | None = None,
    metrics: dict | None = None,
    extra: dict | None = None,
) -> dict[str, Any]:
    """Write ``model`` as an artifact into ``directory`` (created); return the manifest.

    Files are fsynced; the manifest is written last, so a directory without a manifest is
    never a whole artifact.
    """
    model._check_fitted()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "user_embeddings": model.user_embeddings,
        "user_biases": model.user_biases,
        "item_embeddings": model.item_embeddings,
        "item_biases": model.item_biases,
        "popularity": model.popularity_,
        "user_ids": model.user_space_.entities.as_array(),
        "item_ids": model.item_space_.entities.as_array(),
        # the permutations that sort the ids: serving looks ids up by binary search in
        # the mapped arrays instead of building per-worker dicts (IdMap.sorted)
        "user_ids_order": sort_order(model.user_space_.entities.as_array()),
        "item_ids_order": sort_order(model.item_space_.entities.as_array()),
        "user_vocabulary": model.user_space_.vocabulary.as_array(),
        "item_vocabulary": model.item_space_.vocabulary.as_array(),
        **_csr_arrays("user_matrix", model.user_matrix_),
        **_csr_arrays("item_matrix", model.item_matrix_),
        **_csr_arrays("interactions", model.interactions_.tocsr()),
    }
    _savez_aligned(out / MODEL_FILE, arrays)
    with open(out / OPTIMIZER_FILE, "wb") as fh:
        np.savez(fh, **{k: getattr(model, k) for k in _OPTIMIZER_KEYS})
        fh.flush()
        os.fsync(fh.fileno())
    blend = _save_blend(model, out)
    manifest = {
        "format_version": FORMAT_VERSION,
        "version": version or new_version_id(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hyperparameters": model.get_params(),
        "sizes": {
            "no_components": int(model.no_components),
            "n_users": len(model.user_space_.entities),
            "n_items": len(model.item_space_.entities),
            "n_user_features": len(model.user_space_.vocabulary),
            "n_item_features": len(model.item_space_.vocabulary),
            "n_interactions": int(model.interactions_.nnz),
        },
        "epoch_seconds": [round(s, 4) for s in getattr(model, "epoch_seconds_", [])],
        "libraries": _library_versions(),
        "files": {
            name: {"sha256": file_sha256(out / name), "bytes": (out / name).stat().st_size}
            for name in (MODEL_FILE, OPTIMIZER_FILE) + ((BLEND_FILE,) if blend.get("file") else ())
        },
        **({"blend": blend} if blend else {}),
        "metrics": metrics or {},
        **({"extra": extra} if extra else {}),
    }
    _fsync_write(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return manifest


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed manifest of an artifact, checked for the fields loading needs."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no manifest; this is not a (whole) artifact") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: manifest must be a JSON object")
    fmt = manifest.get("format_version")
    if fmt != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format {fmt!r} is not supported by this hybridrec "
            f"(reads format {FORMAT_VERSION}); retrain or use a matching hybridrec version"
        )
    for key in ("version", "hyperparameters", "sizes", "files"):
        if key not in manifest:
            raise ArtifactError(f"{path}: manifest lacks {key!r}")
    for key in ("hyperparameters", "sizes", "files"):
        if not isinstance(manifest[key], dict):
            raise ArtifactError(f"{path}: manifest {key!r} must be a JSON object")
    for key in _SIZE_KEYS:
        value = manifest["sizes"].get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ArtifactError(f"{path}: manifest sizes lack a count {key!r} (got {value!r})")
    for name, entry in manifest["files"].items():
        if not isinstance(entry, dict):
            raise ArtifactError(f"{path}: manifest entry for {name!r} must be a JSON object")
    return manifest


def verify_artifact(directory: str | os.PathLike, *, with_optimizer: bool = False) -> dict:
    """Check every file's size and sha256 against the manifest; return the manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    names = [MODEL_FILE] + ([OPTIMIZER_FILE] if with_optimizer else [])
    if (manifest.get("blend") or {}).get("file"):
        names.append(BLEND_FILE)
    for name in names:
        entry = manifest["files"].get(name)
        path = directory / name
        if entry is None:
            raise ArtifactError(f"{path}: not listed in the manifest")
        if not path.exists():
            raise ArtifactError(f"{path}: file is missing")
        size = path.stat().st_size
        if size != entry.get("bytes"):
            raise ArtifactError(
                f"{path}: {size} bytes, manifest says {entry.get('bytes')} (truncated or replaced)"
            )
        if file_sha256(path) != entry.get("sha256"):
            raise ArtifactError(f"{path}: sha256 does not match the manifest (corrupt or tampered)")
    return manifest


_ALIGN = 64
_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field
_PAD_FIELD = 0x6878  # a private zip extra-field id ("hx"): padding readers skip


def _savez_aligned(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` (uncompressed, loadable by ``np.load``) with each array's data on a
    64-byte boundary of the file, so that it can be memory-mapped; fsynced."""
    with open(path, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
            payload = buf.getbuffer()
            header = len(payload) - np.asanyarray(value).nbytes
            name = f"{key}.npy"
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = len(payload)
            zip64 = len(payload) * 1.05 > zipfile.ZIP64_LIMIT
            start = fh.tell() + _LOCAL_HEADER + len(name.encode()) + 4 + (20 if zip64 else 0)
            pad = -(start + header) % _ALIGN
            info.extra = struct.pack("<HH", _PAD_FIELD, pad) + b"\0" * pad
            with zf.open(info, "w", force_zip64=zip64) as member:
                member.write(payload)
        zf.close()
        fh.flush()
        os.fsync(fh.fileno())


def _map_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an npz, memory-mapped read-only where the member is stored
    uncompressed (the others read with ``np.load``); never unpickles."""
    try:
        out: dict[str, np.ndarray] = {}
        unmapped: list[str] = []
        with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
            for info in zf.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                mapped = None
                if info.compress_type == zipfile.ZIP_STORED:
                    mapped = _map_member(path, fh, info)
                if mapped is None:
                    unmapped.append(key)
                else:
                    out[key] = mapped
        if unmapped:
            with np.load(path, allow_pickle=False) as npz:
                for key in unmapped:
                    out[key] = npz[key]
        return out
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        raise ArtifactError(f"{path}: cannot read arrays ({exc})") from None


def _map_member(path: Path, fh, info: zipfile.ZipInfo) -> np.ndarray | None:
    fh.seek(info.header_offset)
    local = fh.read(_LOCAL_HEADER)
    if len(local) < _LOCAL_HEADER or local[:4] != b"PK\x03\x04":
        raise ValueError(f"bad zip member header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    fh.seek(info.header_offset + _LOCAL_HEADER + name_len + extra_len)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        return None
    if dtype.hasobject or int(np.prod(shape)) == 0:
        return None  # np.load refuses objects (allow_pickle=False) and reads empties
    offset = fh.tell()
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if offset + nbytes > os.path.getsize(path):
        raise ValueError(f"{info.filename} is truncated")
    return np.memmap(path, dtype, "r", offset, shape, "F" if fortran else "C")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ArtifactError(f"{path}: cannot read arrays ({exc})") from None


def _f32(a: np.ndarray) -> np.ndarray:
    """``a`` as float32, without a copy (a mapped array stays mapped) when it is one."""
    return a if a.dtype == np.float32 else a.astype(np.float32)


def _need(arrays: dict, path: Path, key: str) -> np.ndarray:
    if key not in arrays:
        raise ArtifactError(f"{path}: array {key!r} is missing")
    return arrays[key]


def _csr(arrays: dict, path: Path, prefix: str) -> sp.csr_matrix:
    shape = tuple(int(x) for x in _need(arrays, path, f"{prefix}_shape"))
    try:
        return sp.csr_matrix(
            (
                _need(arrays, path, f"{prefix}_data"),
                _need(arrays, path, f"{prefix}_indices"),
                _need(arrays, path, f"{prefix}_indptr"),
            ),
            shape=shape,
        )
    except ValueError as exc:
        raise ArtifactError(f"{path}: sparse matrix {prefix!r} is inconsistent ({exc})") from None


def _entity_map(arrays: dict, path: Path, key: str, want: int, label: str) -> IdMap:
    """The sorted-layout id map over the (mapped) ids and their stored sort order
    (computed for artifacts written before the order was stored)."""
    ids = _need(arrays, path, key)
    if len(ids) != want:
        raise ArtifactError(f"{path}: manifest says {want} {label}, arrays have {len(ids)}")
    try:
        return IdMap.sorted(ids, arrays.get(f"{key}_order"))
    except ValueError as exc:
        raise ArtifactError(f"{path}: {key}: {exc}") from None


def load_model(
    directory: str | os.PathLike, *, with_optimizer: bool = False, verify: bool = True
) -> HybridLightFM:
    """Load an artifact written by :func:`save_model`.

    Without the optimizer (serving) the arrays are memory-mapped read-only from
    ``model.npz``; with it (training goes on, arrays are updated in place) they are read
    into memory. Raises :class:`ArtifactError` naming the file and the problem for a
    missing, corrupt, truncated, tampered or incompatible artifact.
    """
    directory = Path(directory)
    manifest = (
        verify_artifact(directory, with_optimizer=with_optimizer)
        if verify
        else read_manifest(directory)
    )
    path = directory / MODEL_FILE
    a = _load_npz(path) if with_optimizer else _map_npz(path)
    hp = dict(manifest["hyperparameters"])
    sizes = manifest["sizes"]
    try:
        model = HybridLightFM(**hp)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ArtifactError(f"{directory / MANIFEST}: bad hyperparameters ({exc})") from None
    if model.no_components != sizes["no_components"]:
        raise ArtifactError(
            f"{directory / MANIFEST}: hyperparameters say {model.no_components} components, "
            f"sizes say {sizes['no_components']}"
        )

    user_emb = _need(a, path, "user_embeddings")
    item_emb = _need(a, path, "item_embeddings")
    d = int(sizes["no_components"])
    for name, arr in (("user_embeddings", user_emb), ("item_embeddings", item_emb)):
        if arr.ndim != 2 or arr.shape[1] != d:
            raise ArtifactError(
                f"{path}: model was trained with {d} components, {name} has shape {arr.shape}"
            )
    user_ids = _entity_map(a, path, "user_ids", sizes["n_users"], "users")
    item_ids = _entity_map(a, path, "item_ids", sizes["n_items"], "items")
    user_vocab = IdMap.from_values(_need(a, path, "user_vocabulary").tolist())
    item_vocab = IdMap.from_values(_need(a, path, "item_vocabulary").tolist())
    for label, got, want in (
        ("users", len(user_ids), sizes["n_users"]),
        ("items", len(item_ids), sizes["n_items"]),
        ("user features", len(user_vocab), sizes["n_user_features"]),
        ("item features", len(item_vocab), sizes["n_item_features"]),
    ):
        if got != want:
            raise ArtifactError(f"{path}: manifest says {want} {label}, arrays have {got}")
    model.user_space_ = FeatureSpace(
        user_ids, user_vocab, model.user_indicators, model.user_feature_weight, model.normalize
    )
    model.item_space_ = FeatureSpace(
        item_ids, item_vocab, model.item_indicators, model.item_feature_weight, model.normalize
    )
    for side, space, emb in (
        ("user", model.user_space_, user_emb),
        ("item", model.item_space_, item_emb),
    ):
        if emb.shape[0] != space.n_columns:
            raise ArtifactError(
                f"{path}: {side} embeddings have {emb.shape[0]} rows, the id maps and "
                f"vocabulary need {space.n_columns}"
            )
    model.user_embeddings = _f32(user_emb)
    model.item_embeddings = _f32(item_emb)
    model.user_biases = _f32(_need(a, path, "user_biases"))
    model.item_biases = _f32(_need(a, path, "item_biases"))
    for side, emb in (("user", model.user_embeddings), ("item", model.item_embeddings)):
        biases = getattr(model, f"{side}_biases")
        if biases.shape != (emb.shape[0],):
            raise ArtifactError(
                f"{path}: {side}_biases has shape {biases.shape}, {side} embeddings need "
                f"({emb.shape[0]},)"
            )
    model.popularity_ = _f32(_need(a, path, "popularity"))
    model.user_matrix_ = _csr(a, path, "user_matrix")
    model.item_matrix_ = _csr(a, path, "item_matrix")
    model.interactions_ = _csr(a, path, "interactions")
    if model.user_matrix_.shape != (len(user_ids), model.user_space_.n_columns) or (
        model.item_matrix_.shape != (len(item_ids), model.item_space_.n_columns)
    ):
        raise ArtifactError(f"{path}: feature matrices do not match the id maps")
    if model.popularity_.shape != (len(item_ids),):
        raise ArtifactError(f"{path}: popularity has {model.popularity_.size} entries")
    model._sample_weight = None
    model.epoch_seconds_ = list(manifest.get("epoch_seconds", []))
    model.manifest_ = manifest
    _load_blend(model, directory, manifest, mapped=not with_optimizer)
    if with_optimizer:
        opath = directory / OPTIMIZER_FILE
        o = _load_npz(opath)
        for key in _OPTIMIZER_KEYS:
            arr = _need(o, opath, key)
            ref = getattr(model, _OPTIMIZER_KEYS[key])
            if arr.shape != ref.shape:
                raise ArtifactError(f"{opath}: {key} has shape {arr.shape}, expected {ref.shape}")
            setattr(model, key, arr.astype(np.float32))
    else:
        for key in _OPTIMIZER_KEYS:
            setattr(model, key, None)
    return model


def _save_blend(model: HybridLightFM, out: Path) -> dict:
    """Write ``blend.npz`` for a model with a blend; the manifest's ``"blend"`` entry
    (``{}`` for a model without blend parameters: an older or a hand-made model)."""
    params = getattr(model, "blend_params_", None)
    if params is None:
        return {}
    entry = {"format": BLEND_FORMAT, "params": dict(params), "file": None}
    blend, item_item = getattr(model, "blend_", None), getattr(model, "item_item_", None)
    if blend is None or item_item is None:
        return entry  # turned off (item_item_weight 0): LightFM alone
    W = item_item.weights_
    arrays = {
        "item_item_data": W.data.astype(np.float32),
        "item_item_indices": W.indices.astype(np.int32),
        "item_item_indptr": W.indptr.astype(np.int64),
        "item_item_items": item_item.items_.astype(np.int64),
        "factor_mean": blend.factor_mean_.astype(np.float64),
        "factor_cov": blend.factor_cov_.astype(np.float64),
        "popularity_quantiles": (
            np.zeros(0) if blend.popularity_ is None else blend.popularity_.astype(np.float64)
        ),
    }
    _savez_aligned(out / BLEND_FILE, arrays)
    entry.update(
        file=BLEND_FILE,
        covered_items=int(item_item.items_.size),
        weights=int(W.nnz),
        serving_bytes=int(item_item.nbytes),
    )
    return entry


def _load_blend(model: HybridLightFM, directory: Path, manifest: dict, *, mapped: bool) -> None:
    """Set ``blend_``, ``item_item_`` (None without a blend: LightFM alone) and
    ``blend_params_`` (None for an artifact written before blends) from an artifact."""
    from ..model.blend import Blend, check_blend_params
    from ..model.itemitem import ItemItem

    model.blend_, model.item_item_, model.blend_params_ = None, None, None
    entry = manifest.get("blend")
    if entry is None:
        return
    where = directory / MANIFEST
    if not isinstance(entry, dict) or entry.get("format") != BLEND_FORMAT:
        fmt = entry.get("format") if isinstance(entry, dict) else entry
        raise ArtifactError(
            f"{where}: blend format {fmt!r} is not supported by this hybridrec (reads format "
            f"{BLEND_FORMAT}); retrain or use a matching hybridrec version"
        )
    try:
        params = check_blend_params(entry.get("params") or {})
    except ValueError as exc:
        raise ArtifactError(f"{where}: bad blend parameters ({exc})") from None
    model.blend_params_ = params
    if not entry.get("file"):
        return
    path = directory / BLEND_FILE
    a = _map_npz(path) if mapped else _load_npz(path)
    n_items = len(model.item_space_.entities)
    try:
        m = _need(a, path, "item_item_items").size
        weights = sp.csr_matrix(
            (
                _need(a, path, "item_item_data"),
                _need(a, path, "item_item_indices"),
                _need(a, path, "item_item_indptr"),
            ),
            shape=(m, m),
        )
        model.item_item_ = ItemItem.from_arrays(
            weights,
            _need(a, path, "item_item_items"),
            n_items,
            l2=params["item_item_l2"],
            max_neighbors=params["item_item_neighbors"],
            max_items=params["item_item_max_items"],
        )
        popularity = _need(a, path, "popularity_quantiles")
        if popularity.size not in (0, n_items):
            raise ValueError(f"{popularity.size} popularity quantiles for {n_items} items")
        model.blend_ = Blend.from_arrays(
            _need(a, path, "factor_mean"),
            _need(a, path, "factor_cov"),
            popularity if popularity.size else None,
            weight=params["item_item_weight"],
            popularity_weight=params["popularity_weight"],
        )
        if model.blend_.factor_mean_.shape != (model.no_components + 2,):
            raise ValueError(
                f"factor mean has shape {model.blend_.factor_mean_.shape}, the model needs "
                f"({model.no_components + 2},)"
            )
    except ValueError as exc:
        raise ArtifactError(f"{path}: the blend is inconsistent ({exc})") from None
