"""The reader's guarantees (issue 11): exact integer ids, chunked reading that changes nothing, a warning for
a cut-looking file, MD5SUMS entries kept inside the dataset folder, unknown dataset options as input errors."""

from __future__ import annotations

import hashlib
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import bench.data.readers as readers
from bench.cli import main
from bench.data.download import ChecksumError
from bench.data.readers import DataFormatError, DataWarning, parse_integers, read_table, take_options
from plugins.datasets.csv import CsvDataset
from plugins.datasets.movielens import MovieLens1M, MovieLens20M, MovieLens25M, MovieLens100K
from plugins.datasets.synthetic import SyntheticDataset

sys.path.insert(0, str(Path(__file__).parent))
from datagen import write_md5sums, write_ml1m, write_ml20m, write_ml100k  # noqa: E402

INT64 = "-9223372036854775808..9223372036854775807"


pytestmark = pytest.mark.usefixtures("isolated_env")


def set_user(path: Path, old: str, new: str, sep: str) -> None:
    """Replace user id `old` by `new` in every line of a file whose first field is the user id."""
    lines = path.read_text(encoding="latin-1").splitlines()
    fixed = [new + line[len(old):] if line.split(sep)[0] == old else line for line in lines]
    path.write_text("\n".join(fixed) + "\n", encoding="latin-1")


# ---------------------------------------------------------------- exact integers (11.4, first item)


def test_ids_beyond_float64_precision_are_told_apart(ml100k):
    # 2**53 + 1 and 2**53 are one float64: parsed through it, the two ids silently matched
    set_user(ml100k / "u.user", "1", "9007199254740993", "|")
    set_user(ml100k / "u.data", "1", "9007199254740992", "\t")
    with pytest.raises(DataFormatError, match=r"u\.data: lines? .*: user_id 9007199254740992 is not in .*u\.user"):
        MovieLens100K(data_dir=ml100k).load()
    set_user(ml100k / "u.data", "9007199254740992", "9007199254740993", "\t")
    frames = MovieLens100K(data_dir=ml100k).load()
    assert 9007199254740993 in set(frames.users.user_id) and 9007199254740992 not in set(frames.users.user_id)
    assert 9007199254740993 in set(frames.interactions.user_id)


