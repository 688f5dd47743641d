"""Read and write interaction and feature files (CSV, gzipped CSV or Parquet).

Readers validate the whole file before they return, so a caller can validate first and
write to a store afterwards: a file is either accepted as a whole or refused with an
:class:`InputError` that names the file, the problem, the row and what to do.

Formats (chosen by extension: ``.csv``, ``.csv.gz``, ``.parquet``, ``.pq``), long format,
one row per pair, extra columns (named in the header) ignored, a row with more fields than
the header refused:

- interactions: ``user_id,item_id[,weight][,timestamp]``
- features: ``id,feature[,weight]``

Ids and feature names are kept verbatim as strings (``"007"`` stays ``"007"``, surrounding
spaces are kept); they must not be blank and are at most 256 characters long. Weights are
numbers from 0 to :data:`MAX_WEIGHT` (the largest float32: the model trains in float32,
where a larger weight is infinite), 1.0 when the column is absent. Duplicate pairs are
merged (their weights summed, and the sum must be in range too).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import itertools
import os
import re
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import HybridrecError

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_WEIGHT",
    "InputError",
    "file_kind",
    "parse_timestamp",
    "read_features",
    "read_interactions",
    "write_features",
    "write_interactions",
]

MAX_ID_LENGTH = 256
"""Longest accepted id or feature name, in characters."""

_INTERACTIONS_REQUIRED, _INTERACTIONS_OPTIONAL = ("user_id", "item_id"), ("weight", "timestamp")
_FEATURES_REQUIRED, _FEATURES_OPTIONAL = ("id", "feature"), ("weight",)

_CSV_SUFFIXES = (".csv", ".csv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_INT64_MIN, _INT64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max
MAX_WEIGHT = float(np.finfo(np.float32).max)
"""Largest accepted weight (about 3.4e38): the model trains in float32, where a larger
weight (1e39, say) is infinite and stops every training."""

_WEIGHT_HINT = (
    f"weights must be finite numbers >= 0 and <= {MAX_WEIGHT:.8g} (the float32 range the "
    "model trains in): fix the row, or drop the weight column to use 1.0"
)
_TIMESTAMP_HINT = (
    "timestamps must be integer unix seconds (e.g. 1700000000) or ISO-8601 "
    "(e.g. 2023-11-14T22:13:20Z; UTC when no offset is given): fix the row, "
    "or drop the timestamp column to use row order"
)


class InputError(HybridrecError, ValueError):
    """An input file (or a frame to write) is unusable; the message says why and what to do.

    Attributes: ``path`` (the file, as given), ``row`` (1-based data row, header not
    counted, or ``None``), ``line`` (1-based line of a CSV file, header included, or
    ``None``) and ``column`` (or ``None``).
    """

    def __init__(
        self,
        path: object,
        problem: str,
        hint: str = "",
        *,
        row: int | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path = str(path)
        self.row = row
        self.line = line
        self.column = column
        where = ""
        if row is not None:
            where = f"data row {row} (line {line} of the file)" if line else f"data row {row}"
            where += ": "
        message = f"{self.path}: {where}{problem}"
        if hint:
            message += f"; {hint}"
        super().__init__(message)


# --------------------------------------------------------------------------- public API


def read_interactions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Interactions from ``path``, validated and with duplicate pairs merged.

    Returns a frame with columns ``user_id`` (str), ``item_id`` (str), ``weight``
    (float64, 1.0 when the file has no weight column) and ``timestamp`` (int64 unix
    seconds, UTC). When the file has no timestamp column, the timestamp is the 0-based
    data row number, so that sorting by timestamp keeps file order (time splits then
    split by position); ``attrs["timestamps"]`` says ``"column"`` or ``"row_order"``.

    Rows with the same ``(user_id, item_id)`` are merged into the first one: weights
    summed, latest timestamp kept; ``attrs["duplicates"]`` counts the rows merged away.

    Raises :class:`InputError` for anything unusable.
    """
    return _interactions(_read_table(path, _INTERACTIONS_REQUIRED, _INTERACTIONS_OPTIONAL))


