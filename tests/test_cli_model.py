"""``train``, ``evaluate``, ``recommend``, ``similar``, ``tune`` and ``retrain`` through
click's runner, against a real Redis and a model store under ``tmp_path``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hybridrec.cli import main
from hybridrec.io.files import write_features, write_interactions
from hybridrec.training.split import split_interactions

from .synthetic import long_features, make_synthetic


@pytest.fixture
def run(settings):
    def invoke(*args: str):
        env = {
            "HYBRIDREC_KEY_PREFIX": settings.key_prefix,
            "HYBRIDREC_REDIS_URL": settings.redis_url,
        }
        opts = ["--model-store", settings.model_store]
        return CliRunner().invoke(main, [*opts, *args], env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def files(tmp_path):
    data = make_synthetic(n_users=120, n_items=60, seed=11)
    split = split_interactions(data.interactions, seed=0)
    paths = {name: tmp_path / f"{name}.csv" for name in ("train", "test", "users", "items")}
    write_interactions(split.train, paths["train"])
    write_interactions(split.test, paths["test"])
    write_features(long_features(data.user_features), paths["users"])
    write_features(long_features(data.item_features), paths["items"])
    return paths


def _last_line(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def test_train_publish_evaluate_recommend_similar(run, files, tmp_path):
    assert run("features", "load", "users", str(files["users"])).exit_code == 0
    assert run("features", "load", "items", str(files["items"])).exit_code == 0
    result = run(
        "train",
        "--interactions",
        str(files["train"]),
        "--components",
        "8",
        "--epochs",
        "5",
        "--seed",
        "1",
        "--publish",
    )
    version = _last_line(result)
    assert "warm_users" in result.output  # the holdout table
    listed = run("models", "list", "--json")
    assert version in listed.output

    result = run(
        "evaluate", "--test", str(files["test"]), "--json", "--plot", str(tmp_path / "e.png")
    )
    body = json.loads(_last_line(result))
    assert body["model_version"] == version and body["k"] == 10
    assert set(body["segments"]) >= {"all", "warm_users", "cold_users"}
    assert set(body["baseline"]) == set(body["segments"])
    assert set(body["segments"]["all"]) >= {"users", "precision", "recall", "ndcg", "auc"}
    assert body["segments"]["all"]["users"] > 0
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    table = run("evaluate", "--test", str(files["test"]))
    assert "cold_users" in table.output and "baseline" in table.output

    rec = json.loads(_last_line(run("recommend", "u1", "--k", "3", "--json")))
    assert rec["model_version"] == version and len(rec["items"]) == 3
    assert rec["strategy"] == "personalized"
    visitor = json.loads(
        _last_line(
            run("recommend", "visitor", "--feature", "genre:1", "--feature", "nonsense=2", "--json")
        )
    )
    assert visitor["user_case"] == "new_with_features"
    stranger = json.loads(_last_line(run("recommend", "stranger", "--json")))
    assert stranger["strategy"] == "baseline" and stranger["user_case"] == "unknown"

    sim = json.loads(_last_line(run("similar", "i0", "--k", "4", "--json")))
    assert len(sim["items"]) == 4 and "i0" not in [i["item_id"] for i in sim["items"]]


def test_user_errors_are_one_line_and_exit_1(run, files, tmp_path):
    def one_line(result):
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert lines[-1].startswith("error: ") and "Traceback" not in result.output
        return lines[-1]

    assert "no model is published" in one_line(run("recommend", "u1"))
    assert "interaction log is empty" in one_line(run("train"))
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,weight\nu1,i1,-3\n")
    assert "negative" in one_line(run("train", "--interactions", str(bad)))
    params = tmp_path / "p.json"
    params.write_text('{"bogus": 1}')
    assert "unknown hyperparameters" in one_line(
        run("train", "--interactions", str(files["train"]), "--params", str(params))
    )
    assert "not valid JSON" in one_line(
        run("train", "--interactions", str(files["train"]), "--params", str(bad))
    )
    assert "is not in" in one_line(run("similar", "i0", "--model", "nope"))
    usage = run("recommend", "u1", "--feature", "x=abc")
    assert usage.exit_code == 2 and "not a number" in usage.output


def test_tune_saves_parameters_train_accepts(run, files, tmp_path):
    out = tmp_path / "best.json"
    result = run(
        "tune",
        "--interactions",
        str(files["train"]),
        "--user-features",
        str(files["users"]),
        "--item-features",
        str(files["items"]),
        "--save",
        str(out),
    )
    assert result.exit_code == 0, result.output
    best = json.loads(out.read_text())
    assert {"user_feature_weight", "item_feature_weight", "no_components"} <= set(best)
    result = run(
        "train",
        "--interactions",
        str(files["train"]),
        "--params",
        str(out),
        "--epochs",
        "2",
        "--holdout",
        "0",
    )
    assert result.exit_code == 0, result.output


def test_retrain_once_from_the_log(run, files):
    assert run("interactions", "load", str(files["train"])).exit_code == 0
    result = run("retrain", "--json")
    report = json.loads(_last_line(result))
    assert report["decision"]["status"] == "published"
    assert run("retrain").output.startswith("skipped")  # nothing new since the champion
    bad = run("retrain", "--every", "soon")
    assert bad.exit_code == 2 and "interval" in bad.output
