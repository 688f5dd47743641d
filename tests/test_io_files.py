"""Interaction and feature file readers: every refusal, round trips, and properties."""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridrec.errors import HybridrecError
from hybridrec.io import (
    MAX_ID_LENGTH,
    MAX_WEIGHT,
    InputError,
    read_features,
    read_interactions,
    write_features,
    write_interactions,
)

HEADER = "user_id,item_id,weight,timestamp\n"


def write_text(tmp_path: Path, text: str, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refusal(reader, path: Path) -> str:
    with pytest.raises(InputError) as info:
        reader(path)
    message = str(info.value)
    assert str(path) in message
    return message


# ------------------------------------------------------------------------ accepted input


def test_reads_interactions_with_canonical_columns_and_dtypes(tmp_path):
    path = write_text(tmp_path, HEADER + "u1,i1,2.5,100\nu2,i1,1,200\n")
    df = read_interactions(path)
    assert list(df.columns) == ["user_id", "item_id", "weight", "timestamp"]
    assert df["user_id"].tolist() == ["u1", "u2"]
    assert df["weight"].dtype == np.float64
    assert df["timestamp"].dtype == np.int64
    assert df["weight"].tolist() == [2.5, 1.0]
    assert df["timestamp"].tolist() == [100, 200]
    assert df.attrs == {"duplicates": 0, "timestamps": "column"}
    assert pd.api.types.is_string_dtype(df["user_id"])


def test_leading_zero_and_numeric_looking_ids_stay_strings(tmp_path):
    path = write_text(tmp_path, "user_id,item_id\n007,0001\nNA,1e3\nnull,-0\n")
    df = read_interactions(path)
    assert df["user_id"].tolist() == ["007", "NA", "null"]
    assert df["item_id"].tolist() == ["0001", "1e3", "-0"]
    features = read_features(write_text(tmp_path, "id,feature\n007,genre:x\n", "f.csv"))
    assert features["id"].tolist() == ["007"]


def test_weight_defaults_to_one_and_timestamp_to_row_order(tmp_path):
    path = write_text(tmp_path, "user_id,item_id\nu,a\nu,b\nv,a\n")
    df = read_interactions(path)
    assert df["weight"].tolist() == [1.0, 1.0, 1.0]
    assert df["timestamp"].tolist() == [0, 1, 2]
    assert df.attrs["timestamps"] == "row_order"


def test_extra_columns_are_ignored(tmp_path):
    path = write_text(tmp_path, "rating,item_id,note,user_id\n4.5,i,hello,u\n")
    df = read_interactions(path)
    assert list(df.columns) == ["user_id", "item_id", "weight", "timestamp"]
    assert df.iloc[0].tolist() == ["u", "i", 1.0, 0]


def test_iso_8601_timestamps_become_unix_seconds_utc(tmp_path):
    rows = [
        "a,1,1,2020-01-01T00:00:00Z",
        "a,2,1,2020-01-01T02:00:00+02:00",
        "a,3,1,2020-01-01",
        "a,4,1,2020-01-01 00:00:01",
        "a,5,1,1577836800",
        "a,6,1,-5",
    ]
    df = read_interactions(write_text(tmp_path, HEADER + "\n".join(rows) + "\n"))
    assert df["timestamp"].tolist() == [
        1577836800,
        1577836800,
        1577836800,
        1577836801,
        1577836800,
        -5,
    ]


def test_duplicate_interactions_are_summed_with_latest_timestamp(tmp_path):
    text = HEADER + "u,a,1,10\nu,b,1,5\nu,a,2,30\nu,a,0.5,20\n"
    df = read_interactions(write_text(tmp_path, text))
    assert df.attrs["duplicates"] == 2
    assert df.to_dict("records") == [
        {"user_id": "u", "item_id": "a", "weight": 3.5, "timestamp": 30},
        {"user_id": "u", "item_id": "b", "weight": 1.0, "timestamp": 5},
    ]


def test_duplicate_interactions_without_timestamps_keep_the_last_position(tmp_path):
    df = read_interactions(write_text(tmp_path, "user_id,item_id\nu,a\nu,b\nu,a\n"))
    assert df["timestamp"].tolist() == [2, 1]
    assert df["weight"].tolist() == [2.0, 1.0]


def test_duplicate_features_are_summed(tmp_path):
    text = "id,feature,weight\nm,tag:a,1\nm,genre:x,1\nm,tag:a,2\nn,tag:a,1\n"
    df = read_features(write_text(tmp_path, text))
    assert df.attrs["duplicates"] == 1
    assert df.to_dict("records") == [
        {"id": "m", "feature": "tag:a", "weight": 3.0},
        {"id": "m", "feature": "genre:x", "weight": 1.0},
        {"id": "n", "feature": "tag:a", "weight": 1.0},
    ]


def test_utf8_bom_crlf_blank_lines_and_quoted_fields(tmp_path):
    path = tmp_path / "in.csv"
    text = 'user_id,item_id\r\n"u,1","caf\u00e9 ""x"""\r\n\r\nv,"multi\nline"\r\n'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    df = read_interactions(path)
    assert df["user_id"].tolist() == ["u,1", "v"]
    assert df["item_id"].tolist() == ['caf\u00e9 "x"', "multi\nline"]


def test_zero_weights_are_allowed(tmp_path):
    df = read_features(write_text(tmp_path, "id,feature,weight\nm,a,0\n"))
    assert df["weight"].tolist() == [0.0]


def test_ids_at_the_length_limit_are_accepted(tmp_path):
    long_id = "x" * MAX_ID_LENGTH
    df = read_features(write_text(tmp_path, f"id,feature\n{long_id},{long_id}\n"))
    assert df["id"].tolist() == [long_id]


def test_input_error_is_a_value_error_and_a_hybridrec_error():
    assert issubclass(InputError, ValueError)
    assert issubclass(InputError, HybridrecError)


# ------------------------------------------------------------------------------ refusals


def test_missing_file(tmp_path):
    message = refusal(read_interactions, tmp_path / "nope.csv")
    assert "not found" in message


def test_directory_is_refused(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    assert "directory" in refusal(read_interactions, tmp_path / "dir.csv")


@pytest.mark.parametrize("name", ["in.tsv", "in.json", "in", "in.csv.zip"])
def test_unsupported_extension(tmp_path, name):
    path = write_text(tmp_path, "user_id,item_id\nu,i\n", name)
    message = refusal(read_interactions, path)
    assert "unsupported file type" in message
    assert ".csv, .csv.gz, .parquet or .pq" in message


def test_missing_required_columns_lists_found_columns(tmp_path):
    path = write_text(tmp_path, "user,item_id,weight\nu,i,1\n")
    message = refusal(read_interactions, path)
    assert "missing column(s) user_id" in message
    assert "found columns 'user', 'item_id', 'weight'" in message


def test_missing_feature_column(tmp_path):
    message = refusal(read_features, write_text(tmp_path, "id,name\nm,x\n"))
    assert "missing column(s) feature" in message
    assert "'id', 'name'" in message


def test_semicolon_separated_file_gets_a_hint(tmp_path):
    message = refusal(read_interactions, write_text(tmp_path, "user_id;item_id\nu;i\n"))
    assert "comma-separated" in message


@pytest.mark.parametrize("text", ["", "\n\n", "   \n"])
def test_empty_file(tmp_path, text):
    assert "is empty" in refusal(read_interactions, write_text(tmp_path, text))


def test_header_only_file(tmp_path):
    message = refusal(read_interactions, write_text(tmp_path, HEADER))
    assert "header but no data rows" in message


def test_empty_parquet_file(tmp_path):
    path = tmp_path / "in.parquet"
    path.write_bytes(b"")
    assert "is empty" in refusal(read_interactions, path)


def test_parquet_without_rows(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(
        pa.table({"id": pa.array([], pa.string()), "feature": pa.array([], pa.string())}), path
    )
    assert "no data rows" in refusal(read_features, path)


def test_empty_id_names_the_row_and_line(tmp_path):
    path = write_text(tmp_path, HEADER + "u,a,1,1\n\n,b,1,1\n")
    message = refusal(read_interactions, path)
    assert "data row 2 (line 4 of the file): user_id is empty" in message


def test_blank_item_id(tmp_path):
    message = refusal(read_interactions, write_text(tmp_path, "user_id,item_id\nu,  \nv,\n"))
    assert "data row 1 (line 2 of the file): item_id is empty (1 more row like it)" in message


def test_short_row_is_an_empty_id(tmp_path):
    message = refusal(read_features, write_text(tmp_path, "id,feature\nm\n"))
    assert "data row 1" in message
    assert "feature is empty" in message


def test_blank_feature_name(tmp_path):
    message = refusal(read_features, write_text(tmp_path, "id,feature\nm,a\nm, \n"))
    assert "data row 2 (line 3 of the file): feature is empty" in message


def test_too_long_id(tmp_path):
    long_id = "x" * (MAX_ID_LENGTH + 1)
    path = write_text(tmp_path, f"user_id,item_id\nu,i\n{long_id},i\n")
    message = refusal(read_interactions, path)
    assert f"data row 2 (line 3 of the file): user_id is {MAX_ID_LENGTH + 1} characters" in message
    assert f"at most {MAX_ID_LENGTH}" in message


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("nan", "weight 'nan' is NaN"),
        ("NaN", "weight 'NaN' is NaN"),
        ("inf", "weight 'inf' is infinite"),
        ("-Infinity", "weight '-Infinity' is infinite"),
        ("1e400", "weight '1e400' is infinite"),
        ("-1", "weight '-1' is negative"),
        ("-0.5", "weight '-0.5' is negative"),
        ("1e39", "weight '1e39' is above 3.4028235e+38, infinite in float32"),
        ("3.5e38", "weight '3.5e38' is above 3.4028235e+38, infinite in float32"),
        ("abc", "weight 'abc' is not a number"),
        ("1,5", "weight '1,5' is not a number"),
        ("", "weight is empty"),
    ],
)
def test_bad_weights_name_the_first_offending_row(tmp_path, value, problem):
    value = f'"{value}"' if "," in value else value
    path = write_text(tmp_path, HEADER + f"u,a,1,1\nu,b,{value},2\nu,c,{value},3\n")
    message = refusal(read_interactions, path)
    assert f"data row 2 (line 3 of the file): {problem} (1 more row like it)" in message
    assert "finite numbers >= 0 and <= 3.4028235e+38" in message


def test_regression_a_weight_infinite_in_float32_is_refused_in_every_format(tmp_path):
    """Regression (issue 9, item 1): ``1,1,1e39`` (finite in float64, infinite in the
    float32 the model trains in) was accepted, and every later training failed."""
    csv = write_text(tmp_path, "user_id,item_id,weight\n1,1,1\n1,2,1e39\n")
    assert "data row 2 (line 3 of the file): weight '1e39' is above" in refusal(
        read_interactions, csv
    )
    parquet = tmp_path / "features.parquet"
    pq.write_table(
        pa.table({"id": ["m", "m"], "feature": ["a", "b"], "weight": [1.0, -1e39]}), parquet
    )
    assert "data row 2: weight -1e+39 is negative" in refusal(read_features, parquet)
    pq.write_table(
        pa.table({"id": ["m", "m"], "feature": ["a", "b"], "weight": [1.0, 1e39]}), parquet
    )
    assert "data row 2: weight 1e+39 is above 3.4028235e+38" in refusal(read_features, parquet)
    largest = write_text(tmp_path, f"id,feature,weight\nm,a,{MAX_WEIGHT!r}\n")
    assert read_features(largest)["weight"].tolist() == [MAX_WEIGHT]
    twice = write_text(tmp_path, "id,feature,weight\nm,a,2e38\nm,a,2e38\n")
    assert "add up to infinity (above 3.4028235e+38" in refusal(read_features, twice)


def test_bad_feature_weight(tmp_path):
    message = refusal(read_features, write_text(tmp_path, "id,feature,weight\nm,a,-2\n"))
    assert "data row 1 (line 2 of the file): weight '-2' is negative" in message


@pytest.mark.parametrize("value", ["yesterday", "2020-13-45", "12.5", "1e9", "0x10"])
def test_unparseable_timestamp_names_the_row(tmp_path, value):
    path = write_text(tmp_path, HEADER + f"u,a,1,1\nu,b,1,{value}\n")
    message = refusal(read_interactions, path)
    assert f"data row 2 (line 3 of the file): timestamp '{value}' is neither" in message
    assert "ISO-8601" in message


def test_empty_timestamp(tmp_path):
    message = refusal(read_interactions, write_text(tmp_path, HEADER + "u,a,1,\n"))
    assert "data row 1 (line 2 of the file): timestamp is empty" in message


def test_timestamp_beyond_int64(tmp_path):
    message = refusal(
        read_interactions, write_text(tmp_path, HEADER + "u,a,1,99999999999999999999\n")
    )
    assert "data row 1" in message
    assert "out of range" in message


def test_non_utf8_csv_names_byte_offset_and_line(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes("user_id,item_id\nu,i\nv,caf\u00e9\n".encode("latin-1"))
    message = refusal(read_interactions, path)
    assert "not valid UTF-8" in message
    assert "byte 0xe9 at byte offset 25 (line 3)" in message
    assert "must be UTF-8" in message


def test_non_utf8_gzipped_csv(tmp_path):
    path = tmp_path / "in.csv.gz"
    path.write_bytes(gzip.compress("id,feature\n\u00e9,x\n".encode("cp1252")))
    message = refusal(read_features, path)
    assert "not valid UTF-8" in message
    assert "after gunzip" in message


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "in.csv.gz"
    path.write_bytes(b"user_id,item_id\nu,i\n")
    assert "not a valid gzip file" in refusal(read_interactions, path)


def test_malformed_csv(tmp_path):
    path = write_text(tmp_path, 'user_id,item_id\nu,i\n"unclosed,x\nv,j,k,l,m\n')
    message = refusal(read_interactions, path)
    assert "not a well-formed CSV file" in message


def test_rows_with_more_fields_than_the_header_are_refused(tmp_path):
    """Issue 10 item 6: ``ni4,tag:rock,1,2,3`` was loaded as ``tag:rock=1``, exit 0."""
    path = write_text(tmp_path, "id,feature,weight\nni1,tag:pop,1\nni4,tag:rock,1,2,3\n")
    with pytest.raises(InputError) as info:
        read_features(path)
    assert (info.value.row, info.value.line) == (2, 3)
    assert "has 5 fields but the header has 3 (id, feature, weight)" in str(info.value)
    # one field too many, in a file with no weight column, after a blank line
    path = write_text(tmp_path, "user_id,item_id\nu,i\n\nv,j,2\n", "two.csv")
    with pytest.raises(InputError) as info:
        read_interactions(path)
    assert (info.value.row, info.value.line) == (2, 4)
    # a trailing comma is a field too
    path = write_text(tmp_path, "id,feature\na,x,\n", "three.csv")
    assert "has 3 fields but the header has 2" in refusal(read_features, path)
    # commas inside quotes are not extra fields
    path = write_text(tmp_path, 'id,feature\na,"x,y"\n', "four.csv")
    assert read_features(path)["feature"].tolist() == ["x,y"]


@given(
    n_rows=st.integers(1, 6),
    bad=st.data(),
    extra=st.lists(st.sampled_from(["", "1", "x", "2.5"]), min_size=1, max_size=3),
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_row_longer_than_the_header_is_named(tmp_path, n_rows, bad, extra):
    index = bad.draw(st.integers(0, n_rows - 1))
    rows = [f"u{n},i{n},1" + ("," + ",".join(extra) if n == index else "") for n in range(n_rows)]
    path = write_text(tmp_path, "user_id,item_id,weight\n" + "\n".join(rows) + "\n")
    with pytest.raises(InputError) as info:
        read_interactions(path)
    assert (info.value.row, info.value.line) == (index + 1, index + 2)
    assert f"has {3 + len(extra)} fields but the header has 3" in str(info.value)


def test_nul_character(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"user_id,item_id\nu,i\x00\n")
    assert "NUL character (line 2)" in refusal(read_interactions, path)


def test_not_a_parquet_file(tmp_path):
    path = write_text(tmp_path, "user_id,item_id\nu,i\n", "in.parquet")
    assert "not a readable Parquet file" in refusal(read_interactions, path)


def test_parquet_refusals_name_the_row(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(
        pa.table(
            {"user_id": ["u", "v", "w"], "item_id": ["a", "b", "c"], "weight": [1.0, -1.0, 2]}
        ),
        path,
    )
    message = refusal(read_interactions, path)
    assert "data row 2: weight -1.0 is negative" in message
    assert "line" not in message.split("weight")[0]


def test_parquet_null_weight_and_null_id(tmp_path):
    path = tmp_path / "w.parquet"
    pq.write_table(pa.table({"id": ["m", "n"], "feature": ["a", "b"], "weight": [1.0, None]}), path)
    assert "data row 2: weight is empty" in refusal(read_features, path)
    path = tmp_path / "i.parquet"
    pq.write_table(pa.table({"id": ["m", None], "feature": ["a", "b"]}), path)
    assert "data row 2: id is empty" in refusal(read_features, path)


def test_parquet_float_ids_are_refused(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [1.0, 2.0], "feature": ["a", "b"]}), path)
    message = refusal(read_features, path)
    assert "column id has Parquet type double" in message


def test_parquet_integer_ids_and_timestamp_types(tmp_path):
    path = tmp_path / "in.parquet"
    stamps = pa.array([-1500, 1_000_000], pa.timestamp("ms"))  # floored, like ISO strings
    pq.write_table(
        pa.table(
            {
                "user_id": [7, 8],
                "item_id": pa.array(["a", "b"]).dictionary_encode(),
                "timestamp": stamps,
            }
        ),
        path,
    )
    df = read_interactions(path)
    assert df["user_id"].tolist() == ["7", "8"]
    assert df["item_id"].tolist() == ["a", "b"]
    assert df["timestamp"].tolist() == [-2, 1000]


def test_duplicate_weights_adding_up_to_infinity(tmp_path):
    message = refusal(
        read_features, write_text(tmp_path, "id,feature,weight\nm,a,3e38\nm,a,3e38\n")
    )
    assert "add up to infinity" in message
    assert "'m'" in message


# -------------------------------------------------------------------------------- writers


def sample_interactions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["007", "u,2", 'q"uote', "NA"],
            "item_id": ["0001", "i", "multi\nline", " spaced "],
            "weight": [0.1, 1 / 3, 1e-300, 12345678.9],
            "timestamp": np.array([1, -2, 2**62, 0], dtype=np.int64),
        }
    )


