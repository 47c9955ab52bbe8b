"""Your own delimited files: an interactions file and, optionally, user and item feature files.

Options: `interactions` (path, required), `users`, `items` (paths; relative to data_dir when given), `sep`
(","; fields may be quoted with "), `user_col` / `item_col` (the id columns in every file, default
user_id / item_id), `rating_col` (without it every row is a positive with rating 1.0, so a positive
threshold must then be <= 1), `timestamp_col` (numbers or ISO dates; without it file order is time),
`multi_columns` (comma list of multi-valued feature columns, values joined by "|") and `numeric_columns`
(comma list bucketed into 10 quantile bins). Every other column of a feature file is label-encoded;
extra columns of the interactions file are ignored. Ids are kept as strings. All files need a header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from bench.config import comma_list
from bench.data.base import DatasetPlugin
from bench.data.readers import DataFormatError, Table, read_table, take_options
from bench.data.types import ColumnSchema, DatasetFrames

QUOTE = '"'
MULTI_SEP = "|"
QUANTILES = 10


class CsvDataset(DatasetPlugin):
    """Your own CSV files: interactions (+ optional user / item feature files), validated like MovieLens."""

    name = "csv"
    defaults: ClassVar[dict[str, Any]] = {
        "interactions": None, "users": None, "items": None, "sep": ",", "user_col": "user_id",
        "item_col": "item_id", "rating_col": None, "timestamp_col": None, "multi_columns": None,
        "numeric_columns": None,
    }

    def load(self) -> DatasetFrames:
        opts = take_options(self.name, self.options, self.defaults)
        if not opts["interactions"]:
            raise DataFormatError("dataset 'csv': option interactions (the path of the interactions file) "
                                  "is required")
        multi, numeric = comma_list(opts["multi_columns"]), comma_list(opts["numeric_columns"])
        if set(multi) & set(numeric):
            raise DataFormatError(f"dataset 'csv': {sorted(set(multi) & set(numeric))} named in both "
                                  "multi_columns and numeric_columns")
        ratings = read_table(self._path(opts["interactions"]), sep=opts["sep"], quotechar=QUOTE)
        interactions = _interactions(ratings, opts)
        sides = {}
        for side, key in (("user", "users"), ("item", "items")):
            sides[side] = _features(self._path(opts[key]), side, opts[f"{side}_col"], opts["sep"], multi,
                                    numeric, ratings, interactions[f"{side}_id"])
        for option, names in (("multi_columns", multi), ("numeric_columns", numeric)):
            missing = sorted(set(names) - {s.name for _, schema in sides.values() for s in schema})
            if missing:
                raise DataFormatError(f"dataset 'csv': option {option} names {missing}, which no users or "
                                      "items file has")
        (users, user_schema), (items, item_schema) = sides["user"], sides["item"]
        clash = sorted({s.name for s in user_schema} & {s.name for s in item_schema})
        if clash:
            raise DataFormatError(f"dataset 'csv': column(s) {clash} appear in both the users and the items "
                                  "file; a field name must be unique, so rename one")
        return DatasetFrames(self.name, interactions, users, items, user_schema + item_schema)

    def _path(self, value: str | Path | None) -> Path | None:
        if value is None:
            return None
        path = Path(value).expanduser()
        return self.data_dir / path if self.data_dir is not None and not path.is_absolute() else path


def _require(table: Table, column: str, option: str) -> None:
    if column not in table.frame.columns:
        raise DataFormatError(f"{table.path}: has no column {column!r} (option {option}); "
                              f"its header names {list(table.frame.columns)}")


def _interactions(table: Table, opts: dict[str, Any]) -> pd.DataFrame:
    """user_id, item_id (strings), rating (1.0 without rating_col), timestamp (row number without one)."""
    for option in ("user_col", "item_col", "rating_col", "timestamp_col"):
        if opts[option] is not None:
            _require(table, opts[option], option)
    table.non_empty(opts["user_col"], opts["item_col"])
    n = len(table.frame)
    rating = np.ones(n) if opts["rating_col"] is None else table.numeric(opts["rating_col"])
    timestamp = np.arange(n) if opts["timestamp_col"] is None else _timestamps(table, opts["timestamp_col"])
    return pd.DataFrame({
        "user_id": table.frame[opts["user_col"]].to_numpy(),
        "item_id": table.frame[opts["item_col"]].to_numpy(),
        "rating": rating.astype(np.float64),
        "timestamp": timestamp,
    })


def _timestamps(table: Table, column: str) -> np.ndarray:
    """Numbers as given (int64 when whole), or ISO dates as Unix seconds; anything else raises."""
    raw = table.frame[column]
    if pd.to_numeric(raw, errors="coerce").notna().any():
        values = table.numeric(column)
        return values.astype(np.int64) if (values == np.round(values)).all() else values
    dates = pd.to_datetime(raw, errors="coerce", utc=True, format="ISO8601")
    bad = dates.isna().to_numpy()
    if bad.any():
        table.fail(bad, f"column {column!r} must be a number or an ISO date, got {raw[bad].iloc[0]!r}")
    return ((dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)


def _features(path: Path | None, side: str, id_col: str, sep: str, multi: list[str], numeric: list[str],
              ratings: Table, rated: pd.Series) -> tuple[pd.DataFrame, list[ColumnSchema]]:
    """One side's frame and schema: just the rated ids without a file, else the file's columns."""
    id_name = f"{side}_id"
    id_schema = ColumnSchema(id_name, side, "label", is_id=True)
    if path is None:
        return pd.DataFrame({id_name: pd.unique(rated)}), [id_schema]
    table = read_table(path, sep=sep, quotechar=QUOTE)
    _require(table, id_col, f"{side}_col")
    features = [c for c in table.frame.columns if c != id_col]
    if id_name in features:
        raise DataFormatError(f"{path}: column {id_name!r} would clash with the {side} id taken from "
                              f"{id_col!r} (option {side}_col); rename one of them")
    table.non_empty(id_col)
    table.unique(id_col)
    ratings.known(id_col, rated, table.frame[id_col], path)
    columns, schema = {id_name: table.frame[id_col].to_numpy()}, [id_schema]
    for column in features:
        if column in numeric:
            columns[column] = table.numeric(column)
            schema.append(ColumnSchema(column, side, "bucket", {"quantiles": QUANTILES}))
        elif column in multi:
            columns[column] = table.frame[column].to_numpy()
            schema.append(ColumnSchema(column, side, "multihot", {"sep": MULTI_SEP}))
        else:
            columns[column] = table.frame[column].to_numpy()
            schema.append(ColumnSchema(column, side, "label"))
    return pd.DataFrame(columns), schema