def _interactions(raw: _Raw) -> pd.DataFrame:
    n = len(raw.frame)
    user_ids = _check_ids(raw, "user_id")
    item_ids = _check_ids(raw, "item_id")
    weights = _check_weights(raw)
    if "timestamp" in raw.frame.columns:
        timestamps = _check_timestamps(raw)
        source = "column"
    else:
        timestamps = np.arange(n, dtype=np.int64)
        source = "row_order"
    frame = pd.DataFrame(
        {"user_id": user_ids, "item_id": item_ids, "weight": weights, "timestamp": timestamps}
    )
    frame = _merge_duplicates(
        raw, frame, ["user_id", "item_id"], {"weight": "sum", "timestamp": "max"}
    )
    frame.attrs["timestamps"] = source
    return frame


def read_features(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Features (of users or items) from ``path``, validated, duplicates merged.

    Returns a frame with columns ``id`` (str), ``feature`` (str) and ``weight`` (float64,
    1.0 when the file has no weight column). Rows with the same ``(id, feature)`` are
    merged into the first one with their weights summed; ``attrs["duplicates"]`` counts
    the rows merged away.

    Raises :class:`InputError` for anything unusable.
    """
    return _features(_read_table(path, _FEATURES_REQUIRED, _FEATURES_OPTIONAL))


def _features(raw: _Raw) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "id": _check_ids(raw, "id"),
            "feature": _check_ids(raw, "feature"),
            "weight": _check_weights(raw),
        }
    )
    return _merge_duplicates(raw, frame, ["id", "feature"], {"weight": "sum"})


def write_interactions(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write ``frame`` so that :func:`read_interactions` reads it back.

    Writes ``user_id,item_id`` and, when present, ``weight`` and ``timestamp``, followed
    by any other columns unchanged. The frame is validated as the reader would validate
    the file (raising :class:`InputError`) before anything is written.
    """
    _write(frame, path, _INTERACTIONS_REQUIRED, _INTERACTIONS_OPTIONAL, _interactions)


def file_kind(path: str | os.PathLike[str]) -> str:
    """``"csv"`` or ``"parquet"``, by the extension of ``path`` (which need not exist yet);
    :class:`InputError` for any other, so a writer can refuse before it writes anything."""
    return _file_kind(path)


def parse_timestamp(text: str) -> int:
    """Unix seconds of ``text`` (unix seconds or ISO-8601, UTC when no offset is given),
    read as a file's timestamp column is; ``ValueError`` saying what is allowed otherwise."""
    raw = _Raw("", pd.DataFrame({"timestamp": [text]}, dtype=object))
    try:
        return int(_check_timestamps(raw)[0])
    except InputError:
        raise ValueError(
            f"{text!r} is neither unix seconds (e.g. 1700000000) nor ISO-8601 "
            "(e.g. 2023-11-14T22:13:20Z; UTC when no offset is given)"
        ) from None


def write_features(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write ``frame`` (``id,feature[,weight]`` and other columns) for :func:`read_features`.

    Validated as the reader would validate the file before anything is written.
    """
    _write(frame, path, _FEATURES_REQUIRED, _FEATURES_OPTIONAL, _features)


# ---------------------------------------------------------------------------- reading


class _Raw:
    """Columns as found in a file, before validation, and how to name their rows."""

    def __init__(
        self,
        path: object,
        frame: pd.DataFrame,
        csv_text: str | None = None,
        found: list[str] | None = None,
    ) -> None:
        self.path = path
        self.frame = frame  # index 0..n-1; CSV columns are str ("" when missing)
        self.found = list(frame.columns) if found is None else found  # all columns, in order
        self._csv_text = csv_text
        self._lines: list[int] | None = None

    def error(
        self, index: int | None, problem: str, hint: str = "", column: str | None = None
    ) -> InputError:
        """An InputError about 0-based data row ``index`` (or the whole file if ``None``)."""
        if index is None:
            return InputError(self.path, problem, hint, column=column)
        line = self._line_of(index)
        return InputError(self.path, problem, hint, row=index + 1, line=line, column=column)

    def _line_of(self, index: int) -> int | None:
        # Computed only when reporting an error: pandas does not keep line numbers.
        if self._csv_text is None:
            return None
        if self._lines is None:
            self._lines = _csv_record_lines(self._csv_text)
        return self._lines[index] if index < len(self._lines) else None


def _read_table(
    path: object, required: tuple[str, ...], optional: tuple[str, ...], keep_all: bool = False
) -> _Raw:
    """The file's ``required`` and ``optional`` columns (every column with ``keep_all``)."""
    kind = _file_kind(path)
    p = Path(os.fspath(path))  # type: ignore[arg-type]
    if not p.exists():
        raise InputError(path, "file not found", "check the path")
    if p.is_dir():
        raise InputError(path, "is a directory, not a file", "give the path of a file")
    wanted = None if keep_all else required + optional
    if kind == "csv":
        raw = _read_csv(path, p, wanted)
    else:
        raw = _read_parquet(path, p, wanted)
    _check_columns(raw, kind, required, optional, keep_all)
    return raw


def _check_columns(
    raw: _Raw, kind: str, required: tuple[str, ...], optional: tuple[str, ...], keep_all=False
) -> None:
    wanted = required + optional
    missing = [c for c in required if c not in raw.frame.columns]
    if missing:
        found = ", ".join(repr(str(c)) for c in raw.found) or "none"
        hint = f"the file needs columns {', '.join(required)}"
        if optional:
            hint += f" (optional: {', '.join(optional)})"
        if kind == "csv" and len(raw.found) == 1 and re.search(r"[;\t|]", found):
            hint += "; the file must be comma-separated"
        raise raw.error(
            None, f"missing column(s) {', '.join(missing)}; found columns {found}", hint
        )
    if raw.frame.empty:
        problem = "has no data rows" if kind == "frame" else "has a header but no data rows"
        raise raw.error(None, problem, "add at least one row")
    if not keep_all:
        raw.frame = raw.frame[[c for c in wanted if c in raw.frame.columns]]


def _file_kind(path: object) -> str:
    name = os.fspath(path).lower()  # type: ignore[call-overload]
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    raise InputError(
        path,
        "unsupported file type",
        "use a .csv, .csv.gz, .parquet or .pq file (the extension decides the format)",
    )


def _read_csv(path: object, p: Path, wanted: tuple[str, ...] | None) -> _Raw:
    """The columns in ``wanted`` (all when None) of a CSV file, as str."""
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None
    if p.name.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(path, f"is not a valid gzip file ({exc})", "gzip it again") from None
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + bom
        line = data.count(b"\n", 0, offset) + 1
        raise InputError(
            path,
            f"is not valid UTF-8: byte 0x{data[offset]:02x} at byte offset {offset} "
            f"(line {line}){' after gunzip' if p.name.lower().endswith('.gz') else ''}",
            "the file must be UTF-8; re-save or convert it (e.g. iconv -f latin1 -t utf-8)",
        ) from None
    del data
    if not text.strip():
        raise InputError(path, "is empty", "a header line and at least one data row are needed")
    if "\x00" in text:
        # pandas' tokenizer treats NUL as end of field; refuse rather than misread.
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise InputError(
            path, f"contains a NUL character (line {line})", "the file must be UTF-8 text"
        )
    try:
        with warnings.catch_warnings():
            # a first data row longer than the header is only a warning: refuse it too
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                io.StringIO(text),
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                index_col=False,
                skip_blank_lines=True,
                engine="c",
            )  # no usecols: with it pandas silently drops fields beyond the header's
    except pd.errors.EmptyDataError:
        raise InputError(
            path, "is empty", "a header line and at least one data row are needed"
        ) from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, csv.Error, ValueError) as exc:
        _refuse_long_rows(path, text)
        raise InputError(
            path, f"is not a well-formed CSV file ({exc})", "check quoting and field counts"
        ) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.loc[:, ~frame.columns.duplicated()]
    frame = frame[[c for c in frame.columns if wanted is None or c in wanted]]
    frame = frame.reset_index(drop=True)
    try:
        header = next(csv.reader(io.StringIO(text)), [])  # to name all columns in errors
    except csv.Error:  # e.g. a stray CR inside the header: name the columns pandas saw
        header = list(frame.columns)
    return _Raw(path, frame, text, [h.strip() for h in header])