def test_id_beyond_int64_names_file_line_column_value_and_range(ml100k):
    lines = (ml100k / "u.data").read_text().splitlines()
    lines[2] = "99999999999999999999" + lines[2][lines[2].index("\t"):]
    (ml100k / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as info:
        MovieLens100K(data_dir=ml100k).load()
    message = str(info.value)
    for part in ("u.data", "line 3:", "'user_id'", "'99999999999999999999'", INT64):
        assert part in message, f"{part!r} not in: {message}"
    assert "-9223372036854775808 is not in" not in message  # what the float64 path said


def test_parse_integers_takes_plain_decimal_integers_only():
    cases = {  # text: value, or "malformed" / "overflow"
        "12": 12, " 12 ": 12, "+12": 12, "-12": -12, "007": 7, "-0": 0,
        "9007199254740993": 9007199254740993,
        "9223372036854775807": 2**63 - 1, "-9223372036854775808": -(2**63),
        "00009223372036854775807": 2**63 - 1,
        "9223372036854775808": "overflow", "-9223372036854775809": "overflow",
        "99999999999999999999": "overflow", "-99999999999999999999": "overflow",
        "1.0": "malformed", "1e3": "malformed", "1_000": "malformed", "0x10": "malformed", "": "malformed",
        "-": "malformed", "+-1": "malformed", "1 2": "malformed", "\u0663": "malformed", "\u00b2": "malformed",
        "nan": "malformed", "12a": "malformed",
    }
    values, malformed, overflow = parse_integers(np.array(list(cases), dtype=object))
    assert values.dtype == np.int64
    for k, (text, want) in enumerate(cases.items()):
        got = "malformed" if malformed[k] else "overflow" if overflow[k] else int(values[k])
        assert got == want, (text, got, want)


def test_integer_columns_refuse_what_only_a_float_parser_accepts(ml100k):
    lines = (ml100k / "u.data").read_text().splitlines()
    lines[1] = "\t".join(lines[1].split("\t")[:3] + ["8.8e8"])
    (ml100k / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"u\.data: line 2: column 'timestamp' must be an integer, got '8\.8e8'"):
        MovieLens100K(data_dir=ml100k).load()


# ---------------------------------------------------------------- chunked reading changes nothing


def tables_equal(a, b) -> None:
    pd.testing.assert_frame_equal(a.frame, b.frame)
    np.testing.assert_array_equal(a.lines, b.lines)
    assert a.header_line == b.header_line


def test_small_chunks_give_the_same_table(tmp_path):
    path = tmp_path / "x.csv"
    body = 'id,name,score\r\n\r\n1,"a, b",3.5\r\n2,"multi\nline ""quoted""",4\n\n3,plain,-1\n' * 7
    path.write_bytes(b"\xef\xbb\xbf" + ("id,name,score\n" + body.replace("id,name,score\r\n", "")).encode())
    whole = read_table(path, sep=",", quotechar='"', parse={"id": int, "score": float})
    assert whole.frame["id"].tolist() == [1, 2, 3] * 7 and whole.frame["id"].dtype == np.int64
    assert whole.frame["name"].tolist()[:2] == ["a, b", 'multi\nline "quoted"']
    for size in (1, 7, 16, 64):
        tables_equal(read_table(path, sep=",", quotechar='"', parse={"id": int, "score": float},
                                chunk_bytes=size), whole)
    dat = tmp_path / "x.dat"
    dat.write_text("".join(f"{i}::{i % 7}::t{i}\n" for i in range(50)))
    whole = read_table(dat, sep="::", names=("a", "b", "c"))
    tables_equal(read_table(dat, sep="::", names=("a", "b", "c"), chunk_bytes=10), whole)


def test_errors_over_many_chunks_list_every_bad_line(tmp_path):
    path = tmp_path / "r.tsv"
    rows = [f"{i}\t{i}\t5\t{i}" for i in range(1, 301)]
    for i in (10, 150, 151, 290):
        rows[i - 1] = f"{i}\t{i}\t5"
    path.write_text("\n".join(rows) + "\n")
    expected = r"lines 10, 150, 151, 290: expected 4 tab-separated fields"
    for size in (None, 32):
        with pytest.raises(DataFormatError, match=expected):
            read_table(path, sep="\t", names=("a", "b", "c", "d"), chunk_bytes=size)
    rows = [f"{i}\t{i}\t5\t{i}" for i in range(1, 301)]
    for i in (20, 40, 60, 80, 100, 200, 299):
        rows[i - 1] = f"{i}\tx{i}\t5\t{i}"
    path.write_text("\n".join(rows) + "\n")
    for size in (None, 32):
        with pytest.raises(DataFormatError, match=r"lines 20, 40, 60, 80, 100 \(and 2 more: 7 in total\): "
                                                  r"column 'b' must be an integer, got 'x20'"):
            read_table(path, sep="\t", names=("a", "b", "c", "d"), parse={"b": int}, chunk_bytes=size)


def test_an_unclosed_quote_is_found_past_the_first_chunk(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("a,b\n" + "".join(f"{i},x\n" for i in range(40)) + '41,"open\n42,y\n')
    with pytest.raises(DataFormatError, match="line 42: a quoted field is never closed"):
        read_table(path, sep=",", quotechar='"', chunk_bytes=16)


def test_parse_narrow_dtypes_and_a_missing_header(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("u,t\n1,9007199254740993\n2147483647,1\n")
    table = read_table(path, sep=",", parse={"u": np.int32, "t": int})
    assert table.frame["u"].dtype == np.int32 and table.frame["t"].tolist() == [9007199254740993, 1]
    path.write_text("u,t\n1,1\n2147483648,1\n")
    with pytest.raises(DataFormatError, match=r"line 3: column 'u': '2147483648' is outside the int32 range "
                                              r"-2147483648\.\.2147483647"):
        read_table(path, sep=",", parse={"u": np.int32})
    path.write_text("1,1\n2,1\n")
    with pytest.raises(DataFormatError, match=r"r\.csv: line 1: the header \['1', '1'\] has no column\(s\) \['u'\]"):
        read_table(path, sep=",", parse={"u": int})


def test_loaders_read_the_same_in_small_chunks(tmp_path, monkeypatch):
    folders = {MovieLens100K: write_ml100k(tmp_path / "ml-100k"), MovieLens1M: write_ml1m(tmp_path / "ml-1m"),
               MovieLens20M: write_ml20m(tmp_path / "ml-20m")}
    whole = {cls: cls(data_dir=folder).load() for cls, folder in folders.items()}
    monkeypatch.setattr(readers, "CHUNK_BYTES", 100)
    for cls, folder in folders.items():
        chunked = cls(data_dir=folder).load()
        for name in ("interactions", "users", "items"):
            pd.testing.assert_frame_equal(getattr(chunked, name), getattr(whole[cls], name))


# ---------------------------------------------------------------- a file that looks cut (11.4, second item)


def test_official_file_without_its_final_newline_warns_but_loads(ml100k):
    data = (ml100k / "u.data").read_bytes()
    (ml100k / "u.data").write_bytes(data[:-2])  # the last timestamp lost a digit: the line still parses
    with pytest.warns(DataWarning) as caught:
        frames = MovieLens100K(data_dir=ml100k).load()
    assert len(frames.interactions) == 400
    message = str(caught[0].message)
    for part in (str(ml100k / "u.data"), "line 400", "newline", "cut", "MD5SUMS"):
        assert part in message, f"{part!r} not in: {message}"
    (ml100k / "u.data").write_bytes(data)
    write_md5sums(ml100k)
    (ml100k / "u.data").write_bytes(data[:-2])
    with pytest.raises(ChecksumError, match=r"u\.data: MD5"):  # with an MD5SUMS the cut copy does not load
        MovieLens100K(data_dir=ml100k).load()


def test_no_warning_for_complete_files_or_a_users_own_csv(ml100k, tmp_path):
    (tmp_path / "clicks.csv").write_text("user_id,item_id\nu1,a\nu2,b")  # no final newline: the user's file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MovieLens100K(data_dir=ml100k).load()
        CsvDataset(interactions=tmp_path / "clicks.csv").load()


def test_ml1m_and_ml20m_files_without_final_newline_warn(tmp_path):
    ml1m = write_ml1m(tmp_path / "ml-1m")
    (ml1m / "movies.dat").write_bytes((ml1m / "movies.dat").read_bytes()[:-1])
    with pytest.warns(DataWarning, match=r"movies\.dat: the last line"):
        MovieLens1M(data_dir=ml1m).load()
    ml20m = write_ml20m(tmp_path / "ml-20m")
    (ml20m / "ratings.csv").write_bytes((ml20m / "ratings.csv").read_bytes()[:-1])
    with pytest.warns(DataWarning, match=r"ratings\.csv: the last line"):
        MovieLens20M(data_dir=ml20m).load()


# ---------------------------------------------------------------- MD5SUMS stays inside the folder (11.4)


@pytest.mark.parametrize("entry", ["../secret.txt", "ABSOLUTE", "sub/../../secret.txt", "..\\secret.txt"])
def test_md5sums_entry_outside_the_dataset_folder_is_refused(entry, ml100k, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not part of the dataset\n")
    (ml100k / "sub").mkdir()
    name = str(secret) if entry == "ABSOLUTE" else entry
    write_md5sums(ml100k)
    md5 = hashlib.md5(secret.read_bytes(), usedforsecurity=False).hexdigest()  # right, so hashing it would pass
    with open(ml100k / "MD5SUMS", "a") as fh:
        fh.write(f"{md5}  {name}\n")
    n_lines = len((ml100k / "MD5SUMS").read_text().splitlines())
    with pytest.raises(DataFormatError) as info:
        MovieLens100K(data_dir=ml100k).load()
    assert type(info.value) is DataFormatError  # refused, not a checksum mismatch or a missing file
    message = str(info.value)
    for part in (str(ml100k / "MD5SUMS"), f"line {n_lines}:", repr(name), "outside"):
        assert part in message, f"{part!r} not in: {message}"


def test_md5sums_may_list_files_in_subfolders(ml100k):
    (ml100k / "extra").mkdir()
    (ml100k / "extra" / "notes.txt").write_text("hello\n")
    write_md5sums(ml100k)
    md5 = hashlib.md5(b"hello\n", usedforsecurity=False).hexdigest()
    with open(ml100k / "MD5SUMS", "a") as fh:
        fh.write(f"{md5}  extra/notes.txt\n")
    assert len(MovieLens100K(data_dir=ml100k).load().interactions) == 400
    (ml100k / "extra" / "notes.txt").write_text("changed\n")
    with pytest.raises(ChecksumError, match=r"notes\.txt: MD5"):
        MovieLens100K(data_dir=ml100k).load()


# ---------------------------------------------------------------- unknown dataset options (11.2 / 11.4)


@pytest.mark.parametrize("cls", [MovieLens100K, MovieLens1M, MovieLens20M, MovieLens25M, CsvDataset,
                                 SyntheticDataset])
def test_unknown_dataset_option_is_a_data_format_error(cls, tmp_path):
    with pytest.raises(DataFormatError) as info:
        cls(data_dir=tmp_path, colour="red", bogus=1).load()
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert f"dataset {cls.name!r} got unknown option(s) ['bogus', 'colour']" in message
    assert "it takes: data_dir, cache_dir, download, " + ", ".join(cls.defaults) in message


def test_take_options_fills_defaults():
    assert take_options("d", {"a": 2}, {"a": 1, "b": 3}) == {"a": 2, "b": 3}


def test_unknown_dataset_option_is_one_line_on_the_command_line():
    result = CliRunner().invoke(main, ["data", "--dataset", "synthetic", "--dataset-opt", "n_user=50"],
                                catch_exceptions=False)  # a TypeError would escape as a traceback here
    assert result.exit_code != 0
    assert "unknown option(s) ['n_user']" in result.output and "n_users" in result.output
    assert "Traceback" not in result.output
