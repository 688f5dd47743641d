"""Issue 10 item 2: honest evaluation.

Bugs pinned: ``hybridrec evaluate`` printed all zeros (AUC 0.0000 in every segment) and
exited 0 when the test file overlapped the training data, and ``--plot`` drew empty axes;
there was no tool to make a proper test set. Now ``evaluate`` says per segment what it
kept and dropped and why, exits 1 explaining the overlap when nothing is left, and
``hybridrec split`` cuts a file by time, per user or by users.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from hybridrec.io.files import read_interactions, write_interactions
from hybridrec.io.sample import sample_dir
from hybridrec.training.split import SPLIT_MODES, SplitError, split_frame

from .conftest import cli_for, settings_under

# -- split_frame: properties ------------------------------------------------------------------


@st.composite
def interaction_frames(draw):
    """Frames as ``read_interactions`` returns them: one row per (user, item), timestamps
    with ties (few distinct values), in no particular order."""
    n_users = draw(st.integers(1, 12))
    n_items = draw(st.integers(1, 12))
    pairs = draw(
        st.lists(
            st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1)),
            min_size=1,
            max_size=60,
            unique=True,
        )
    )
    stamps = draw(st.lists(st.integers(0, 6), min_size=len(pairs), max_size=len(pairs)))
    weights = draw(
        st.lists(st.sampled_from([1.0, 0.5, 3.0]), min_size=len(pairs), max_size=len(pairs))
    )
    return pd.DataFrame(
        {
            "user_id": [f"u{u}" for u, _ in pairs],
            "item_id": [f"i{i}" for _, i in pairs],
            "weight": weights,
            "timestamp": np.asarray(stamps, dtype=np.int64) * 100,
        }
    )


def _rows(frame: pd.DataFrame) -> list[tuple]:
    return sorted(map(tuple, frame[["user_id", "item_id", "weight", "timestamp"]].to_numpy()))


@hsettings(max_examples=300, deadline=None)
@given(
    df=interaction_frames(),
    by=st.sampled_from(SPLIT_MODES),
    size=st.floats(0.05, 0.95),
    seed=st.integers(0, 3),
)
def test_every_split_is_disjoint_complete_and_in_order(df, by, size, seed):
    try:
        train, test = split_frame(df, by, test_size=size, seed=seed)
    except SplitError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert len(train) and len(test)
    assert not set(train.index) & set(test.index)  # disjoint
    assert _rows(pd.concat([train, test])) == _rows(df)  # complete
    for part in (train, test):  # each in the input's order
        assert list(part.index) == sorted(part.index)
    again = split_frame(df, by, test_size=size, seed=seed)  # seeded: the same split
    assert again[0].equals(train) and again[1].equals(test)
    if by == "time":  # one cut: everything in test is newer than everything in train
        assert train["timestamp"].max() < test["timestamp"].min()
    elif by == "per-user":  # every test user keeps older interactions for training
        assert set(test["user_id"]) <= set(train["user_id"])
        newest_train = train.groupby("user_id")["timestamp"].max()
        oldest_test = test.groupby("user_id")["timestamp"].min()
        assert (oldest_test >= newest_train[oldest_test.index]).all()
    else:  # held-out users are entirely held out
        assert not set(test["user_id"]) & set(train["user_id"])
        n_users = df["user_id"].nunique()
        assert test["user_id"].nunique() == round(n_users * size)


@hsettings(max_examples=100, deadline=None)
@given(df=interaction_frames(), at=st.integers(-100, 700))
def test_a_time_split_at_a_moment(df, at):
    try:
        train, test = split_frame(df, "time", at=at)
    except SplitError as exc:
        assert "--at" in str(exc) or len(df) < 2
        assert (df["timestamp"] >= at).all() or (df["timestamp"] < at).all()
        return
    assert (train["timestamp"] < at).all() and (test["timestamp"] >= at).all()
    assert _rows(pd.concat([train, test])) == _rows(df)


@pytest.mark.parametrize(
    "by, kwargs, says",
    [
        ("time", {"test_size": 0.0}, "between 0 and 1"),
        ("time", {"test_size": 1.0}, "between 0 and 1"),
        ("per-user", {"at": 5}, "for the time split"),
        ("time", {"at": 5, "test_size": 0.2}, "not both"),
        ("sideways", {}, "use one of time, per-user, cold-users"),
        ("time", {"test_size": 0.01}, "rounds to none"),
        ("time", {"at": 10_000}, "choose an earlier --at"),
        ("time", {"at": -5}, "choose a later --at"),
        ("cold-users", {"test_size": 0.01}, "rounds to no user"),
        ("per-user", {"test_size": 0.01}, "no user has enough interactions"),
    ],
)
def test_bad_arguments_are_refused_with_what_to_change(by, kwargs, says):
    df = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "c"],
            "item_id": ["1", "2", "1", "3"],
            "weight": 1.0,
            "timestamp": [0, 10, 20, 30],
        }
    )
    with pytest.raises(SplitError, match=says):
        split_frame(df, by, **kwargs)


# -- hybridrec split, through files ----------------------------------------------------------


@hsettings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    df=interaction_frames(),
    by=st.sampled_from(SPLIT_MODES),
    size=st.sampled_from(["0.2", "0.5"]),
    suffixes=st.sampled_from([(".csv", ".csv"), (".parquet", ".csv.gz"), (".csv", ".pq")]),
)
def test_the_command_writes_two_files_that_hold_the_input_once(
    tmp_path, settings, df, by, size, suffixes
):
    source = tmp_path / f"all{suffixes[0]}"
    write_interactions(df, source)
    train, test = tmp_path / "train.csv", tmp_path / f"test{suffixes[1]}"
    for f in (train, test):
        f.unlink(missing_ok=True)
    result = _invoke(settings, "split", str(source), str(train), str(test), "--by", by,
                     "--test-size", size)  # fmt: skip
    if result.exit_code:
        assert result.output.startswith("error: cannot split"), result.output
        assert not train.exists() and not test.exists()
        return
    a, b = read_interactions(train), read_interactions(test)
    assert not set(zip(a["user_id"], a["item_id"])) & set(zip(b["user_id"], b["item_id"]))
    assert _rows(pd.concat([a, b])) == _rows(read_interactions(source))
    assert (
        f"{len(a):,} interactions" in result.output and f"{len(b):,} interactions" in result.output
    )


def _invoke(settings, *args):
    from click.testing import CliRunner

    from hybridrec.cli import main

    env = {"HYBRIDREC_KEY_PREFIX": settings.key_prefix, "HYBRIDREC_REDIS_URL": settings.redis_url}
    return CliRunner().invoke(
        main, ["--model-store", settings.model_store, *args], env=env, catch_exceptions=False
    )


def test_a_file_without_timestamps_splits_by_row_order(cli, tmp_path):
    source = tmp_path / "all.csv"
    source.write_text("user_id,item_id\n" + "".join(f"u{n % 3},i{n}\n" for n in range(10)))
    out = cli("split", str(source), str(tmp_path / "a.csv"), str(tmp_path / "b.csv"))
    assert "2 interactions" in out  # 20% of 10: the last two rows
    assert (tmp_path / "b.csv").read_text() == "user_id,item_id,weight\nu2,i8,1.0\nu0,i9,1.0\n"
    out = cli("split", str(source), str(tmp_path / "a.csv"), str(tmp_path / "b.csv"),
              "--at", "5", code=1)  # fmt: skip
    assert "no timestamp column" in out


@pytest.mark.parametrize(
    "args, says",
    [
        (["ALL", "ALL", "TEST"], "FILE and TRAIN are the same file"),
        (["ALL", "TRAIN", "TRAIN"], "TRAIN and TEST are the same file"),
        (["ALL", "TRAIN", "test.txt"], "unsupported file type"),
        (["ALL", "TRAIN", "TEST", "--by", "per-user", "--at", "2020-01-01"], "--at is for"),
        (["ALL", "TRAIN", "TEST", "--at", "1", "--test-size", "0.2"], "not both"),
        (["ALL", "TRAIN", "TEST", "--at", "yesterday"], "is neither unix seconds (e.g."),
        (["ALL", "TRAIN", "TEST", "--at", "2030-01-01"], "choose an earlier --at"),
        (["ALL", "TRAIN", "TEST", "--test-size", "1"], "0<x<1"),
        (["ALL", "TRAIN", "TEST", "--by", "cold-users", "--test-size", "0.1"], "no user"),
        (["missing.csv", "TRAIN", "TEST"], "file not found"),
    ],
)
def test_the_command_refuses_bad_arguments_before_writing(settings, tmp_path, args, says):
    source = tmp_path / "all.csv"
    source.write_text("user_id,item_id,timestamp\na,1,100\na,2,200\nb,1,300\nc,2,400\n")
    names = {"ALL": str(source), "TRAIN": str(tmp_path / "train.csv"),
             "TEST": str(tmp_path / "test.csv")}  # fmt: skip
    result = _invoke(settings, "split", *[names.get(a, a) for a in args])
    assert result.exit_code != 0 and says in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "train.csv").exists() and not (tmp_path / "test.csv").exists()


# -- evaluate: what was kept, what was dropped, and nothing left ----------------------------------


@pytest.fixture(scope="module")
def sample_round_trip(redis_server, tmp_path_factory):
    """The bundled sample split per user; a small model trained on the training part and
    published; features of the sample in the store."""
    tmp = tmp_path_factory.mktemp("roundtrip")
    cli = cli_for(settings_under(redis_server, tmp))
    sample = sample_dir()
    cli("features", "load", "users", str(sample / "user_features.csv"))
    cli("features", "load", "items", str(sample / "item_features.csv"))
    paths = {"train": tmp / "train.parquet", "test": tmp / "test.csv"}
    out = cli("split", str(sample / "interactions.csv"), str(paths["train"]), str(paths["test"]),
              "--by", "per-user", "--test-size", "0.1")  # fmt: skip
    assert "(0 not in train)" in out  # per user: every test user is known to the model
    cli("train", "--interactions", str(paths["train"]), "--epochs", "3", "--components", "16",
        "--holdout", "0", "--seed", "1", "--publish")  # fmt: skip
    return cli, paths, tmp


@pytest.mark.slow
def test_split_train_evaluate_on_the_sample_gives_real_metrics(sample_round_trip):
    cli, paths, tmp = sample_round_trip
    body = json.loads(cli("evaluate", "--test", str(paths["test"]), "--json"))
    seg = body["segments"]["all"]
    assert seg["users"] > 600 and seg["interactions"] > 9000
    assert seg["precision"] > 0 and seg["ndcg"] > 0 and seg["auc"] > 0.6
    assert seg["dropped"]["interactions"]["seen_in_training"] == 0  # a proper split
    assert body["segments"]["cold_users"]["users"] == 0
    table = cli("evaluate", "--test", str(paths["test"]), "--plot", str(tmp / "ok.png"))
    assert "interactions" in table.splitlines()[1]
    cold = next(line for line in table.splitlines() if line.startswith("cold_users"))
    assert cold.split()[1:4] == ["0", "0", "model"] and cold.endswith("-")  # no zeros
    assert (tmp / "ok.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_evaluating_on_the_training_data_is_an_error_that_explains_the_overlap(
    sample_round_trip,
):
    """Regression: exit 0 with AUC 0.0000 in every segment and not a word, and --plot
    drew empty axes."""
    cli, paths, tmp = sample_round_trip
    plot = tmp / "overlap.png"
    out = cli("evaluate", "--test", str(paths["train"]), "--plot", str(plot), code=1)
    assert "nothing left to evaluate" in out and "seen_in_training" in out
    assert "overlaps" in out and "hybridrec split" in out
    assert "0.0000" not in out and not plot.exists()  # no table of zeros, no empty chart
    body = json.loads(
        cli("evaluate", "--test", str(paths["train"]), "--json", code=1).split("\n")[0]
    )
    seg = body["segments"]["all"]
    assert seg["users"] == 0 and seg["interactions"] == 0
    assert seg["dropped"]["interactions"]["seen_in_training"] > 80_000
    assert seg["dropped"]["users"]["no_positive_left"] == 671


@pytest.mark.slow
def test_a_partial_overlap_says_per_segment_what_was_dropped_and_why(sample_round_trip):
    cli, paths, tmp = sample_round_trip
    mixed = pd.concat(
        [read_interactions(paths["train"]).head(500), read_interactions(paths["test"]).head(500)]
    )
    mixed = pd.concat([mixed, pd.DataFrame([{"user_id": "1", "item_id": "no-such-item",
                                             "weight": 1.0, "timestamp": 0}])])  # fmt: skip
    write_interactions(mixed, tmp / "mixed.csv")
    body = json.loads(cli("evaluate", "--test", str(tmp / "mixed.csv"), "--json"))
    dropped = body["segments"]["all"]["dropped"]["interactions"]
    assert dropped["seen_in_training"] == 500 and dropped["unknown_item"] == 1
    assert body["segments"]["all"]["interactions"] == 500
    table = cli("evaluate", "--test", str(tmp / "mixed.csv"))
    assert "not evaluated, and why:" in table
    assert "500 already in the training data" in table and "1 item unknown to the model" in table