def _csv_records(text: str) -> Iterator[tuple[int, list[str]]]:
    """``(line, fields)`` of the header and every data record (line 1-based, where the
    record starts), skipping blank lines like pandas; stops at a csv.Error."""
    reader = csv.reader(io.StringIO(text, newline=""))
    end = 0
    try:
        for i, record in enumerate(reader):
            start, end = end + 1, reader.line_num
            if i == 0 or not (not record or (len(record) == 1 and not record[0].strip())):
                yield start, record
    except csv.Error:
        pass  # best effort: rows after the problem are not seen


def _csv_record_lines(text: str) -> list[int]:
    """Line (1-based) where each data record starts."""
    return [line for line, _ in itertools.islice(_csv_records(text), 1, None)]


def _refuse_long_rows(path: object, text: str) -> None:
    """Raise an InputError naming the first data row with more fields than the header."""
    records = _csv_records(text)
    _, header = next(records, (0, []))
    for row, (line, fields) in enumerate(records, 1):
        if len(fields) > len(header):
            raise InputError(
                path,
                f"has {len(fields)} fields but the header has {len(header)} "
                f"({', '.join(h.strip() for h in header)})",
                "remove the extra fields, quote values that contain commas, or name every "
                "column in the header",
                row=row,
                line=line,
            )


