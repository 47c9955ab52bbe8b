"""Your own delimited files: an interactions file and, optionally, user and item feature files.

Options: `interactions` (path, required), `users`, `items` (paths; relative to data_dir when given), `sep`
(","; fields may be quoted with "), `user_col` / `item_col` (the id columns in every file, default
user_id / item_id), `rating_col` (without it every row is a positive with rating 1.0, so a positive
threshold must then be <= 1), `timestamp_col` (numbers or ISO dates; without it file order is time),
`multi_columns` (comma list of multi-valued feature columns, values joined by "|") and `numeric_columns`
(comma list bucketed into 10 quantile bins). Every other column of a feature file is label-encoded;
extra columns of the interactions file are ignored. Ids are kept as strings (ids that differ only by
surrounding spaces are different ids, with a warning). All files need a header. Options naming files or
columns are text even where a command line reads them as numbers (`interactions=2024`, `user_col=0`).

Timestamps: whole numbers are read exactly as int64 (nanosecond logs exceed 2**53, where float64 would
round two interactions 100 ns apart into a tie) and a value beyond int64 is refused naming its line; other
numbers are float64, refused where two different values become the same float; ISO dates are Unix seconds
(int64, or float64 when a date has a fraction of a second, which is kept rather than floored into a tie).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from bench.config import comma_list
from bench.data.base import DatasetPlugin
from bench.data.readers import DataFormatError, Table, parse_integers, read_table, shown, take_options
from bench.data.types import ColumnSchema, DatasetFrames

QUOTE = '"'
MULTI_SEP = "|"
QUANTILES = 10
EXACT_FLOAT = 2 ** 53  # every whole number up to this is exact in float64
INT64_RANGE = (f"outside the 64-bit integer range {np.iinfo(np.int64).min}..{np.iinfo(np.int64).max}; a "
               "timestamp must fit in 64 bits")
TEXT_OPTIONS = ("interactions", "users", "items", "sep", "user_col", "item_col", "rating_col", "timestamp_col",
                "multi_columns", "numeric_columns")


class CsvDataset(DatasetPlugin):
    """Your own CSV files: interactions (+ optional user / item feature files), validated like MovieLens."""

    name = "csv"
    defaults: ClassVar[dict[str, Any]] = {
        "interactions": None, "users": None, "items": None, "sep": ",", "user_col": "user_id",
        "item_col": "item_id", "rating_col": None, "timestamp_col": None, "multi_columns": None,
        "numeric_columns": None,
    }

    def load(self) -> DatasetFrames:
        opts = take_options(self.name, self.options, self.defaults, text=TEXT_OPTIONS)
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
        column = opts["timestamp_col"]
        dates = column is not None and not pd.to_numeric(ratings.frame[column], errors="coerce").notna().any()
        return DatasetFrames(self.name, interactions, users, items, user_schema + item_schema,
                             seconds_per_unit=1.0 if dates else None)  # ISO dates become Unix seconds

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
    table.warn_space_variants(opts["user_col"], "user ids")
    table.warn_space_variants(opts["item_col"], "item ids")
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
    """Whole numbers exactly (int64), other numbers as float64, or ISO dates as Unix seconds; see the module
    docstring. Anything else, or a value that would lose its order, raises naming its lines."""
    raw = table.frame[column]
    integers, malformed, overflow = parse_integers(raw)
    if not malformed.any():
        if overflow.any():
            table.fail(overflow, f"column {column!r}: {shown(raw[overflow].iloc[0])} is {INT64_RANGE}")
        return integers
    if not pd.to_numeric(raw, errors="coerce").notna().any():
        return _iso_seconds(table, column)
    values = table.numeric(column)
    beyond = np.abs(values) >= 2.0 ** 63
    if beyond.any():
        table.fail(beyond, f"column {column!r}: {shown(raw[beyond].iloc[0])} is {INT64_RANGE}")
    _refuse_float_ties(table, column, values, raw.str.strip().to_numpy(dtype=object))
    if (values == np.round(values)).all() and (np.abs(values) <= EXACT_FLOAT).all():
        return values.astype(np.int64)  # '874724710.0' is a whole second, exactly
    return values


def _exact(text: str) -> Decimal | str:
    try:
        return Decimal(text)
    except InvalidOperation:
        return text


def _refuse_float_ties(table: Table, column: str, values: np.ndarray, texts: np.ndarray) -> None:
    """Refuse values that are different as written but the same float64 (float64 keeps ~16 digits, so
    '1700000000.0000001' and '...0000002' tie), naming their lines: their order would be lost. Exact
    comparison (Decimal) only for the distinct texts that share a float, normally none."""
    pairs = pd.DataFrame({"value": values, "text": texts}).drop_duplicates()
    shared = pairs[pairs["value"].duplicated(keep=False)]
    if shared.empty:
        return
    exact = shared.assign(exact=shared["text"].map(_exact)).drop_duplicates(["value", "exact"])
    tied = exact[exact["value"].duplicated(keep=False)]
    if tied.empty:
        return
    value = tied["value"].iloc[0]
    first, second = tied.loc[tied["value"] == value, "text"].iloc[:2]
    table.fail(values == value, f"column {column!r}: {first} and {second} are different times but the same 64-bit "
                                "float, so their order would be lost; write timestamps as whole numbers (e.g. "
                                "integer nanoseconds), which are read exactly")


def _iso_seconds(table: Table, column: str) -> np.ndarray:
    """ISO dates as Unix seconds: int64, or float64 when a date has a fraction of a second. A date the
    parser cannot hold at the column's precision is refused naming its line and the range it can hold."""
    raw = table.frame[column]
    dates = pd.to_datetime(raw, errors="coerce", utc=True, format="ISO8601")
    ticks = dates.dt.tz_convert(None).to_numpy()  # datetime64 in the parsed unit; never through nanoseconds
    unit = np.datetime_data(ticks.dtype)[0]
    bad = np.isnat(ticks)
    if bad.any():
        _refuse_out_of_range(table, column, bad, unit)
        table.fail(bad, f"column {column!r} must be a number or an ISO date, got {raw[bad].iloc[0]!r}")
    seconds = ticks.astype("datetime64[s]")  # floors, also before 1970
    if (seconds == ticks).all():
        return seconds.astype(np.int64)
    per_second = np.timedelta64(1, "s") // np.timedelta64(1, unit)
    fraction = (ticks - seconds).astype(np.int64) / per_second
    values = seconds.astype(np.int64) + fraction
    exact = ticks.astype(np.int64)
    if len(np.unique(values)) < len(np.unique(exact)):  # rounding only merges neighbours, never reorders
        order = np.argsort(exact, kind="stable")
        merged = (np.diff(values[order]) == 0) & (np.diff(exact[order]) != 0)
        where = order[np.flatnonzero(merged)[0]]
        table.fail(values == values[where], f"column {column!r}: {raw.iloc[where]!r} and a date a fraction of a "
                                            "second apart are the same 64-bit float of seconds, so their order "
                                            "would be lost; write timestamps as integer nanoseconds")
    return values


def _refuse_out_of_range(table: Table, column: str, bad: np.ndarray, unit: str) -> None:
    """A date the parser returned as missing because its year is beyond what `unit` precision holds."""
    raw = table.frame[column]
    years = pd.to_numeric(raw.str.extract(r"^\s*([+-]?\d{4,})-\d", expand=False), errors="coerce").to_numpy()
    info = np.iinfo(np.int64)
    # the days as text: numpy's cast of the extreme nanosecond values to days overflows
    low, high = (str(np.datetime64(v, unit)).split("T")[0] for v in (info.min + 1, info.max))
    low_year, high_year = (int(day.rsplit("-", 2)[0]) for day in (low, high))
    outside = bad & ((years < low_year) | (years > high_year))
    if outside.any():
        table.fail(outside, f"column {column!r}: the date {raw[outside].iloc[0]!r} is outside what a {unit} "
                            f"timestamp holds ({low} to {high}; a date with more digits of a second sets the "
                            "precision of the whole column)")


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
    table.warn_space_variants(id_col, f"{side} ids")
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
