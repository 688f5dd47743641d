"""Item metadata files: ``id`` and one column per field, one row per item.

``id,title`` is the usual shape (the bundled sample's ``item_metadata.csv``); every other
column is a field too (``id,title,url``). CSV (``.csv``, ``.csv.gz``) or Parquet (string
or integer columns), chosen by extension. An empty cell means "no such field for this
item". Validated whole, like the other readers: blank or over-long ids, a repeated id,
values over ``MAX_VALUE_LENGTH`` characters are refused with their row.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..store.metadata import MAX_FIELDS, MAX_VALUE_LENGTH, _missing
from .files import _blank, _check_ids, _file_kind, _first, _more, _read_table

__all__ = ["read_metadata", "write_metadata"]


def read_metadata(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A frame ``id`` (str) and one column per field (str, None where empty)."""
    raw = _read_table(path, ("id",), (), keep_all=True)
    ids = _check_ids(raw, "id")
    fields = [c for c in raw.frame.columns if c != "id"]
    if not fields:
        raise raw.error(None, "has no metadata column", "add columns such as title beside id")
    if len(fields) > MAX_FIELDS:
        raise raw.error(None, f"has {len(fields)} metadata columns; at most {MAX_FIELDS}")
    repeated = ids.duplicated().to_numpy()
    if repeated.any():
        i, count = _first(repeated)
        raise raw.error(
            i,
            f"id {ids.iloc[i]!r} appears again{_more(count)}",
            "give each item one row",
            column="id",
        )
    out = {"id": ids}
    for field in fields:
        values = raw.frame[field]
        empty = _blank(values)
        text = [None if e else str(v) for v, e in zip(values.tolist(), empty.tolist())]
        long = np.array([v is not None and len(v) > MAX_VALUE_LENGTH for v in text], bool)
        if long.any():
            i, count = _first(long)
            raise raw.error(
                i,
                f"{field} is {len(text[i])} characters long{_more(count)}",
                f"metadata values may be at most {MAX_VALUE_LENGTH} characters",
                column=field,
            )
        out[str(field)] = pd.Series(text, dtype=object)
    return pd.DataFrame(out)


def write_metadata(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a frame as :func:`read_metadata` returns it (``id`` first), CSV or Parquet."""
    kind = _file_kind(path)
    columns = ["id"] + sorted(c for c in frame.columns if c != "id")
    cells = {c: [None if _missing(v) else str(v) for v in frame[c].tolist()] for c in columns}
    target = Path(os.fspath(path))
    if kind == "parquet":
        pq.write_table(
            pa.table({c: pa.array(v, type=pa.string()) for c, v in cells.items()}), target
        )
        return
    out = pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in cells.items()})
    has_cr = any("\r" in v for values in cells.values() for v in values if v is not None)
    compression = {"method": "gzip", "mtime": 0} if target.name.endswith(".gz") else None
    out.to_csv(
        target,
        index=False,
        compression=compression,
        lineterminator="\n",
        quoting=csv.QUOTE_ALL if has_cr else csv.QUOTE_MINIMAL,
    )
