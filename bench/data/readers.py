"""Validated reading of the files and options a user hands a dataset plugin.

Every loader reads through `read_table`, so a broken file fails the same way everywhere: a
`DataFormatError` naming the file, the first bad line numbers and what was expected. Fields are read as
strings and counted per line with numpy over the raw bytes *before* pandas parses them, because pandas
silently pads short rows with "" and would turn a wrong separator into one wide column.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_SEP_NAMES = {"\t": "tab", "|": "'|'", ",": "comma", ";": "semicolon", "::": "'::'"}
_PLACEHOLDER = "\x1f"  # stands in for a multi-character separator so pandas' fast C parser can split
_MAX_LINES_SHOWN = 5


class DataFormatError(ValueError):
    """A data file (or a dataset option) is not what its format requires."""


def shown(value: Any) -> str:
    """A value as an error message shows it: strings quoted (stray spaces visible), numbers plain."""
    value = value.item() if isinstance(value, np.generic) else value
    return repr(value) if isinstance(value, str) else str(value)


def sep_name(sep: str) -> str:
    return _SEP_NAMES.get(sep, repr(sep))


def describe_lines(lines: np.ndarray) -> str:
    """'line 3' / 'lines 3, 7, 9, 12, 15 (and 4 more: 9 in total)'."""
    lines = np.asarray(lines)
    listed = ", ".join(str(int(n)) for n in lines[:_MAX_LINES_SHOWN])
    if len(lines) == 1:
        return f"line {listed}"
    extra = len(lines) - _MAX_LINES_SHOWN
    return f"lines {listed}" + (f" (and {extra} more: {len(lines)} in total)" if extra > 0 else "")


@dataclass
class Table:
    """A delimited file read as strings, with the 1-based line number of each row for error messages."""

    path: Path
    frame: pd.DataFrame
    lines: np.ndarray

    def fail(self, bad: np.ndarray, problem: str) -> None:
        """Raise naming the rows where `bad` is True (no-op when none is)."""
        bad = np.asarray(bad, dtype=bool)
        if bad.any():
            raise DataFormatError(f"{self.path}: {describe_lines(self.lines[bad])}: {problem}")

    def numeric(self, column: str, *, integer: bool = False, low: float | None = None,
                high: float | None = None) -> np.ndarray:
        """The column parsed as numbers (int64 when `integer`); unparsable or out-of-range values raise."""
        raw = self.frame[column]
        try:  # fast path: numpy parses clean columns several times faster than pd.to_numeric
            values = raw.to_numpy(dtype=object).astype(np.float64)
        except ValueError:
            values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        kind = "an integer" if integer else "a number"
        bad = ~np.isfinite(values)
        if integer:
            bad |= np.isfinite(values) & (values != np.round(values))
        if bad.any():
            self.fail(bad, f"column {column!r} must be {kind}, got {shown(raw.to_numpy()[bad][0])}")
        if low is not None or high is not None:
            lo = -np.inf if low is None else low
            hi = np.inf if high is None else high
            out = (values < lo) | (values > hi)
            if out.any():
                span = f">= {low}" if high is None else f"<= {high}" if low is None else f"within {low}..{high}"
                self.fail(out, f"column {column!r} must be {span}, got {shown(raw.to_numpy()[out][0])}")
        return values.astype(np.int64) if integer else values

    def choice(self, column: str, allowed: Iterable[str]) -> None:
        """Every value of the column must be one of `allowed`."""
        allowed = list(allowed)
        raw = self.frame[column]
        bad = ~raw.isin(allowed).to_numpy()
        if bad.any():
            self.fail(bad, f"column {column!r} must be one of {allowed}, got {shown(raw.to_numpy()[bad][0])}")

    def non_empty(self, *columns: str) -> None:
        for column in columns:
            self.fail((self.frame[column].str.strip() == "").to_numpy(), f"column {column!r} is empty")

    def unique(self, column: str, values: np.ndarray | pd.Series | None = None) -> None:
        """No id listed twice (a duplicated user or item would silently double its rows in every join)."""
        values = self.frame[column] if values is None else pd.Series(values)
        dup = values.duplicated(keep="first").to_numpy()
        if dup.any():
            self.fail(dup, f"{column} {shown(values.to_numpy()[dup][0])} is listed twice")

    def known(self, column: str, values: np.ndarray | pd.Series, known: np.ndarray | pd.Series,
              where: Path | str) -> None:
        """Every id in `values` (this table's `column`) must appear in `known` (read from `where`)."""
        values = pd.Series(values)
        bad = ~values.isin(pd.Series(known)).to_numpy()
        if bad.any():
            unknown = pd.unique(values[bad])
            others = f" (and {len(unknown) - 1} other unknown ids)" if len(unknown) > 1 else ""
            self.fail(bad, f"{column} {shown(unknown[0])}{others} is not in {where}")


def read_table(path: str | Path, *, sep: str, names: Sequence[str] | None = None, encoding: str = "utf-8",
               quotechar: str | None = None) -> Table:
    """Read a delimited file as strings after checking that every line has the same number of fields.

    names: the columns of a header-less format (their count is the expected field count); None means the
    first line is a header naming the columns. quotechar: '"' for user CSVs where a quoted field may hold
    the separator (or a newline); None for formats that never quote (MovieLens).
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF8) and codecs.lookup(encoding).name == "utf-8":
        raw = raw[len(codecs.BOM_UTF8):]  # spreadsheet exports start with one; it is not part of a name
    if not raw.strip():
        raise DataFormatError(f"{path}: file is empty")
    _check_decodes(path, raw, encoding)
    seps = sep.encode(encoding)
    if len(seps) > 1:
        if _PLACEHOLDER.encode() in raw:
            raise DataFormatError(f"{path}: contains the control character \\x1f; cannot split on {sep!r}")
        raw = raw.replace(seps, _PLACEHOLDER.encode())
        seps = _PLACEHOLDER.encode()
    fields, lines = _count_fields(path, raw, seps[0], quotechar)
    if names is None:
        expected, header_line = int(fields[0]), int(lines[0])
        fields, lines = fields[1:], lines[1:]
        if len(lines) == 0:
            raise DataFormatError(f"{path}: has a header but no rows")
    else:
        expected = len(names)
    bad = fields != expected
    if bad.any():
        got = int(fields[bad][0])
        what = f"expected {expected} {sep_name(sep)}-separated fields"
        if names is not None:
            what += f" ({', '.join(names)})"
        hint = " (is the separator right?)" if (fields[bad] == 1).all() else ""
        raise DataFormatError(f"{path}: {describe_lines(lines[bad])}: {what}, found {got}{hint}")
    frame = pd.read_csv(
        io.BytesIO(raw), sep=seps.decode(encoding), header=None, names=range(expected), dtype=str,
        keep_default_na=False, na_filter=False, quoting=csv.QUOTE_NONE if quotechar is None else csv.QUOTE_MINIMAL,
        quotechar=quotechar or '"', encoding=encoding, engine="c", skip_blank_lines=True,
    )
    if names is None:
        names = [str(c).strip() for c in frame.iloc[0]]
        frame = frame.iloc[1:].reset_index(drop=True)
        dupes = sorted({c for c in names if names.count(c) > 1})
        if dupes:
            raise DataFormatError(f"{path}: line {header_line}: the header names {dupes} more than once")
    frame.columns = list(names)
    if len(frame) != len(lines):  # only a stray carriage return inside a field could cause this
        raise DataFormatError(f"{path}: parsed {len(frame)} rows from {len(lines)} lines; "
                              "does a field contain a bare carriage return?")
    return Table(path, frame, lines)


def _check_decodes(path: Path, raw: bytes, encoding: str) -> None:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(f"{path}: line {line}: not valid {encoding} text ({exc.reason}); "
                              "expected the file's documented encoding") from None


def _count_fields(path: Path, raw: bytes, sep: int, quotechar: str | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per non-blank record: the number of fields and its 1-based line number.

    Vectorised over the byte positions of separators, newlines and quotes; a separator or newline
    inside a quoted field (odd number of quotes before it) does not count.
    """
    buf = np.frombuffer(raw, dtype=np.uint8)
    seps, newlines = np.flatnonzero(buf == sep), np.flatnonzero(buf == 10)
    ends = newlines
    if quotechar is not None:
        quotes = np.flatnonzero(buf == ord(quotechar))
        if len(quotes) % 2:
            line = int(np.searchsorted(newlines, quotes[-1])) + 1
            raise DataFormatError(f"{path}: line {line}: a quoted field is never closed (unbalanced {quotechar})")
        seps = seps[np.searchsorted(quotes, seps) % 2 == 0]
        ends = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
    if len(ends) == 0 or ends[-1] != len(buf) - 1:
        ends = np.append(ends, len(buf))  # last line without a trailing newline
    starts = np.concatenate([[0], ends[:-1] + 1])
    fields = np.searchsorted(seps, ends) - np.searchsorted(seps, starts) + 1
    lines = np.searchsorted(newlines, starts) + 1
    length = ends - starts
    blank = (length == 0) | ((length == 1) & (buf[np.minimum(starts, len(buf) - 1)] == 13))
    return fields[~blank], lines[~blank]


def take_options(dataset: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The plugin's options with defaults filled in; an unknown one names the dataset and what it takes."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"dataset {dataset!r} got unknown option(s) {unknown}; it takes: "
                        f"data_dir, cache_dir, download, {', '.join(defaults)}")
    return {**defaults, **options}


def split_list(value: str | Sequence[str] | None) -> list[str]:
    """An option given as 'a,b' or ['a', 'b'] (or None) as a list of names."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [v.strip() for v in items if v.strip()]
