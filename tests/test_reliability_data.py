"""Issue 23, data: exact timestamps, dates beyond pandas' nanosecond range, ids that differ by spaces, option
values that name files or columns, bounded option parsing, sizes beyond memory, and bounded archive extraction."""

from __future__ import annotations

import hashlib
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import registry
from bench.cli import main
from bench.config import parse_value
from bench.data import readers
from bench.data.download import Archive, fetch
from bench.data.pipeline import _checksum, prepare
from bench.data.readers import DataFormatError, DataWarning
from bench.data.types import ColumnSchema, DatasetFrames
from plugins.datasets.csv import CsvDataset
from plugins.datasets.movielens import MovieLens20M, MovieLens100K

sys.path.insert(0, str(Path(__file__).parent))
from datagen import write_ml20m, write_ml100k  # noqa: E402

pytestmark = pytest.mark.usefixtures("isolated_env")

NS_BASE = (1_700_000_000_000_000_000 // 256) * 256  # nanoseconds, far above 2**53: float64 steps by 256 here


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def load_csv(path: Path, **options):
    return registry.create("dataset", "csv", interactions=str(path), **options).load()


def test_nanosecond_timestamps_100ns_apart_keep_their_order(tmp_path):
    # each user's last two interactions are 100 ns apart (the later one first in the file): as float64 they
    # would tie and file order would make the earlier one the test item
    lines = ["user,item,t"]
    for user in range(10):
        start = NS_BASE + user * 256 * 1000
        lines += [f"u{user},old{j},{start - (j + 1) * 10**9}" for j in range(3)]
        lines += [f"u{user},later,{start + 100}", f"u{user},earlier,{start}"]
    path = tmp_path / "ns.csv"
    path.write_text("\n".join(lines) + "\n")
    frames = load_csv(path, user_col="user", item_col="item", timestamp_col="t")
    assert frames.interactions.timestamp.dtype == np.int64
    assert frames.interactions.timestamp.iloc[3] == NS_BASE + 100  # exact, not rounded to a multiple of 256
    data = prepare(frames, threshold=1.0)
    tested = {data.user_ids[u]: data.item_ids[i] for u, i in zip(data.test.users, data.test.items, strict=True)}
    assert tested == {f"u{user}": "later" for user in range(10)}
    validated = {data.item_ids[i] for i in data.val.items}
    assert validated == {"earlier"}


@pytest.mark.parametrize("value", ["10000000000000000000", "-9223372036854775809", "1e19"])
def test_timestamp_beyond_int64_is_refused_naming_file_and_line(tmp_path, value):
    path = tmp_path / "r.csv"
    path.write_text(f"user_id,item_id,t\n1,2,1700000000\n1,3,{value}\n")
    with pytest.raises(DataFormatError, match=r"r\.csv: line 3: column 't': .* outside the 64-bit integer range"):
        load_csv(path, timestamp_col="t")


def test_fractional_timestamps_that_float64_would_tie_are_refused(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user_id,item_id,t\n1,2,1700000000.00000002\n1,3,1700000000.00000001\n1,4,1.5\n")
    with pytest.raises(DataFormatError, match=r"r\.csv: lines 2, 3: column 't': .*same 64-bit float"):
        load_csv(path, timestamp_col="t")


def test_float_timestamps_stay_floats_and_equal_spellings_are_no_tie(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user_id,item_id,t\n1,2,1.50\n1,3,1.5\n1,4,2.25\n")
    assert load_csv(path, timestamp_col="t").interactions.timestamp.tolist() == [1.5, 1.5, 2.25]
    path.write_text("user_id,item_id,t\n1,2,874724710.0\n1,3,874724711\n")
    stamps = load_csv(path, timestamp_col="t").interactions.timestamp
    assert stamps.dtype == np.int64 and stamps.tolist() == [874724710, 874724711]


def test_subsecond_iso_dates_keep_their_order(tmp_path):
    lines = ["user_id,item_id,t"]
    for user in range(4):
        lines += [f"{user},a,2020-01-01T00:00:00Z", f"{user},b,2020-01-02T00:00:00Z",
                  f"{user},later,2020-01-03T00:00:00.2Z", f"{user},earlier,2020-01-03T00:00:00.1Z"]
    path = tmp_path / "r.csv"
    path.write_text("\n".join(lines) + "\n")
    frames = load_csv(path, timestamp_col="t")
    assert frames.interactions.timestamp.iloc[2] == pytest.approx(1578009600.2)
    data = prepare(frames, threshold=1.0)
    assert {data.item_ids[i] for i in data.test.items} == {"later"}


def test_movielens_readers_keep_nanosecond_timestamps_exact(tmp_path):
    # u.data (and ratings.dat, read the same way) and ratings.csv parse integers exactly: a guard against a
    # reader going through float64
    folder = write_ml100k(tmp_path / "ml-100k")
    rows = [line.split("\t") for line in (folder / "u.data").read_text().splitlines()]
    stamps = [NS_BASE + 100 * i for i in range(len(rows))]
    lines = (f"{u}\t{i}\t{r}\t{t}\n" for (u, i, r, _), t in zip(rows, stamps, strict=True))
    (folder / "u.data").write_text("".join(lines))
    assert MovieLens100K(data_dir=folder).load().interactions.timestamp.tolist() == stamps
    folder = write_ml20m(tmp_path / "ml-20m")
    ratings = pd.read_csv(folder / "ratings.csv", dtype=str)
    ratings["timestamp"] = [str(NS_BASE + 100 * i) for i in range(len(ratings))]
    (folder / "ratings.csv").write_text(ratings.to_csv(index=False, lineterminator="\n"))
    loaded = MovieLens20M(data_dir=folder).load().interactions.timestamp
    assert loaded.tolist() == [NS_BASE + 100 * i for i in range(len(ratings))]


def test_checksum_tells_nanosecond_timestamps_apart_and_keeps_earlier_fingerprints():
    def checksum(stamps):
        interactions = pd.DataFrame({"user_id": [1] * 4, "item_id": [1, 2, 3, 4], "rating": 5.0,
                                     "timestamp": np.array(stamps, dtype=np.int64)})
        schema = [ColumnSchema("user_id", "user", "label", is_id=True),
                  ColumnSchema("item_id", "item", "label", is_id=True)]
        frames = DatasetFrames("t", interactions, pd.DataFrame({"user_id": [1]}),
                               pd.DataFrame({"item_id": [1, 2, 3, 4]}), schema)
        return prepare(frames).info["checksum"]

    ns = [NS_BASE, NS_BASE + 1000, NS_BASE + 2000, NS_BASE + 3000]
    assert checksum(ns) != checksum([*ns[:3], ns[3] + 100])  # equal as float64, different in fact
    # a fingerprint of ordinary (float64-exact) timestamps is what it was, so the runs stored so far still match
    users, items, split = np.array([1, 1, 1, 1]), np.array([1, 2, 3, 4]), np.array(["train", "train", "val", "test"])
    digest = hashlib.sha256()
    for array in (users, items, np.array([10.0, 20.0, 30.0, 40.0]), split == "train"):
        digest.update(np.ascontiguousarray(array).tobytes())
    assert _checksum(users, items, np.array([10, 20, 30, 40]), split) == digest.hexdigest()[:16]


# --- ISO dates outside pandas' nanosecond range -------------------------------------------------------------

def test_iso_dates_beyond_the_nanosecond_range_load_or_name_file_and_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user_id,item_id,t\n1,2,2020-01-01\n1,3,3000-01-01\n1,4,0001-01-01T00:00:00Z\n")
    try:
        stamps = load_csv(path, timestamp_col="t").interactions.timestamp.tolist()
    except DataFormatError as exc:  # a pandas that parses dates only as nanoseconds
        assert "r.csv: lines 3, 4: column 't'" in str(exc) and "outside" in str(exc)
    else:
        assert stamps == [1577836800, 32503680000, -62135596800]


def test_a_date_beyond_the_precision_the_column_takes_names_file_line_and_range(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user_id,item_id,t\n1,2,2020-01-01T00:00:00.000000001\n1,3,3000-01-01\n")
    with pytest.raises(DataFormatError, match=r"r\.csv: line 3: column 't': the date '3000-01-01' is outside what "
                                              r"a ns timestamp holds \(1677-09-2\d to 2262-04-1\d"):
        load_csv(path, timestamp_col="t")


# --- ids that differ only by surrounding spaces -------------------------------------------------------------

def test_ids_that_differ_only_by_spaces_warn_naming_file_column_and_example(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text('user_id,item_id\n7,a\n" 7",b\n8,a \n8,a\n')
    with pytest.warns(DataWarning) as caught:
        frames = load_csv(path)
    messages = [str(w.message) for w in caught]
    assert any("r.csv: column 'user_id'" in m and "'7' (line 2) and ' 7' (line 3)" in m for m in messages)
    assert any("r.csv: column 'item_id'" in m and "'a' (line 2) and 'a ' (line 4)" in m for m in messages)
    assert frames.interactions.user_id.nunique() == 3  # kept as written: the warning says so
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        path.write_text("user_id,item_id\n7,a\n8,b\n")
        load_csv(path)


# --- option values that name files or columns ---------------------------------------------------------------

def test_numeric_option_values_name_files_and_columns(tmp_path):
    (tmp_path / "2024").write_text("0,1,2\nu1,a,5\nu1,b,7\n")
    frames = CsvDataset(data_dir=tmp_path, interactions=2024, user_col=0, item_col=1, timestamp_col=2).load()
    assert frames.interactions.user_id.tolist() == ["u1", "u1"]
    assert frames.interactions.timestamp.tolist() == [5, 7]


def clicks(n_users: int = 6, n_items: int = 5) -> str:
    return "".join(f"u{u},i{i},{u * 100 + i}\n" for u in range(n_users) for i in range(n_items))


def test_cli_reads_a_file_named_by_a_number_and_numeric_column_names(tmp_path):
    (tmp_path / "2024").write_text("user_id,item_id,t\n" + clicks())
    res = invoke("data", "--dataset", "csv", "--dataset-opt", "interactions=2024", "--data-dir", str(tmp_path),
                 "--threshold", "1")
    assert res.exit_code == 0, res.output
    assert "test pairs" in res.output
    (tmp_path / "numbered.csv").write_text("0,1,2,3\n" + clicks().replace("\n", ",x\n"))
    res = invoke("data", "--dataset", "csv", "--dataset-opt", "interactions=numbered.csv", "--dataset-opt",
                 "user_col=0", "--dataset-opt", "item_col=1", "--dataset-opt", "timestamp_col=2",
                 "--data-dir", str(tmp_path), "--threshold", "1")
    assert res.exit_code == 0, res.output


# --- option values the parser cannot read -------------------------------------------------------------------

@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "-" * 99_999 + "1", "1+" * 49_999 + "1",
                                  "[" * 300 + "]" * 300])
def test_parse_value_refuses_values_nested_too_deeply(text):
    with pytest.raises(ValueError, match=r"nested too deeply|characters long"):
        parse_value(text)


def test_parse_value_still_reads_ordinary_values():
    assert parse_value("[64, 32]") == [64, 32] and parse_value("0.1") == 0.1 and parse_value("TRUE") is True
    assert parse_value("ratings.csv") == "ratings.csv" and parse_value("{[1]: 2}") == "{[1]: 2}"


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "-" * 99_999 + "1"])
def test_cli_refuses_an_unreadable_dataset_option_in_one_line(tmp_path, text):
    # needs bench.cli.common.key_values to turn parse_value's ValueError into click.BadParameter (exit 2)
    res = invoke("data", "--dataset", "synthetic", "--dataset-opt", f"n_users={text}")
    assert res.exit_code == 2, res.output
    assert "n_users" in res.output and ("nested too deeply" in res.output or "characters long" in res.output)
    assert "Traceback" not in res.output and len(res.output) < 2000


# --- sizes beyond memory ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes, named", [
    ({"n_users": 10**12}, "n_users=1,000,000,000,000"),
    ({"n_users": 10**6, "n_items": 10**12, "n_interactions": 10**15}, "n_interactions=1,000,000,000,000,000"),
])
def test_synthetic_sizes_beyond_memory_are_refused_before_allocating(monkeypatch, sizes, named):
    monkeypatch.setattr(readers, "available_memory", lambda: 8 << 30)
    with pytest.raises(readers.TooLargeError, match=rf"dataset 'synthetic': {named} .* would need about .* of "
                                                    r"memory, but 8\.0 GiB is available"):
        registry.create("dataset", "synthetic", **sizes).load()