def _read_parquet(path: object, p: Path, wanted: tuple[str, ...] | None) -> _Raw:
    if p.stat().st_size == 0:
        raise InputError(path, "is empty", "write a Parquet file with data rows")
    try:
        found = pq.read_schema(p).names
        names = [n for n in found if wanted is None or n in wanted]
        if not names:  # nothing to read; the column check names what was found
            return _Raw(path, pd.DataFrame(), found=found)
        table = pq.read_table(p, columns=names)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            path, f"is not a readable Parquet file ({exc})", "write it again as Parquet"
        ) from None
    return _Raw(path, _frame_from_table(path, table, wanted), found=found)


def _raw_from_table(
    label: str, table: pa.Table, required: tuple[str, ...], optional: tuple[str, ...]
) -> _Raw:
    frame = _frame_from_table(label, table, required + optional)
    raw = _Raw(label, frame, found=table.column_names)
    _check_columns(raw, "frame", required, optional)
    return raw


def _frame_from_table(
    path: object, table: pa.Table, wanted: tuple[str, ...] | None
) -> pd.DataFrame:
    names = [n for n in table.column_names if wanted is None or n in wanted]
    columns = {name: _parquet_column(path, name, table.column(name)) for name in names}
    return pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows))


def _parquet_column(path: object, name: str, column: pa.ChunkedArray) -> pd.Series:
    """One column as a Series: str/None objects, float64 weights or int64 timestamps."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or _is_string_view(kind):
        return pd.Series(column.to_pylist(), dtype=object)
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    if name == "weight" and numeric:
        if column.null_count:
            i = _first(column.is_null().to_numpy(zero_copy_only=False))[0]
            raise InputError(path, "weight is empty", _WEIGHT_HINT, row=i + 1, column=name)
        return pd.Series(column.cast(pa.float64()).to_numpy(zero_copy_only=False))
    if name == "timestamp" and pa.types.is_timestamp(kind):
        # Epoch-based whatever the zone (naive ones are taken as UTC, as ISO strings are);
        # sub-second precision is floored, as for ISO strings.
        per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[kind.unit]
        ticks = column.cast(pa.int64())
        if column.null_count:  # None marks the empty cells, reported with their row
            values = [None if t is None else t // per_second for t in ticks.to_pylist()]
            return pd.Series(values, dtype=object)
        return pd.Series(ticks.to_numpy() // per_second, dtype=np.int64)
    if pa.types.is_integer(kind):
        if column.null_count:  # None marks the empty cells, reported with their row
            values = column.to_pylist()
            return pd.Series(values if name == "timestamp" else _strs(values), dtype=object)
        if name != "timestamp":
            return pd.Series(column.cast(pa.string()).to_pylist(), dtype=object)
        try:
            return pd.Series(column.cast(pa.int64()).to_numpy(zero_copy_only=False))
        except pa.ArrowInvalid:
            raise InputError(
                path, "column timestamp has values beyond int64", _TIMESTAMP_HINT, column=name
            ) from None
    rule = {
        "weight": "a numeric type",
        "timestamp": "int64 unix seconds, a timestamp type or ISO-8601 strings",
    }.get(name, "strings (or integers)")
    raise InputError(
        path, f"column {name} has Parquet type {kind}", f"store it as {rule}", column=name
    )


def _strs(values: list[object]) -> list[str | None]:
    return [None if v is None else str(v) for v in values]


def _is_string_view(kind: pa.DataType) -> bool:
    check = getattr(pa.types, "is_string_view", None)
    return bool(check and check(kind))


# ------------------------------------------------------------------------- validation


def _blank(values: pd.Series) -> np.ndarray:
    """True where a cell is missing (None) or only whitespace."""
    text = values.astype(object)
    missing = text.isna().to_numpy()
    stripped = text.where(~missing, "").astype(str).str.strip()
    return missing | (stripped == "").to_numpy()


def _first(mask: np.ndarray) -> tuple[int, int]:
    """Index of the first True and how many are True."""
    return int(np.argmax(mask)), int(mask.sum())


def _more(count: int) -> str:
    return f" ({count - 1} more row{'s' if count > 2 else ''} like it)" if count > 1 else ""


def _check_ids(raw: _Raw, column: str) -> pd.Series:
    values = raw.frame[column]
    blank = _blank(values)
    if blank.any():
        i, count = _first(blank)
        raise raw.error(
            i,
            f"{column} is empty{_more(count)}",
            f"every row needs a non-blank {column}",
            column=column,
        )
    values = values.astype(str)
    too_long = values.str.len().to_numpy() > MAX_ID_LENGTH
    if too_long.any():
        i, count = _first(too_long)
        raise raw.error(
            i,
            f"{column} is {len(values.iloc[i])} characters long{_more(count)}",
            f"ids and feature names may be at most {MAX_ID_LENGTH} characters; shorten them",
            column=column,
        )
    return values.reset_index(drop=True)


def _check_weights(raw: _Raw) -> np.ndarray:
    if "weight" not in raw.frame.columns:
        return np.ones(len(raw.frame), dtype=np.float64)
    values = raw.frame["weight"]
    if pd.api.types.is_float_dtype(values.dtype):
        numbers = values.to_numpy(np.float64)
    else:
        empty = _blank(values)
        if empty.any():
            i, count = _first(empty)
            raise raw.error(i, f"weight is empty{_more(count)}", _WEIGHT_HINT, column="weight")
        numbers = _parse_floats(raw, values.to_numpy(object))
    for bad, what in (
        (np.isnan(numbers), "is NaN"),
        (np.isinf(numbers), "is infinite"),
        (numbers < 0, "is negative"),
        (numbers > MAX_WEIGHT, f"is above {MAX_WEIGHT:.8g}, infinite in float32"),
    ):
        if bad.any():
            i, count = _first(bad)
            raise raw.error(
                i,
                f"weight {_show(values.iloc[i])} {what}{_more(count)}",
                _WEIGHT_HINT,
                column="weight",
            )
    return numbers


def _show(value: object) -> str:
    """A cell as written in the file: text quoted, numbers plain."""
    return repr(value) if isinstance(value, str) else str(float(value))  # type: ignore[arg-type]


def _parse_floats(raw: _Raw, values: np.ndarray) -> np.ndarray:
    try:
        # float() per value: reads back repr() exactly, which pandas' fast parser does not.
        return values.astype(np.float64)
    except (ValueError, TypeError, OverflowError):
        pass
    bad = [i for i, v in enumerate(values) if not _is_float(v)]
    raise raw.error(
        bad[0],
        f"weight {values[bad[0]]!r} is not a number{_more(len(bad))}",
        _WEIGHT_HINT,
        column="weight",
    )


def _is_float(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _check_timestamps(raw: _Raw) -> np.ndarray:
    values = raw.frame["timestamp"]
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.to_numpy(np.int64)
    empty = _blank(values)
    if empty.any():
        i, count = _first(empty)
        raise raw.error(i, f"timestamp is empty{_more(count)}", _TIMESTAMP_HINT, column="timestamp")
    text = values.astype(object).map(str)
    out = np.zeros(len(text), dtype=np.int64)
    integer = text.str.fullmatch(r"[+-]?[0-9]+").to_numpy(bool)
    if integer.any():
        numbers = [int(v) for v in text[integer]]
        too_big = np.array([not _INT64_MIN <= n <= _INT64_MAX for n in numbers])
        if too_big.any():
            j, count = _first(too_big)
            i = int(np.flatnonzero(integer)[j])
            raise raw.error(
                i,
                f"timestamp {text.iloc[i]} is out of range{_more(count)}",
                _TIMESTAMP_HINT,
                column="timestamp",
            )
        out[integer] = np.array(numbers, dtype=np.int64)
    if not integer.all():
        parsed = pd.to_datetime(text[~integer], format="ISO8601", utc=True, errors="coerce")
        bad = parsed.isna().to_numpy()
        if bad.any():
            j, count = _first(bad)
            i = int(np.flatnonzero(~integer)[j])
            raise raw.error(
                i,
                f"timestamp {text.iloc[i]!r} is neither unix seconds nor ISO-8601{_more(count)}",
                _TIMESTAMP_HINT,
                column="timestamp",
            )
        seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        out[~integer] = seconds.to_numpy(np.int64)
    return out


def _merge_duplicates(
    raw: _Raw, frame: pd.DataFrame, keys: list[str], how: dict[str, str]
) -> pd.DataFrame:
    duplicated = frame.duplicated(keys)
    n_duplicates = int(duplicated.sum())
    if n_duplicates:
        with np.errstate(over="ignore"):  # an infinite sum is reported below
            frame = frame.groupby(keys, sort=False, as_index=False).agg(how)
        summed = frame["weight"].to_numpy()
        too_big = ~(summed <= MAX_WEIGHT)  # NaN-safe; inf included
        if too_big.any():
            i = int(np.argmax(too_big))
            pair = ", ".join(f"{k}={frame[k].iloc[i]!r}" for k in keys)
            raise raw.error(
                None,
                f"the weights of the duplicate rows for {pair} add up to infinity "
                f"(above {MAX_WEIGHT:.8g}, infinite in float32)",
                "use smaller weights",
                column="weight",
            )
        frame = frame.reset_index(drop=True)
    frame.attrs["duplicates"] = n_duplicates
    return frame


# ---------------------------------------------------------------------------- writing


def _write(
    frame: pd.DataFrame,
    path: str | os.PathLike[str],
    required: tuple[str, ...],
    optional: tuple[str, ...],
    validate: Callable[[_Raw], pd.DataFrame],
) -> None:
    kind = _file_kind(path)
    ours = [c for c in required + optional if c in frame.columns]
    out = frame[ours + [c for c in frame.columns if c not in ours]].reset_index(drop=True)
    label = f"frame to write to {os.fspath(path)}"
    try:
        table = pa.Table.from_pandas(out, preserve_index=False)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise InputError(label, f"cannot be converted to a table ({exc})") from None
    # The same checks as reading the file back, so that nothing unreadable is written.
    validate(_raw_from_table(label, table, required, optional))
    target = Path(os.fspath(path))
    if kind == "csv":
        compression = {"method": "gzip", "mtime": 0} if target.name.endswith(".gz") else None
        # Lines end in "\n", so the csv module would not quote a lone "\r" in a field.
        text_columns = [c for c in out.columns if not pd.api.types.is_numeric_dtype(out[c])]
        has_cr = any(out[c].astype(str).str.contains("\r", regex=False).any() for c in text_columns)
        out.to_csv(
            target,
            index=False,
            compression=compression,
            lineterminator="\n",
            quoting=csv.QUOTE_ALL if has_cr else csv.QUOTE_MINIMAL,
        )
    else:
        pq.write_table(table, target)
