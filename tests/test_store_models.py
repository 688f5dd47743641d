"""The model store: publish-safe writes, versions, reports; local and fsspec roots."""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from hybridrec.errors import HybridrecError
from hybridrec.model.hybrid import HybridLightFM
from hybridrec.modelstore.artifact import ArtifactError
from hybridrec.modelstore.store import ModelStore

from .synthetic import make_synthetic


@pytest.fixture(scope="module")
def model() -> HybridLightFM:
    data = make_synthetic(n_users=30, n_items=20, per_user=5, seed=1)
    return HybridLightFM(no_components=4, epochs=1, random_state=0).fit(
        data.interactions, data.user_features, data.item_features
    )


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path) -> ModelStore:
    if request.param == "local":
        return ModelStore(tmp_path / "models")
    return ModelStore(f"memory://hybridrec-test-{uuid.uuid4().hex}")


def same_scores(a: HybridLightFM, b: HybridLightFM) -> bool:
    return np.allclose(a.item_factors(), b.item_factors())


def test_write_load_round_trip(store, model):
    assert store.versions() == []
    manifest = store.write(model, metrics={"ndcg": 0.5}, extra={"note": "x"}, version="v1")
    assert manifest["version"] == "v1" and manifest["metrics"] == {"ndcg": 0.5}
    assert store.exists("v1") and not store.exists("v2")
    assert store.versions() == ["v1"]
    assert store.manifest("v1")["extra"] == {"note": "x"}
    assert same_scores(store.load("v1"), model)
    assert store.load("v1", with_optimizer=True).user_embedding_gradients is not None
    assert store.verify("v1", with_optimizer=True)["version"] == "v1"


def test_generated_versions_sort_by_time(tmp_path, model):
    store = ModelStore(tmp_path)
    first = store.write(model)["version"]
    time.sleep(1.01)
    second = store.write(model)["version"]
    assert store.versions() == [first, second]


def test_a_version_is_written_once(store, model):
    store.write(model, version="v1")
    with pytest.raises(ArtifactError, match="already exists"):
        store.write(model, version="v1")


@pytest.mark.parametrize("bad", ["../x", ".hidden", "a/b", "", "x" * 200, "sp ace"])
def test_unsafe_version_names_are_refused(store, model, bad):
    with pytest.raises(HybridrecError, match="not a valid name"):
        store.write(model, version=bad)


def test_unknown_version_says_what_exists(store, model):
    store.write(model, version="v1")
    with pytest.raises(ArtifactError, match="known versions: v1"):
        store.load("v9")


def test_reports_beside_the_artifact(store, model):
    store.write(model, version="v1")
    store.write_report("v1", "report.json", {"a": 1})
    store.write_report("v1", "report.png", b"\x89PNG...")
    store.write_report("v1", "notes.txt", "hello")
    store.write_report("v1", "report.json", {"a": 2})  # replaced
    assert store.reports("v1") == ["notes.txt", "report.json", "report.png"]
    assert store.read_report("v1", "report.json") == b'{\n  "a": 2\n}'
    assert store.read_report("v1", "report.png") == b"\x89PNG..."
    with pytest.raises(ArtifactError, match="no report"):
        store.read_report("v1", "nope.json")
    with pytest.raises(HybridrecError, match="not a valid name"):
        store.write_report("v1", "../escape", b"")
    with pytest.raises(ArtifactError):
        store.write_report("v9", "r.json", {})
    assert same_scores(store.load("v1"), model)  # reports do not disturb verification


def test_a_crash_while_writing_leaves_no_version(tmp_path, model):
    """A write that fails before its rename leaves no version and cleans up after itself."""

    class DiesBeforeRename(ModelStore):
        def _publish_dir(self, tmp, final):
            raise KeyboardInterrupt("power cut")

    root = tmp_path / "models"
    ModelStore(root).write(model, version="v1")
    with pytest.raises(KeyboardInterrupt):
        DiesBeforeRename(root).write(model, version="v2")
    store = ModelStore(root)
    assert store.versions() == ["v1"] and not store.exists("v2")
    assert [p.name for p in root.iterdir()] == ["v1"]
    assert store.write(model, version="v2")["version"] == "v2"


def test_regression_temporary_directories_of_dead_writers_are_removed(tmp_path, model):
    """Regression (issue 9, item 9): ``.tmp-*`` left by killed publishes were never
    removed. The next write removes those whose lock no process holds, never a live one."""
    root = tmp_path / "models"
    store = ModelStore(root)
    store.write(model, version="v1")
    dead, live, legacy = (root / f".tmp-v{n}-0000" for n in (2, 3, 4))
    for directory in (dead, live, legacy):
        directory.mkdir()
        (directory / "model.npz").write_bytes(b"half")
    Path(f"{dead}.lock").touch()  # its writer was killed: nobody holds it
    held = open(f"{live}.lock", "wb")  # a writer at work (another open file: flock applies)
    fcntl.flock(held, fcntl.LOCK_EX)
    (root / ".tmp-v5-0000.lock").touch()  # a writer killed after its rename
    try:
        assert store.write(model, version="v6")["version"] == "v6"
        left = sorted(p.name for p in root.iterdir())
        assert left == [live.name, f"{live.name}.lock", legacy.name, "v1", "v6"]
        assert store.clean_tmp() == []  # the live one stays, the lockless one is young
        os.utime(legacy, (time.time() - 7200, time.time() - 7200))
        assert store.clean_tmp() == [legacy.name]
    finally:
        held.close()  # the writer dies
    assert store.clean_tmp() == [live.name]
    assert sorted(p.name for p in root.iterdir()) == ["v1", "v6"]


def test_a_directory_without_manifest_is_not_a_version(tmp_path, model):
    root = tmp_path / "models"
    store = ModelStore(root)
    store.write(model, version="v1")
    (root / "v2").mkdir()
    (root / "v2" / "model.npz").write_bytes(b"half")
    assert store.versions() == ["v1"]


def test_a_corrupted_artifact_is_detected(tmp_path, model):
    store = ModelStore(tmp_path / "models")
    store.write(model, version="v1")
    path = tmp_path / "models" / "v1" / "model.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        store.verify("v1")
    with pytest.raises(ArtifactError):
        store.load("v1")


def test_file_url_is_a_local_path(tmp_path, model):
    store = ModelStore(f"file://{tmp_path / 'models'}")
    assert store.is_local
    store.write(model, version="v1")
    assert (tmp_path / "models" / "v1" / "manifest.json").is_file()