def test_synthetic_sizes_that_fit_still_load(monkeypatch):
    monkeypatch.setattr(readers, "available_memory", lambda: 8 << 30)
    frames = registry.create("dataset", "synthetic", n_users=20, n_items=30, n_interactions=200).load()
    assert len(frames.interactions) == 200


def test_available_memory_is_read_on_this_machine():
    available = readers.available_memory()
    assert available is None or available > 0


def test_a_file_too_large_for_memory_is_refused_by_name(tmp_path, monkeypatch):
    folder = write_ml100k(tmp_path / "ml-100k")
    with open(folder / "u.item", "r+b") as fh:
        fh.truncate(30 * 10**9)  # sparse: no disk is used
    monkeypatch.setattr(readers, "available_memory", lambda: 16 << 30)
    with pytest.raises(readers.TooLargeError, match=r"u\.item: reading this 27\.9 GiB file would need about .* of "
                                                    r"memory, but 16\.0 GiB is available"):
        MovieLens100K(data_dir=folder).load()


def test_reading_memory_counts_the_fields_of_the_file(tmp_path):
    path = tmp_path / "u.data"
    path.write_bytes(b"1\t2\t3\t874724710\n" * 70_000)  # 16 bytes a line: 4 fields per 16 bytes
    numbers = {"a": int, "b": int, "c": int, "d": int}
    size = path.stat().st_size
    assert readers.reading_memory(path, size, "\t", None) == size + size // 4 * readers.TEXT_FIELD_BYTES
    assert readers.reading_memory(path, size, "\t", numbers) == size + size // 4 * (
        readers.NUMBER_FIELD_BYTES + readers.TEXT_FIELD_BYTES)  # the whole file is one chunk, held as strings
    huge = 1000 * readers.CHUNK_BYTES
    with open(path, "r+b") as fh:
        fh.truncate(huge)  # sparse; fields are counted on the first MiB
    assert readers.reading_memory(path, huge, "\t", None) == huge + huge // 4 * readers.TEXT_FIELD_BYTES
    assert readers.reading_memory(path, huge, "\t", numbers) == pytest.approx(
        huge + huge // 4 * (readers.NUMBER_FIELD_BYTES + readers.TEXT_FIELD_BYTES / 1000))  # one chunk as strings


# --- archives that expand far beyond their dataset ----------------------------------------------------------

def served(tmp_path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> tuple[Path, str]:
    zip_path = tmp_path / "served.zip"
    with zipfile.ZipFile(zip_path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return zip_path, hashlib.md5(zip_path.read_bytes(), usedforsecurity=False).hexdigest()


def test_a_zip_bomb_is_refused_before_extracting(tmp_path):
    zip_path, md5 = served(tmp_path, {"ml-100k/u.data": b"1\t1\t5\t874724710\n" * 1_000_000})
    assert zip_path.stat().st_size < 100_000  # 16 MB inside
    cache = tmp_path / "cache"
    with pytest.raises(DataFormatError, match=r"served\.zip: member 'ml-100k/u\.data' would expand [\d,]+ times "
                                              r"\(.* to 15\.3 MiB\), more than the 100 times"):
        MovieLens100K(cache_dir=cache, url=zip_path.as_uri(), md5=md5).load()
    assert list(cache.iterdir()) == []


def test_an_archive_beyond_its_size_cap_is_refused_before_extracting(tmp_path):
    rng = np.random.default_rng(0)
    members = {"tiny/data.txt": rng.bytes(30_000), "tiny/big.bin": rng.bytes(50_000)}  # incompressible
    zip_path, md5 = served(tmp_path, members)
    archive = Archive("tiny", zip_path.as_uri(), md5, "data.txt", expanded=10_000)
    with pytest.raises(DataFormatError, match=r"served\.zip: would extract to 78\.1 KiB \(2 members, the largest "
                                              r"'tiny/big\.bin' 48\.8 KiB\), more than the 39\.1 KiB allowed"):
        fetch(archive, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
    assert fetch(Archive("tiny", zip_path.as_uri(), md5, "data.txt", expanded=100_000), tmp_path / "cache").is_dir()


def test_a_member_lying_about_its_size_is_refused(tmp_path):
    data = b"".join(b"%d\t%d\t5\t874724710\n" % (i, i) for i in range(20_000))
    zip_path, _ = served(tmp_path, {"ml-100k/u.data": data})
    raw = bytearray(zip_path.read_bytes())
    central = raw.index(b"PK\x01\x02")
    raw[central + 24:central + 28] = (len(data) // 2).to_bytes(4, "little")  # declares half its real size
    zip_path.write_bytes(bytes(raw))
    md5 = hashlib.md5(bytes(raw), usedforsecurity=False).hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(DataFormatError, match=r"served\.zip: member 'ml-100k/u\.data' is damaged or unreadable"):
        MovieLens100K(cache_dir=cache, url=zip_path.as_uri(), md5=md5).load()
    assert list(cache.iterdir()) == []
