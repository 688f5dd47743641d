"""Artifacts: save -> load gives identical answers; every corruption is refused clearly."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lightfm import LightFM

from hybridrec.errors import HybridrecError
from hybridrec.model import HybridLightFM
from hybridrec.modelstore.artifact import (
    FORMAT_VERSION,
    ArtifactError,
    load_model,
    read_manifest,
    save_model,
    verify_artifact,
)

OPTIMIZER_KEYS = [
    f"{side}_{part}_{kind}"
    for side in ("user", "item")
    for part in ("embedding", "bias")
    for kind in ("gradients", "momentum")
]

INTERACTIONS = pd.DataFrame(
    {
        "user_id": ["a", "a", "b", "b", "c", "c", "d", "d", "d"],
        "item_id": ["x", "y", "y", "z", "z", "w", "x", "w", "x"],
        "weight": [1.0, 2.0, 1.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0],
    }
)
USER_FEATURES = {"a": {"young": 1.0, "city": 2.0}, "c": {"old": 1.0}}
ITEM_FEATURES = {
    "x": {"red": 1.0},
    "y": {"red": 1.0, "big": 1.0},
    "z": {"blue": 1.0},
    "w": {"blue": 2.0, "big": 1.0},
}

# (label, user_id, user_features, item_ids, item_features): warm, cold user, cold item
REQUESTS = [
    ("warm user", "a", None, None, None),
    ("warm user, features replaced", "a", {"old": 1.0}, None, None),
    ("warm user without features", "b", None, None, None),
    ("cold user with features", "new", {"young": 1.0, "nope": 1.0}, None, None),
    ("cold user, baseline", "new", None, None, None),
    (
        "cold items",
        "a",
        None,
        ["x", "new-item", "bare-item", "w"],
        {"new-item": {"blue": 1.0, "big": 1.0}, "w": {}},
    ),
    ("cold user, cold items", None, {"city": 1.0}, ["new-item", "z"], {"new-item": {"red": 2.0}}),
]


@pytest.fixture(scope="module")
def model() -> HybridLightFM:
    m = HybridLightFM(no_components=4, epochs=3, random_state=3, item_feature_weight=0.5)
    return m.fit(INTERACTIONS, USER_FEATURES, ITEM_FEATURES)


@pytest.fixture
def artifact(model, tmp_path) -> Path:
    directory = tmp_path / "v1"
    save_model(model, directory, version="v1", metrics={"precision": 0.5})
    return directory


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edit_manifest(directory: Path, change: Callable[[dict], None]) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def replace_npz(directory: Path, name: str, change: Callable[[dict], None], **save_kw) -> None:
    """Rewrite ``name`` with changed arrays and a manifest that vouches for the new file
    (size and sha256 updated), so the check under test is the one after the checksum."""
    path = directory / name
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays, **save_kw)
    path.write_bytes(buf.getvalue())
    revouch(directory, name)


def revouch(directory: Path, name: str) -> None:
    path = directory / name

    def update(manifest):
        manifest["files"][name] = {"sha256": sha256(path), "bytes": path.stat().st_size}

    edit_manifest(directory, update)


def assert_same_predictions(a: HybridLightFM, b: HybridLightFM) -> None:
    for label, uid, ufeats, items, ifeats in REQUESTS:
        pa = a.predict_online(uid, ufeats, items, ifeats)
        pb = b.predict_online(uid, ufeats, items, ifeats)
        assert pa.item_ids == pb.item_ids, label
        assert pa.unscorable == pb.unscorable, label
        assert (pa.strategy, pa.user_case) == (pb.strategy, pb.user_case), label
        assert pa.unknown_user_features == pb.unknown_user_features, label
        assert pa.unknown_item_features == pb.unknown_item_features, label
        np.testing.assert_array_equal(pa.scores, pb.scores, err_msg=label)
    for item in a.item_ids_.external:
        assert a.similar_items(item, k=3) == b.similar_items(item, k=3)
    np.testing.assert_array_equal(a.item_factors(), b.item_factors())
    np.testing.assert_array_equal(a.baseline_scores(), b.baseline_scores())


# -- round trips --------------------------------------------------------------------------


def test_requests_cover_warm_and_cold_cases(model):
    cases = {model.predict_online(u, f, i, fi).user_case for _, u, f, i, fi in REQUESTS}
    assert cases == {"known_with_features", "known", "new_with_features", "unknown"}
    cold = model.predict_online(*REQUESTS[5][1:])
    assert cold.item_ids == ["x", "new-item", "w"] and cold.unscorable == ["bare-item"]


def test_save_then_load_gives_identical_answers(model, artifact):
    loaded = load_model(artifact)
    assert isinstance(loaded, HybridLightFM)
    assert loaded.get_params() == model.get_params()
    assert loaded.user_ids_ == model.user_ids_ and loaded.item_ids_ == model.item_ids_
    assert loaded.user_space_ == model.user_space_
    assert loaded.item_space_ == model.item_space_
    assert_same_predictions(model, loaded)
    np.testing.assert_array_equal(loaded.interactions_.toarray(), model.interactions_.toarray())


def test_manifest_describes_the_artifact(model, artifact):
    manifest = verify_artifact(artifact)
    assert manifest == read_manifest(artifact)
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["version"] == "v1"
    assert manifest["metrics"] == {"precision": 0.5}
    assert manifest["hyperparameters"] == model.get_params()
    assert manifest["sizes"] == {
        "no_components": 4,
        "n_users": 4,
        "n_items": 4,
        "n_user_features": 3,
        "n_item_features": 3,
        "n_interactions": model.interactions_.nnz,
    }
    for name in ("model.npz", "optimizer.npz"):
        entry = manifest["files"][name]
        path = artifact / name
        assert entry == {"sha256": sha256(path), "bytes": path.stat().st_size}
    assert {"python", "numpy", "scipy", "rectools-lightfm"} <= set(manifest["libraries"])
    assert "created_at" in manifest


def test_optimizer_state_round_trips(model, artifact):
    loaded = load_model(artifact, with_optimizer=True)
    for key in OPTIMIZER_KEYS:
        np.testing.assert_array_equal(getattr(loaded, key), getattr(model, key), err_msg=key)
    # With its optimizer state the loaded model is a whole LightFM again.
    users = np.repeat(np.arange(4, dtype=np.int32), 4)
    items = np.tile(np.arange(4, dtype=np.int32), 4)
    kw = dict(user_features=model.user_matrix_, item_features=model.item_matrix_)
    np.testing.assert_array_equal(
        LightFM.predict(loaded, users, items, **kw), LightFM.predict(model, users, items, **kw)
    )


def test_serving_does_not_need_the_optimizer_file(model, artifact):
    (artifact / "optimizer.npz").unlink()
    loaded = load_model(artifact)  # with_optimizer=False is the default
    assert_same_predictions(model, loaded)
    assert all(getattr(loaded, key) is None for key in OPTIMIZER_KEYS)
    with pytest.raises(ArtifactError, match=r"optimizer\.npz: file is missing"):
        load_model(artifact, with_optimizer=True)


def test_a_corrupt_optimizer_file_only_matters_when_asked_for(model, artifact):
    path = artifact / "optimizer.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert_same_predictions(model, load_model(artifact))
    with pytest.raises(ArtifactError, match=r"optimizer\.npz: sha256 does not match"):
        load_model(artifact, with_optimizer=True)


def test_a_copied_artifact_loads_the_same(model, artifact, tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(artifact, copy)
    assert_same_predictions(model, load_model(copy))


# -- corruptions --------------------------------------------------------------------------


def flip_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _set(key: str, value) -> Callable[[dict], None]:
    return lambda m: m.__setitem__(key, value)


def _sizes(key: str, value) -> Callable[[dict], None]:
    return lambda m: m["sizes"].__setitem__(key, value)


def _hyper(key: str, value) -> Callable[[dict], None]:
    return lambda m: m["hyperparameters"].__setitem__(key, value)


def _widen(key: str) -> Callable[[dict], None]:
    def change(a: dict) -> None:
        a[key] = np.concatenate([a[key], a[key][:, :1]], axis=1)

    return change


def _shorten(key: str) -> Callable[[dict], None]:
    return lambda a: a.__setitem__(key, a[key][:-1])


# Each corruption: how to do it to an artifact directory, which file the message names,
# and what it says the problem is (regular expressions).
CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "missing manifest": (
        lambda d: (d / "manifest.json").unlink(),
        "manifest.json",
        "no manifest",
    ),
    "manifest not JSON": (
        lambda d: (d / "manifest.json").write_text('{"format_version": 1, "vers'),
        "manifest.json",
        "not valid JSON",
    ),
    "manifest not UTF-8": (
        lambda d: (d / "manifest.json").write_bytes(b'{"version": "\xff\xfe"}'),
        "manifest.json",
        "not valid JSON",
    ),
    "manifest a JSON list": (
        lambda d: (d / "manifest.json").write_text("[1, 2]"),
        "manifest.json",
        "JSON object",
    ),
    "newer format_version": (
        lambda d: edit_manifest(d, _set("format_version", FORMAT_VERSION + 1)),
        "manifest.json",
        "format 2 is not supported",
    ),
    "no format_version": (
        lambda d: edit_manifest(d, lambda m: m.pop("format_version")),
        "manifest.json",
        "format None is not supported",
    ),
    "manifest files not an object": (
        lambda d: edit_manifest(d, _set("files", ["model.npz"])),
        "manifest.json",
        "'files' must be a JSON object",
    ),
    "manifest file entry not an object": (
        lambda d: edit_manifest(d, lambda m: m["files"].__setitem__("model.npz", "abc")),
        "manifest.json",
        "'model.npz' must be a JSON object",
    ),
    "manifest without files": (
        lambda d: edit_manifest(d, lambda m: m.pop("files")),
        "manifest.json",
        "lacks 'files'",
    ),
    "model.npz not listed": (
        lambda d: edit_manifest(d, lambda m: m["files"].pop("model.npz")),
        "model.npz",
        "not listed in the manifest",
    ),
    "model.npz missing": (
        lambda d: (d / "model.npz").unlink(),
        "model.npz",
        "missing",
    ),
    "model.npz truncated": (
        lambda d: truncate(d / "model.npz"),
        "model.npz",
        r"\d+ bytes, manifest says \d+ \(truncated",
    ),
    "model.npz one byte flipped": (
        lambda d: flip_byte(d / "model.npz"),
        "model.npz",
        "sha256 does not match",
    ),
    "model.npz zip header flipped": (
        lambda d: flip_byte(d / "model.npz", 0.0),
        "model.npz",
        "sha256 does not match",
    ),
    "model.npz with more components": (
        lambda d: replace_npz(d, "model.npz", _widen("item_embeddings")),
        "model.npz",
        "trained with 4 components, item_embeddings has shape",
    ),
    "model.npz without an array": (
        lambda d: replace_npz(d, "model.npz", lambda a: a.pop("item_biases")),
        "model.npz",
        "array 'item_biases' is missing",
    ),
    "model.npz with one embedding row less": (
        lambda d: replace_npz(d, "model.npz", _shorten("user_embeddings")),
        "model.npz",
        "user embeddings have 6 rows",
    ),
    "model.npz with a short bias vector": (
        lambda d: replace_npz(d, "model.npz", _shorten("item_biases")),
        "model.npz",
        "item_biases",
    ),
    "model.npz with one id less": (
        lambda d: replace_npz(d, "model.npz", _shorten("item_ids")),
        "model.npz",
        "manifest says 4 items, arrays have 3",
    ),
    "model.npz with a broken sparse matrix": (
        lambda d: replace_npz(d, "model.npz", _shorten("item_matrix_indptr")),
        "model.npz",
        "item_matrix",
    ),
    "manifest sizes: users": (
        lambda d: edit_manifest(d, _sizes("n_users", 5)),
        "model.npz",
        "manifest says 5 users, arrays have 4",
    ),
    "manifest sizes: item features": (
        lambda d: edit_manifest(d, _sizes("n_item_features", 1)),
        "model.npz",
        "manifest says 1 item features, arrays have 3",
    ),
    "manifest sizes: components": (
        lambda d: edit_manifest(d, _sizes("no_components", 8)),
        "manifest.json|model.npz",
        "4 components.* 8|8 components",
    ),
    "manifest sizes: components and hyperparameters": (
        lambda d: edit_manifest(
            d, lambda m: (_sizes("no_components", 8)(m), _hyper("no_components", 8)(m))
        ),
        "model.npz",
        "trained with 8 components, user_embeddings has shape",
    ),
    "manifest sizes: not a count": (
        lambda d: edit_manifest(d, _sizes("n_users", "4")),
        "manifest.json",
        "n_users",
    ),
    "manifest sizes: missing": (
        lambda d: edit_manifest(d, lambda m: m["sizes"].pop("n_items")),
        "manifest.json",
        "n_items",
    ),
    "manifest hyperparameters: components": (
        lambda d: edit_manifest(d, _hyper("no_components", 8)),
        "manifest.json|model.npz",
        "components",
    ),
    "manifest hyperparameters: bad loss": (
        lambda d: edit_manifest(d, _hyper("loss", "no-such-loss")),
        "manifest.json",
        "bad hyperparameters",
    ),
    "manifest hyperparameters: unknown name": (
        lambda d: edit_manifest(d, _hyper("no_such_parameter", 1)),
        "manifest.json",
        "bad hyperparameters",
    ),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_artifact_is_refused_naming_file_and_problem(artifact, corruption):
    corrupt, filename, problem = CORRUPTIONS[corruption]
    corrupt(artifact)
    with pytest.raises(ArtifactError) as info:
        load_model(artifact)
    message = str(info.value)
    assert isinstance(info.value, HybridrecError)
    assert any(str(artifact / f) in message for f in filename.split("|")), message
    assert re.search(problem, message), message


def test_truncated_model_npz_is_refused_even_without_verification(artifact):
    truncate(artifact / "model.npz")
    with pytest.raises(ArtifactError, match=r"model\.npz: cannot read arrays"):
        load_model(artifact, verify=False)


def test_optimizer_with_wrong_shapes_is_refused(artifact):
    replace_npz(artifact, "optimizer.npz", _shorten("item_bias_momentum"))
    load_model(artifact)  # serving is unaffected
    with pytest.raises(ArtifactError, match=r"optimizer\.npz: item_bias_momentum has shape"):
        load_model(artifact, with_optimizer=True)


# -- no pickle ----------------------------------------------------------------------------

UNPICKLED: list[str] = []


def _mark_unpickled(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class _Payload:
    """Unpickling this runs ``_mark_unpickled``: the proof that a pickle was executed."""

    def __reduce__(self):
        return (_mark_unpickled, ("pwned",))


def test_pickle_in_model_npz_is_refused_and_never_unpickled(artifact, monkeypatch):
    loads: list[dict] = []
    real_load = np.load

    def spy_load(*args, **kwargs):
        loads.append(kwargs)
        return real_load(*args, **kwargs)

    # An object array holds a pickle; the manifest vouches for the file, so only the
    # loader's refusal to unpickle stands between the file and code execution.
    replace_npz(
        artifact,
        "model.npz",
        lambda a: a.update(item_ids=np.array([_Payload(), "y", "z", "w"], dtype=object)),
    )
    with np.load(artifact / "model.npz", allow_pickle=False) as npz:
        with pytest.raises(ValueError, match="allow_pickle"):
            npz["item_ids"]  # the file really holds a pickle
    monkeypatch.setattr(np, "load", spy_load)
    with pytest.raises(ArtifactError) as info:
        load_model(artifact)
    assert str(artifact / "model.npz") in str(info.value)
    assert "cannot read arrays" in str(info.value)
    assert UNPICKLED == []
    assert loads and all(kw.get("allow_pickle") is False for kw in loads)


def test_pickle_in_optimizer_npz_is_refused_and_never_unpickled(artifact):
    replace_npz(
        artifact,
        "optimizer.npz",
        lambda a: a.update(item_bias_momentum=np.array([_Payload()], dtype=object)),
    )
    load_model(artifact)
    with pytest.raises(ArtifactError, match=r"optimizer\.npz: cannot read arrays"):
        load_model(artifact, with_optimizer=True)
    assert UNPICKLED == []


def test_artifact_files_hold_no_object_arrays(artifact):
    for name in ("model.npz", "optimizer.npz"):
        with np.load(artifact / name, allow_pickle=False) as npz:
            for key in npz.files:
                assert npz[key].dtype != object, (name, key)
