"""Validated reading of the files and options a user hands a dataset plugin.

Every loader reads through `read_table`, so a broken file fails the same way everywhere: a
`DataFormatError` naming the file, the first bad line numbers and what was expected. Fields are read as
strings and counted per line with numpy over the raw bytes *before* pandas parses them, because pandas
silently pads short rows with "" and would turn a wrong separator into one wide column.

Integers are parsed exactly, never through float64 (where 9007199254740993 reads as ...992): digits with
an optional sign, checked with numpy's vectorised string functions, then converted; a value beyond the
64-bit range is an error naming it. A file is read in chunks of about `CHUNK_BYTES`, cut at record ends,
and the columns named in `read_table(parse=...)` are converted chunk by chunk, so a 20M-row ratings file
is held as numbers, never as 80M Python strings; what is left as text is concatenated at the end.

Before a large file is read, the memory reading it needs (the bytes, plus the measured cost of each field
the reader keeps: a Python string for text, 8 bytes for a number) is compared with what the machine has
available, so a 30 GB file is refused by name instead of ending in a MemoryError.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.dtypes import StringDType

_SEP_NAMES = {"\t": "tab", "|": "'|'", ",": "comma", ";": "semicolon", "::": "'::'"}
_PLACEHOLDER = "\x1f"  # stands in for a multi-character separator so pandas' fast C parser can split
_MAX_LINES_SHOWN = 5
CHUNK_BYTES = 1 << 24  # a file is counted and parsed about 16 MiB at a time
_INT64_MAX = "9223372036854775807"  # digits of 2**63 - 1; the most negative int64 is -(2**63)
_INT64_MIN_DIGITS = "9223372036854775808"
_ASCII_COMPATIBLE = {"utf-8", "iso8859-1", "ascii", "cp1252"}  # an ASCII-only file decodes in all of them
# Peak memory of read_table beyond the file's bytes, measured (ru_maxrss, pandas 3 without pyarrow, 20-230 MB
# files): 29-45 bytes per text field kept (a Python string and its pointer; one-character strings are shared),
# 8 per parsed number, whose chunk (CHUNK_BYTES) is held as strings while it is converted.
TEXT_FIELD_BYTES = 40
NUMBER_FIELD_BYTES = 8
SIZE_CHECKED_FROM = 1 << 26  # files smaller than this (64 MiB) are read without estimating their memory
_SAMPLE_BYTES = 1 << 20  # the head of a file sampled to count its fields per byte


class DataFormatError(ValueError):
    """A data file (or a dataset option) is not what its format requires."""


class DataWarning(UserWarning):
    """A data file loads, but something about it suggests it is not the file it should be."""


class TooLargeError(DataFormatError):
    """A file (or a generated dataset) would need more memory than the machine has available."""


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; sizes in messages."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().split()
    except OSError:
        return None
    return int(text[0]) if text and text[0].isdigit() else None


def available_memory() -> int | None:
    """Bytes this process can still allocate: the least of the machine's MemAvailable, the room left under
    a cgroup memory limit (a container's) and under `ulimit -v`; None where none of them can be read."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    if not limits:
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:  # v1 says "no limit" with a huge number
            limits.append(max(limit - usage, 0))
            break
    try:
        import resource  # not on Windows
    except ImportError:
        return min(limits) if limits else None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        pages = _read_int("/proc/self/statm")  # the first field: this process's virtual size in pages
        used = pages * os.sysconf("SC_PAGE_SIZE") if pages is not None else 0
        limits.append(max(soft - used, 0))
    return min(limits) if limits else None


def check_memory(needed: int, subject: str, advice: str) -> None:
    """Refuse work that would need more memory than is available (TooLargeError naming `subject`, both
    figures and `advice`); nothing is refused where the available memory cannot be read."""
    available = available_memory()
    if available is not None and needed > available:
        raise TooLargeError(f"{subject} would need about {human_bytes(needed)} of memory, but "
                            f"{human_bytes(available)} is available; {advice}")


def reading_memory(path: Path, size: int, sep: str, parse: Mapping[str, Any] | None) -> int:
    """About how much memory read_table needs for a file of `size` bytes: the bytes themselves, and each field
    (counted on the file's first MiB) as a string or, in a parsed column, a number plus its chunk's strings."""
    with open(path, "rb") as fh:
        head = fh.read(_SAMPLE_BYTES)
    lines = max(head.count(b"\n"), 1)
    per_line = max(head.count(sep.encode("latin-1", "replace")) / lines + 1, 1)
    fields = per_line * lines * size / max(len(head), 1)
    parsed = min(len(parse or {}) / per_line, 1.0)
    text = (1 - parsed) * fields * TEXT_FIELD_BYTES
    numbers = parsed * fields * (NUMBER_FIELD_BYTES + TEXT_FIELD_BYTES * min(CHUNK_BYTES / size, 1))
    return int(size + text + numbers)


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


def parse_integers(strings: np.ndarray | pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact int64 values of decimal strings: (values, malformed, overflow); values are 0 where not valid.

    Accepted: ASCII digits with an optional leading + or -, surrounding whitespace ignored, and nothing
    else (no "1.0", "1e3", "1_000" or other scripts' digits). overflow: well formed but outside
    -2**63..2**63-1. Vectorised with numpy's string ufuncs; no Python loop over the values.
    """
    text = np.strings.strip(np.asarray(strings, dtype=object).astype(StringDType()))
    negative = np.strings.startswith(text, "-")
    digits = np.strings.lstrip(text, "+-")  # not np.strings.slice: before NumPy 2.3.5 it fails on short strings
    signs = np.strings.str_len(text) - np.strings.str_len(digits)
    well_formed = (signs <= 1) & (np.strings.str_len(digits) > 0) & (
        np.strings.str_len(np.strings.lstrip(digits, "0123456789")) == 0)
    significant = np.strings.lstrip(digits, "0")
    width = np.strings.str_len(significant)
    too_big = (width > len(_INT64_MAX)) | ((width == len(_INT64_MAX)) & (significant > _INT64_MAX)
                                           & ~(negative & (significant == _INT64_MIN_DIGITS)))
    overflow = well_formed & too_big
    valid = well_formed & ~overflow
    values = np.where(valid, text, "0").astype(np.int64)
    return values, ~well_formed, overflow


def _parse_numbers(strings: np.ndarray | pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """float64 values and where they are not finite numbers (nan there)."""
    raw = np.asarray(strings, dtype=object)
    try:  # fast path: numpy parses clean columns several times faster than pd.to_numeric
        values = raw.astype(np.float64)
    except ValueError:
        values = pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values, ~np.isfinite(values)


def _integer_range(dtype: np.dtype) -> str:
    info = np.iinfo(dtype)
    return f"{info.min}..{info.max}"


def _convert(strings: np.ndarray, kind: np.dtype) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """One column's strings as `kind` numbers, and its problems: (message, where) in the order to report."""
    if kind.kind == "f":
        values, bad = _parse_numbers(strings)
        narrowed = values.astype(kind, copy=False)
        too_big = ~bad & ~np.isfinite(narrowed)  # finite as float64, not as float32
        return narrowed, [("column {column} must be a number, got {value}", bad),
                          (f"column {{column}}: {{value}} is outside the {kind.name} range", too_big)]
    values, malformed, overflow = parse_integers(strings)
    outside = "column {column}: {value} is outside the "
    problems = [("column {column} must be an integer, got {value}", malformed),
                (outside + f"64-bit integer range {_integer_range(np.int64)}", overflow)]
    if kind != np.int64:
        info = np.iinfo(kind)
        narrow = ~malformed & ~overflow & ((values < info.min) | (values > info.max))
        problems.append((outside + f"{kind.name} range {_integer_range(kind)}", narrow))
        values = np.where(narrow, 0, values)
    return values.astype(kind, copy=False), problems


@dataclass
class Table:
    """A delimited file read as strings, with the 1-based line number of each row for error messages.

    Columns named in read_table's `parse` are numbers already (int or float dtypes); the rest are strings.
    """

    path: Path
    frame: pd.DataFrame
    lines: np.ndarray
    header_line: int | None = None  # the line naming the columns, when the file has one

    def fail(self, bad: np.ndarray, problem: str) -> None:
        """Raise naming the rows where `bad` is True (no-op when none is)."""
        bad = np.asarray(bad, dtype=bool)
        if bad.any():
            raise DataFormatError(f"{self.path}: {describe_lines(self.lines[bad])}: {problem}")

    def numeric(self, column: str, *, integer: bool = False, low: float | None = None,
                high: float | None = None) -> np.ndarray:
        """The column parsed as numbers (exact int64 when `integer`); unparsable or out-of-range values raise.

        A column parsed while reading keeps its dtype, and only its range (and integrality) is checked.
        """
        raw = self.frame[column]
        kind = "an integer" if integer else "a number"
        if pd.api.types.is_numeric_dtype(raw.dtype):
            values = raw.to_numpy()
            if integer and values.dtype.kind == "f":
                self.fail(values != np.round(values), f"column {column!r} must be an integer, got "
                                                      f"{shown(values[values != np.round(values)][0])}")
            shown_values = values
        elif integer:
            values, malformed, overflow = parse_integers(raw)
            if malformed.any():
                self.fail(malformed, f"column {column!r} must be {kind}, got {shown(raw.to_numpy()[malformed][0])}")
            if overflow.any():
                self.fail(overflow, f"column {column!r}: {shown(raw.to_numpy()[overflow][0])} is outside the "
                                    f"64-bit integer range {_integer_range(np.int64)}")
            shown_values = raw.to_numpy()
        else:
            values, bad = _parse_numbers(raw)
            if bad.any():
                self.fail(bad, f"column {column!r} must be {kind}, got {shown(raw.to_numpy()[bad][0])}")
            shown_values = raw.to_numpy()
        if low is not None or high is not None:
            lo = -np.inf if low is None else low
            hi = np.inf if high is None else high
            out = (values < lo) | (values > hi)
            if out.any():
                span = f">= {low}" if high is None else f"<= {high}" if low is None else f"within {low}..{high}"
                self.fail(out, f"column {column!r} must be {span}, got {shown(shown_values[out][0])}")
        return values

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

    def warn_space_variants(self, column: str, what: str) -> None:
        """Warn when ids differ only by surrounding spaces ('7' and ' 7'): they stay different ids, as
        written, but are most likely one id typed twice. Vectorised over the distinct values."""
        distinct = pd.Series(pd.unique(self.frame[column].to_numpy()), dtype=object)
        stripped = distinct.str.strip()
        clash = stripped.duplicated(keep=False).to_numpy()  # distinct values, so they differ by spaces alone
        if not clash.any():
            return
        variants = distinct[clash & (stripped == stripped[clash].iloc[0]).to_numpy()].tolist()[:2]
        values = self.frame[column].to_numpy()
        lines = [int(self.lines[np.flatnonzero(values == v)[0]]) for v in variants]
        n = int(stripped[clash].nunique())
        others = f" ({n} such ids in all)" if n > 1 else ""
        warnings.warn(f"{self.path}: column {column!r} has {what} that differ only by surrounding spaces, e.g. "
                      f"{shown(variants[0])} (line {lines[0]}) and {shown(variants[1])} (line {lines[1]}){others}: "
                      f"they are read as different {what}; remove the spaces if they are the same",
                      DataWarning, stacklevel=3)

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
               quotechar: str | None = None, parse: Mapping[str, Any] | None = None,
               newline_at_end: bool = False, chunk_bytes: int | None = None) -> Table:
    """Read a delimited file as strings after checking that every line has the same number of fields.

    names: the columns of a header-less format (their count is the expected field count); None means the
    first line is a header naming the columns. quotechar: '"' for user CSVs where a quoted field may hold
    the separator (or a newline); None for formats that never quote (MovieLens' .dat files).
    parse: columns converted while reading, name -> int, float or a numpy dtype (int = exact int64,
    float = float64; an integer dtype's range is checked): the frame holds them as numbers, and an
    unparsable value raises naming its lines. newline_at_end: the format ends its last line with a newline
    (every official MovieLens file does), so a file without one may have been cut short: a DataWarning.
    chunk_bytes: how much of the file is counted and parsed at a time (default CHUNK_BYTES).
    """
    path = Path(path)
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    if names is not None and set(parse or {}) - set(names):
        raise ValueError(f"read_table: parse names columns {sorted(set(parse) - set(names))} that are not in "
                         f"names {list(names)}")
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    size = path.stat().st_size
    if size >= SIZE_CHECKED_FROM:
        check_memory(reading_memory(path, size, sep, parse), f"{path}: reading this {human_bytes(size)} file",
                     "free memory, or use a smaller file or a machine with more memory")
    raw = path.read_bytes()
    start = 0
    if raw.startswith(codecs.BOM_UTF8) and codecs.lookup(encoding).name == "utf-8":
        start = len(codecs.BOM_UTF8)  # spreadsheet exports start with one; it is not part of a name
    if (raw[start:] if start else raw).isspace() or len(raw) == start:
        raise DataFormatError(f"{path}: file is empty")
    _check_decodes(path, raw, start, encoding, chunk_bytes)
    if newline_at_end and not raw.endswith(b"\n"):
        last = raw.count(b"\n") + 1
        warnings.warn(f"{path}: the last line (line {last}) does not end with a newline, as it does in the "
                      "official file: the file may have been cut short, and its last line with it (when the "
                      "folder has an MD5SUMS file, its check catches a cut file)", DataWarning, stacklevel=2)
    seps = sep.encode(encoding)
    if len(seps) > 1 and _PLACEHOLDER.encode() in raw:
        raise DataFormatError(f"{path}: contains the control character \\x1f; cannot split on {sep!r}")
    chunks = [_Chunk(a, b) for a, b in _record_chunks(raw, start, quotechar, chunk_bytes)]

    # pass 1: count the fields of every record (all bad lines are reported, not only a first chunk's)
    expected, header_line = (len(names), None) if names is not None else (None, None)
    line_parts, bad_lines, bad_counts = [], [], []
    offset = raw.count(b"\n", 0, start)
    for chunk in chunks:
        fields, lines = _count_fields(path, chunk.data(raw, seps), chunk.sep_byte(seps), quotechar, offset)
        offset += raw.count(b"\n", chunk.start, chunk.end)
        chunk.records = len(fields)
        if expected is None and len(fields):
            expected, header_line = int(fields[0]), int(lines[0])
            chunk.header = True
            fields, lines = fields[1:], lines[1:]
        bad = fields != expected
        if bad.any():
            bad_lines.append(lines[bad])
            bad_counts.append(fields[bad])
        line_parts.append(lines)
    lines = np.concatenate(line_parts) if line_parts else np.zeros(0, dtype=np.int64)
    if names is None and len(lines) == 0:
        raise DataFormatError(f"{path}: has a header but no rows")
    if bad_lines:
        counts = np.concatenate(bad_counts)
        what = f"expected {expected} {sep_name(sep)}-separated fields"
        if names is not None:
            what += f" ({', '.join(names)})"
        hint = " (is the separator right?)" if (counts == 1).all() else ""
        raise DataFormatError(f"{path}: {describe_lines(np.concatenate(bad_lines))}: {what}, "
                              f"found {int(counts[0])}{hint}")

    # pass 2: parse each chunk; `parse` columns become numbers there and then
    kinds = {column: np.dtype(np.int64 if kind is int else np.float64 if kind is float else kind)
             for column, kind in (parse or {}).items()}
    columns = list(names) if names is not None else None
    numbers: dict[str, np.ndarray] = {}
    texts: dict[str, list[pd.Series]] = {}
    problems: dict[tuple[int, int], tuple[str, list[np.ndarray]]] = {}
    row = 0
    for chunk in chunks:
        if chunk.records == 0:
            continue
        frame = pd.read_csv(
            io.BytesIO(chunk.data(raw, seps)), sep=chunk.sep_byte(seps).decode(encoding), header=None,
            names=range(expected), dtype=str, keep_default_na=False, na_filter=False,
            quoting=csv.QUOTE_NONE if quotechar is None else csv.QUOTE_MINIMAL, quotechar=quotechar or '"',
            encoding=encoding, engine="c", skip_blank_lines=True,
        )
        if len(frame) != chunk.records:  # only a stray carriage return inside a field could cause this
            raise DataFormatError(f"{path}: parsed {len(frame)} rows from {chunk.records} lines; "
                                  "does a field contain a bare carriage return?")
        if chunk.header:
            columns = _header(path, frame.iloc[0], header_line, kinds, sep)
            frame = frame.iloc[1:]
        here = lines[row:row + len(frame)]
        for index, column in enumerate(columns):
            strings = frame.iloc[:, index]
            if column not in kinds:
                texts.setdefault(column, []).append(strings)
                continue
            if column not in numbers:
                numbers[column] = np.empty(len(lines), dtype=kinds[column])
            values, found = _convert(strings.to_numpy(dtype=object), kinds[column])
            numbers[column][row:row + len(frame)] = values
            for number, (message, bad) in enumerate(found):
                if bad.any():
                    first = strings.to_numpy(dtype=object)[bad][0]
                    key = (index, number)
                    if key not in problems:
                        problems[key] = (message.format(column=repr(column), value=shown(first)), [])
                    problems[key][1].append(here[bad])
        row += len(frame)
    if problems:
        message, where = problems[min(problems)]
        raise DataFormatError(f"{path}: {describe_lines(np.concatenate(where))}: {message}")
    data = {}
    for column in columns:
        if column in kinds:
            data[column] = numbers.get(column, np.empty(0, dtype=kinds[column]))
        else:
            parts = texts.get(column) or [pd.Series([], dtype=str)]
            data[column] = (parts[0] if len(parts) == 1 else pd.concat(parts)).reset_index(drop=True)
    return Table(path, pd.DataFrame(data, copy=False), lines, header_line)


def _header(path: Path, row: pd.Series, line: int, kinds: Mapping[str, np.dtype], sep: str) -> list[str]:
    """The column names of a header line: each once, and every column to be parsed among them."""
    columns = [str(c).strip() for c in row]
    missing = [c for c in kinds if c not in columns]  # first: a missing header's first row may repeat values
    if missing:
        hint = (f"the columns must be {sep_name(sep)}-separated (is the separator right?)" if len(columns) == 1
                else "the first line must name the columns (is it missing?)")
        raise DataFormatError(f"{path}: line {line}: the header {columns} has no column(s) {missing}; {hint}")
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise DataFormatError(f"{path}: line {line}: the header names {dupes} more than once")
    return columns


@dataclass
class _Chunk:
    """Bytes [start, end) of the file: whole records; `records` and `header` are set by the counting pass."""

    start: int
    end: int
    records: int = 0
    header: bool = False

    def data(self, raw: bytes, seps: bytes) -> bytes:
        data = raw[self.start:self.end]
        return data.replace(seps, _PLACEHOLDER.encode()) if len(seps) > 1 else data

    @staticmethod
    def sep_byte(seps: bytes) -> bytes:
        return _PLACEHOLDER.encode() if len(seps) > 1 else seps


def _record_chunks(raw: bytes, start: int, quotechar: str | None, size: int) -> list[tuple[int, int]]:
    """Byte ranges covering raw[start:], about `size` each, every one ending just after a record's newline
    (one outside quotes), or at the end of the file. A record longer than `size` widens its chunk."""
    chunks, pos, n = [], start, len(raw)
    while pos < n:
        width = size
        while True:
            end = min(pos + width, n)
            cut = n if end == n else _last_record_end(raw, pos, end, quotechar)
            if cut > pos:
                break
            width *= 2
        chunks.append((pos, cut))
        pos = cut
    return chunks


def _last_record_end(raw: bytes, pos: int, end: int, quotechar: str | None) -> int:
    """The position just after the last newline in raw[pos:end] outside quotes; -1 when there is none."""
    if quotechar is None:
        found = raw.rfind(b"\n", pos, end)
        return found + 1 if found >= 0 else -1
    window = np.frombuffer(raw, dtype=np.uint8, count=end - pos, offset=pos)
    newlines = np.flatnonzero(window == 10)
    quotes = np.flatnonzero(window == ord(quotechar))
    outside = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
    return pos + int(outside[-1]) + 1 if len(outside) else -1


def _check_decodes(path: Path, raw: bytes, start: int, encoding: str, size: int) -> None:
    if raw.isascii() and codecs.lookup(encoding).name in _ASCII_COMPATIBLE:
        return
    pos = start
    while pos < len(raw):  # in slices cut after a newline, so no character is split
        end = raw.find(b"\n", min(pos + size, len(raw)))
        end = len(raw) if end < 0 else end + 1
        try:
            raw[pos:end].decode(encoding)
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, pos + exc.start) + 1
            raise DataFormatError(f"{path}: line {line}: not valid {encoding} text ({exc.reason}); "
                                  "expected the file's documented encoding") from None
        pos = end


def _count_fields(path: Path, raw: bytes, sep: bytes, quotechar: str | None, line_offset: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per non-blank record: the number of fields and its 1-based line number (+ `line_offset`).

    Vectorised over the byte positions of separators, newlines and quotes; a separator or newline
    inside a quoted field (odd number of quotes before it) does not count.
    """
    buf = np.frombuffer(raw, dtype=np.uint8)
    seps, newlines = np.flatnonzero(buf == sep[0]), np.flatnonzero(buf == 10)
    ends = newlines
    if quotechar is not None:
        quotes = np.flatnonzero(buf == ord(quotechar))
        if len(quotes) % 2:
            line = int(np.searchsorted(newlines, quotes[-1])) + 1 + line_offset
            raise DataFormatError(f"{path}: line {line}: a quoted field is never closed (unbalanced {quotechar})")
        seps = seps[np.searchsorted(quotes, seps) % 2 == 0]
        ends = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
    if len(ends) == 0 or ends[-1] != len(buf) - 1:
        ends = np.append(ends, len(buf))  # last line without a trailing newline
    starts = np.concatenate([[0], ends[:-1] + 1])
    fields = np.searchsorted(seps, ends) - np.searchsorted(seps, starts) + 1
    lines = np.searchsorted(newlines, starts) + 1 + line_offset
    length = ends - starts
    blank = (length == 0) | ((length == 1) & (buf[np.minimum(starts, len(buf) - 1)] == 13))
    return fields[~blank], lines[~blank]


def take_options(dataset: str, options: Mapping[str, Any], defaults: Mapping[str, Any],
                 text: Iterable[str] = ()) -> dict[str, Any]:
    """The plugin's options with defaults filled in; an unknown one names the dataset and what it takes.

    text: the options that name files, columns or choices. The command line reads `interactions=2024` or
    `user_col=0` as a number; such a value is turned back into its text ('2024', '0'; a boolean as
    'true' / 'false'). A DataFormatError (a ValueError), so the command line reports it as one line.
    """
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise DataFormatError(f"dataset {dataset!r} got unknown option(s) {unknown}; it takes: "
                              f"data_dir, cache_dir, download, {', '.join(defaults)}")
    taken = {**defaults, **options}
    for name in text:
        taken[name] = as_text(taken[name])
    return taken


def as_text(value: Any) -> Any:
    """A number or boolean given where text is meant, as the text that was typed; anything else unchanged."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return str(value.item() if isinstance(value, np.generic) else value)
    return value
