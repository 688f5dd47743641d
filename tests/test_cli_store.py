"""``hybridrec features|interactions load``, ``models ...`` and ``redis ...`` end to end."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hybridrec.cli import main
from hybridrec.modelstore.registry import Registry, publish_model, store_model
from hybridrec.modelstore.store import ModelStore
from hybridrec.store.connection import connect
from hybridrec.store.features import FeatureStore

from .synthetic import make_synthetic


@pytest.fixture
def run(settings):
    """Run the CLI against the test Redis and a model store under tmp_path."""

    def invoke(*args: str, url: str | None = settings.redis_url):
        env = {"HYBRIDREC_KEY_PREFIX": settings.key_prefix, "HYBRIDREC_REDIS_URL": url}
        opts = ["--model-store", settings.model_store]
        return CliRunner().invoke(main, [*opts, *args], env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def store(settings, redis_client) -> FeatureStore:
    return FeatureStore(connect(settings), settings.key_prefix)


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_load_features_merge_then_replace(run, store, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,feature,weight\ni1,genre:drama,1\ni1,year:1995,0.5\ni2,genre:comedy,1\n")
    result = run("features", "load", "items", str(path))
    assert result.exit_code == 0, result.output
    assert "loaded 3 features of 2 items (merged)" in result.output
    assert "2 items in the store" in result.output
    path.write_text("id,feature\ni1,genre:noir\n")
    result = run("features", "load", "items", str(path), "--replace")
    assert "loaded 1 features of 1 items (replaced)" in result.output
    assert store.get_features("items", "i1") == {"genre:noir": 1.0}
    assert store.get_features("items", "i2") == {"genre:comedy": 1.0}


def test_a_bad_feature_file_changes_nothing(run, store, tmp_path):
    store.put_features("users", "u1", {"old": 1.0})
    path = tmp_path / "users.csv"
    path.write_text("id,feature,weight\nu1,new,1\nu2,x,1\nu3,y,-4\n")
    line = one_error_line(run("features", "load", "users", str(path), "--replace"))
    assert "users.csv" in line and "data row 3" in line and "negative" in line
    assert store.get_features("users", "u1") == {"old": 1.0}
    assert store.count("users") == 1
    line = one_error_line(run("features", "load", "users", str(tmp_path / "missing.csv")))
    assert "file not found" in line


def test_regression_a_weight_infinite_in_float32_is_refused_with_its_row(run, store, tmp_path):
    """Regression (issue 9, item 1): ``interactions load`` accepted ``1,1,1e39`` (infinite
    in float32) and every later training failed; ``features load`` likewise."""
    path = tmp_path / "inter.csv"
    path.write_text("user_id,item_id,weight\n1,2,1\n1,1,1e39\n")
    line = one_error_line(run("interactions", "load", str(path)))
    assert "data row 2 (line 3 of the file): weight '1e39' is above 3.4028235e+38" in line
    assert "<= 3.4028235e+38" in line and store.log_length() == 0
    path = tmp_path / "items.csv"
    path.write_text("id,feature,weight\ni1,a,1\ni1,b,1e39\n")
    line = one_error_line(run("features", "load", "items", str(path)))
    assert "data row 2 (line 3 of the file): weight '1e39' is above" in line
    assert store.count("items") == 0


def test_a_row_with_extra_fields_is_refused_not_truncated(run, store, tmp_path):
    """Issue 10 item 6: ``ni4,tag:rock,1,2,3`` loaded as ``tag:rock=1`` with exit 0."""
    path = tmp_path / "items.csv"
    path.write_text("id,feature,weight\nni1,tag:pop,1\nni4,tag:rock,1,2,3\n")
    line = one_error_line(run("features", "load", "items", str(path)))
    assert "data row 2 (line 3 of the file): has 5 fields but the header has 3" in line
    assert store.count("items") == 0


def test_load_interactions(run, store, tmp_path):
    path = tmp_path / "inter.csv"
    path.write_text("user_id,item_id,weight,timestamp\nu1,i1,1,100\nu1,i2,1,101\nu2,i1,2,102\n")
    result = run("interactions", "load", str(path))
    assert result.exit_code == 0, result.output
    assert "loaded 3 interactions of 2 users and 2 items; the log holds 3" in result.output
    assert store.get_seen("u1") == {"i1", "i2"}
    path.write_text("user_id,item_id,timestamp\nu9,i9,100\nu9,i8,yesterday\n")
    assert "timestamp" in one_error_line(run("interactions", "load", str(path)))
    assert store.log_length() == 3 and store.get_seen("u9") == set()


def test_unreachable_or_malformed_redis_is_one_line(run, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,feature\ni1,f\n")
    line = one_error_line(run("features", "load", "items", str(path), url="redis://127.0.0.1:1/0"))
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in line
    line = one_error_line(
        run("models", "list", url="http://user:hunter2@localhost:6379")  # noqa: S106
    )
    assert "malformed Redis URL" in line and "hunter2" not in line and "***" in line


def test_models_list_promote_rollback(run, settings, redis_client):
    data = make_synthetic(n_users=30, n_items=20, per_user=5, seed=3)
    from hybridrec.model.hybrid import HybridLightFM

    model = HybridLightFM(no_components=4, epochs=1).fit(
        data.interactions, data.user_features, data.item_features
    )
    models = ModelStore(settings.model_store)
    registry = Registry(connect(settings), settings.key_prefix)
    assert "no model versions yet" in run("models", "list").output
    metrics = {"k": 10, "segments": {"all": {"precision": 0.25, "ndcg": 0.5, "auc": 0.9}}}
    publish_model(models, registry, model, metrics, version="v1")
    publish_model(models, registry, model, metrics, version="v2")
    store_model(models, registry, model, version="v3", status="refused")
    models.write(model, version="v4")  # an artifact the registry never recorded

    out = run("models", "list").output.splitlines()
    assert out[0].split() == ["VERSION", "STATUS", "CREATED", "METRICS", "(HOLDOUT)"]
    assert out[2].startswith("* v2") and "p@10=0.2500 ndcg=0.5000 auc=0.9000" in out[2]
    assert "refused" in out[3] and out[4].split()[:2] == ["v4", "unregistered"]

    assert "refused by the quality gate" in one_error_line(run("models", "promote", "v3"))
    result = run("models", "promote", "v3", "--force")
    assert result.exit_code == 0 and "current model version: v3" in result.output
    result = run("models", "rollback")
    assert result.output.strip() == "rolled back from v3 to v2"
    assert run("models", "promote", "v4").exit_code == 0  # recorded from its manifest
    assert "no model version 'v9'" in one_error_line(run("models", "promote", "v9"))

    listed = json.loads(run("models", "list", "--json").output)
    assert [(e["version"], e["current"]) for e in listed][-1] == ("v4", True)
    assert all(e["artifact"] for e in listed)


def test_redis_commands_refuse_a_url(run):
    line = one_error_line(run("redis", "stop"))
    assert "manages only its embedded Redis" in line
    result = run("redis", "status")
    assert result.exit_code == 0 and "state=reachable" in result.output


def test_embedded_redis_lifecycle_through_the_cli(embedded_settings, tmp_path):
    env = {"HYBRIDREC_DATA_DIR": str(embedded_settings.data_dir), "HYBRIDREC_REDIS_URL": None}
    runner = CliRunner()

    def run(*args):
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    assert "not running" in run("redis", "status").output
    path = tmp_path / "items.csv"
    path.write_text("id,feature\ni1,f\n")
    assert run("features", "load", "items", str(path)).exit_code == 0
    status = json.loads(run("redis", "status", "--json").output)
    assert status["state"] == "running" and status["keys"] >= 2  # the CLI exited, it did not
    assert "embedded Redis stopped" in run("redis", "stop").output
    assert "was not running" in run("redis", "stop").output
    assert "running" in run("redis", "start").output
    assert json.loads(run("redis", "status", "--json").output)["keys"] == status["keys"]