@pytest.mark.parametrize("name", ["out.csv", "out.csv.gz", "out.parquet", "out.pq"])
def test_interactions_round_trip(tmp_path, name):
    df = sample_interactions()
    write_interactions(df, tmp_path / name)
    back = read_interactions(tmp_path / name)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert back["timestamp"].dtype == np.int64


@pytest.mark.parametrize("name", ["out.csv", "out.csv.gz", "out.parquet"])
def test_features_round_trip(tmp_path, name):
    df = pd.DataFrame(
        {"id": ["007", "m"], "feature": ["genre:Sci-Fi", "tag:a, b"], "weight": [1.0, 2.5]}
    )
    write_features(df, tmp_path / name)
    pd.testing.assert_frame_equal(read_features(tmp_path / name), df, check_dtype=False)


def test_writers_keep_extra_columns_after_the_canonical_ones(tmp_path):
    df = pd.DataFrame({"rating": [4.5], "item_id": ["i"], "user_id": ["u"], "weight": [1.0]})
    write_interactions(df, tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text().splitlines() == [
        "user_id,item_id,weight,rating",
        "u,i,1.0,4.5",
    ]


def test_writer_refuses_what_the_reader_would_refuse(tmp_path):
    df = pd.DataFrame({"id": ["m", "n"], "feature": ["a", "b"], "weight": [1.0, np.nan]})
    with pytest.raises(InputError) as info:
        write_features(df, tmp_path / "out.csv")
    assert "frame to write to" in str(info.value)
    assert "data row 2: weight is empty" in str(info.value)  # NaN is missing in pandas
    assert not (tmp_path / "out.csv").exists()


def test_writer_refuses_missing_columns_and_unknown_extensions(tmp_path):
    with pytest.raises(InputError, match="missing column"):
        write_interactions(pd.DataFrame({"user_id": ["u"]}), tmp_path / "out.csv")
    with pytest.raises(InputError, match="unsupported file type"):
        write_features(pd.DataFrame({"id": ["u"], "feature": ["f"]}), tmp_path / "out.xlsx")


# ------------------------------------------------------------------------------ properties

ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=20,
).filter(lambda s: s.strip() != "")
weights = st.floats(min_value=0, max_value=MAX_WEIGHT, allow_nan=False, width=64)
timestamps = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def interaction_frames(draw) -> pd.DataFrame:
    pairs = draw(st.lists(st.tuples(ids, ids), min_size=1, max_size=15, unique=True))
    n = len(pairs)
    return pd.DataFrame(
        {
            "user_id": [u for u, _ in pairs],
            "item_id": [i for _, i in pairs],
            "weight": draw(st.lists(weights, min_size=n, max_size=n)),
            "timestamp": np.array(
                draw(st.lists(timestamps, min_size=n, max_size=n)), dtype=np.int64
            ),
        }
    )


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(df=interaction_frames(), name=st.sampled_from(["x.csv", "x.csv.gz", "x.parquet"]))
def test_property_valid_frames_round_trip_exactly(tmp_path, df, name):
    write_interactions(df, tmp_path / name)
    back = read_interactions(tmp_path / name)
    assert back["user_id"].tolist() == df["user_id"].tolist()
    assert back["item_id"].tolist() == df["item_id"].tolist()
    assert back["weight"].tolist() == df["weight"].tolist()  # bit-exact floats
    assert back["timestamp"].tolist() == df["timestamp"].tolist()
    assert back.attrs["duplicates"] == 0


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(st.text(max_size=12), min_size=1, max_size=8), parquet=st.booleans())
def test_property_garbage_weights_are_refused_only_with_input_error(tmp_path, values, parquet):
    df = pd.DataFrame(
        {"id": [f"m{i}" for i in range(len(values))], "feature": "f", "weight": values}
    )
    path = tmp_path / ("g.parquet" if parquet else "g.csv")
    if parquet:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    else:
        df.to_csv(path, index=False)
    try:
        back = read_features(path)
    except InputError as exc:
        assert "weight" in str(exc) or "feature" in str(exc) or "id" in str(exc)
        return
    # Accepted: every weight was a finite number >= 0 written in Python float syntax.
    for written, read in zip(values, back["weight"], strict=True):
        assert math.isfinite(read) and read >= 0
        assert read == float(written)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(max_size=200), header=st.booleans(), suffix=st.sampled_from([".csv", ".parquet"])
)
def test_property_arbitrary_bytes_never_raise_anything_but_input_error(
    tmp_path, data, header, suffix
):
    path = tmp_path / f"b{suffix}"
    path.write_bytes((HEADER.encode() if header else b"") + data)
    try:
        df = read_interactions(path)
    except InputError:
        return
    assert list(df.columns) == ["user_id", "item_id", "weight", "timestamp"]
    assert len(df) >= 1


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stamp=st.text(max_size=30))
def test_property_garbage_timestamps_are_refused_only_with_input_error(tmp_path, stamp):
    df = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "timestamp": [stamp]})
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False, quoting=csv.QUOTE_ALL)
    try:
        back = read_interactions(path)
    except InputError as exc:
        assert "data row 1 (line 2 of the file): timestamp" in str(exc) or "NUL" in str(exc)
        return
    assert back["timestamp"].dtype == np.int64


def test_regression_carriage_return_inside_header_is_an_input_error(tmp_path):
    # Found by the arbitrary-bytes property test: csv.reader raised csv.Error here.
    p = tmp_path / "f.csv"
    p.write_bytes(b"id,fe\rature\n1,2\n")
    with pytest.raises(InputError, match="missing column"):
        read_features(p)
