"""Dataset plugins: frames and schema, validation errors, download/cache/checksums, synthetic, csv."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import require_ml100k  # noqa: I001

import registry
from bench.data.download import ChecksumError
from bench.data.readers import DataFormatError, read_table
from plugins.datasets.csv import CsvDataset
from plugins.datasets.movielens import MovieLens1M, MovieLens100K
from plugins.datasets.synthetic import SyntheticDataset

sys.path.insert(0, str(Path(__file__).parent))
from datagen import (  # noqa: E402
    ML1M_GENRES,
    ML100K_GENRES,
    write_md5sums,
    write_ml1m,
    write_ml100k,
    zip_dataset,
)

REAL_DATA_DIR = os.environ.get("BENCH_DATA_DIR")  # read before the fixture below clears it
REAL_CACHE_DIR = os.environ.get("BENCH_CACHE_DIR")
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("isolated_env")


@pytest.fixture
def ml1m(tmp_path) -> Path:
    return write_ml1m(tmp_path / "ml-1m")


def files_under(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def flags_of(joined: pd.Series, genres: tuple[str, ...]) -> np.ndarray:
    return joined.str.get_dummies(sep="|").reindex(columns=list(genres), fill_value=0).to_numpy()


# ---------------------------------------------------------------- MovieLens loaders on generated files


def test_ml100k_frames_match_the_files(ml100k):
    frames = MovieLens100K(data_dir=ml100k).load()
    raw = pd.read_csv(ml100k / "u.data", sep="\t", header=None, names=["u", "i", "r", "t"])
    assert frames.name == "ml-100k"
    assert list(frames.interactions.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert frames.interactions.dtypes.tolist() == [np.int64, np.int64, np.float64, np.int64]
    np.testing.assert_array_equal(frames.interactions.to_numpy(), raw.to_numpy())  # file order kept
    users = pd.read_csv(ml100k / "u.user", sep="|", header=None)
    assert list(frames.users.columns) == ["user_id", "age", "gender", "occupation"]  # no zip code
    np.testing.assert_array_equal(frames.users.to_numpy(), users.iloc[:, :4].to_numpy())
    items = pd.read_csv(ml100k / "u.item", sep="|", header=None, encoding="latin-1")
    assert list(frames.items.columns) == ["item_id", "genres", "title"]  # the title: not a feature (no schema)
    np.testing.assert_array_equal(frames.items.item_id, items[0])
    np.testing.assert_array_equal(flags_of(frames.items.genres, ML100K_GENRES), items.iloc[:, 5:].to_numpy())
    assert "|" in "".join(frames.items.genres) and not frames.items.genres.str.endswith("|").any()


def test_ml100k_schema(ml100k):
    schema = {s.name: s for s in MovieLens100K(data_dir=ml100k).load().schema}
    assert list(schema) == ["user_id", "age", "gender", "occupation", "item_id", "genres"]
    assert schema["user_id"].is_id and schema["item_id"].is_id and not schema["age"].is_id
    assert (schema["user_id"].side, schema["item_id"].side, schema["genres"].side) == ("user", "item", "item")
    assert schema["age"].encoder == "bucket" and schema["age"].options == {"bins": [0, 18, 25, 35, 45, 55, 65, 100]}
    assert schema["genres"].encoder == "multihot" and schema["genres"].options == {"sep": "|"}
    assert {schema[n].encoder for n in ("user_id", "gender", "occupation", "item_id")} == {"label"}


def test_ml100k_binary_genres(ml100k):
    frames = MovieLens100K(data_dir=ml100k, genre_encoding="binary").load()
    names = [f"genre_{g}" for g in ML100K_GENRES]
    assert list(frames.items.columns) == ["item_id", *names, "title"]
    items = pd.read_csv(ml100k / "u.item", sep="|", header=None, encoding="latin-1")
    np.testing.assert_array_equal(frames.items[names].to_numpy(), items.iloc[:, 5:].to_numpy())
    genre_schema = [s for s in frames.schema if s.name.startswith("genre")]
    assert [s.name for s in genre_schema] == names
    assert {(s.encoder, s.side) for s in genre_schema} == {("label", "item")}


def test_unknown_option_and_bad_genre_encoding_are_errors(ml100k):
    with pytest.raises(DataFormatError, match=r"dataset 'ml-100k' got unknown option\(s\) \['genre_encodign'\]; "
                       r"it takes: data_dir, cache_dir, download, genre_encoding"):
        MovieLens100K(data_dir=ml100k, genre_encodign="binary").load()
    with pytest.raises(ValueError, match="multihot"):
        MovieLens100K(data_dir=ml100k, genre_encoding="onehot").load()


def test_ml1m_frames_match_the_files(ml1m):
    frames = MovieLens1M(data_dir=ml1m).load()
    raw = pd.read_csv(ml1m / "ratings.dat", sep="::", header=None, engine="python")
    np.testing.assert_array_equal(frames.interactions.to_numpy(), raw.to_numpy())
    assert frames.interactions.dtypes.tolist() == [np.int64, np.int64, np.float64, np.int64]
    users = pd.read_csv(ml1m / "users.dat", sep="::", header=None, engine="python")
    assert list(frames.users.columns) == ["user_id", "age", "gender", "occupation"]
    np.testing.assert_array_equal(frames.users.age, users[2])
    np.testing.assert_array_equal(frames.users.occupation, users[3])
    movies = pd.read_csv(ml1m / "movies.dat", sep="::", header=None, engine="python", encoding="latin-1")
    np.testing.assert_array_equal(flags_of(frames.items.genres, ML1M_GENRES), flags_of(movies[2], ML1M_GENRES))
    schema = {s.name: s for s in frames.schema}
    assert schema["age"].encoder == "label" and schema["occupation"].encoder == "label"
    assert schema["genres"].options == {"sep": "|"}


def test_ml1m_binary_genres(ml1m):
    frames = MovieLens1M(data_dir=ml1m, genre_encoding="binary").load()
    names = [f"genre_{g}" for g in ML1M_GENRES]
    assert list(frames.items.columns) == ["item_id", *names, "title"]  # 18 genres: ML-1M has no "unknown"
    movies = pd.read_csv(ml1m / "movies.dat", sep="::", header=None, engine="python", encoding="latin-1")
    np.testing.assert_array_equal(frames.items[names].to_numpy(), flags_of(movies[2], ML1M_GENRES))


def test_plugins_are_found_through_the_registry(ml100k):
    assert registry.get("dataset", "ml-100k") is MovieLens100K
    assert registry.get("dataset", "ml-1m") is MovieLens1M
    assert registry.get("dataset", "csv") is CsvDataset
    frames = registry.create("dataset", "synthetic", n_users=10, n_items=12, n_interactions=50).load()
    assert len(frames.interactions) == 50


# ---------------------------------------------------------------- validation errors


def rewrite(path: Path, line: int, text: str, encoding: str = "latin-1") -> None:
    lines = path.read_text(encoding=encoding).splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding=encoding)


def drop_field(path: Path, line: int, sep: str) -> None:
    rewrite(path, line, sep.join(path.read_text(encoding="latin-1").splitlines()[line - 1].split(sep)[:-1]))


def set_field(path: Path, line: int, sep: str, index: int, value: str) -> None:
    fields = path.read_text(encoding="latin-1").splitlines()[line - 1].split(sep)
    fields[index] = value
    rewrite(path, line, sep.join(fields))


ML100K_BREAKAGE = {
    "missing field": (lambda d: drop_field(d / "u.data", 5, "\t"),
                      ["u.data", "line 5:", "expected 4 tab-separated fields", "found 3"]),
    "non-numeric field": (lambda d: set_field(d / "u.data", 3, "\t", 2, "x"),
                          ["u.data", "line 3:", "'rating' must be an integer", "'x'"]),
    "fractional id": (lambda d: set_field(d / "u.data", 2, "\t", 0, "1.5"), ["line 2:", "'user_id'"]),
    "rating out of range": (lambda d: set_field(d / "u.data", 7, "\t", 2, "6"),
                            ["u.data", "line 7:", "within 1..5", "'6'"]),
    "unknown user": (lambda d: set_field(d / "u.data", 4, "\t", 0, "999"),
                     ["u.data", "line 4:", "user_id 999", "u.user"]),
    "unknown item": (lambda d: set_field(d / "u.data", 9, "\t", 1, "555"),
                     ["u.data", "line 9:", "item_id 555", "u.item"]),
    "wrong separator": (lambda d: (d / "u.data").write_text((d / "u.data").read_text().replace("\t", ",")),
                        ["u.data", "lines 1, 2, 3, 4, 5 (and 395 more: 400 in total)",
                         "expected 4 tab-separated fields", "found 1", "separator"]),
    "empty file": (lambda d: (d / "u.user").write_text(""), ["u.user", "empty"]),
    "missing file": (lambda d: (d / "u.item").unlink(), ["u.item", "not found"]),
    "duplicate user": (lambda d: rewrite(d / "u.user", 2, "1|30|M|writer|12345"),
                       ["u.user", "line 2:", "user_id 1", "twice"]),
    "genre flag not 0/1": (lambda d: set_field(d / "u.item", 6, "|", 7, "2"),
                           ["u.item", "line 6:", "genre_Adventure", "'2'"]),
    "bad gender": (lambda d: set_field(d / "u.user", 3, "|", 2, "X"), ["u.user", "line 3:", "'gender'"]),
    "non-numeric age": (lambda d: set_field(d / "u.user", 8, "|", 1, "abc"), ["u.user", "line 8:", "'age'"]),
}


@pytest.mark.parametrize("kind", list(ML100K_BREAKAGE))
def test_ml100k_malformed_file_errors(kind, ml100k, tmp_path):
    breakage, expected = ML100K_BREAKAGE[kind]
    breakage(ml100k)
    before = files_under(tmp_path)
    with pytest.raises(DataFormatError) as info:
        MovieLens100K(data_dir=ml100k).load()
    for part in expected:
        assert part in str(info.value), f"{part!r} not in: {info.value}"
    assert files_under(tmp_path) == before  # nothing written or cached when it fails


def test_error_lists_first_five_bad_lines_and_total(ml100k):
    for line in (2, 4, 6, 8, 10, 12, 14):
        set_field(ml100k / "u.data", line, "\t", 3, "soon")
    with pytest.raises(DataFormatError, match=r"lines 2, 4, 6, 8, 10 \(and 2 more: 7 in total\)"):
        MovieLens100K(data_dir=ml100k).load()


ML1M_BREAKAGE = {
    "tab instead of ::": (lambda d: (d / "ratings.dat").write_text((d / "ratings.dat").read_text()
                                                                   .replace("::", "\t")),
                          ["ratings.dat", "expected 4 '::'-separated fields", "found 1"]),
    "missing field": (lambda d: drop_field(d / "movies.dat", 3, "::"),
                      ["movies.dat", "line 3:", "expected 3 '::'-separated fields", "found 2"]),
    "unknown genre": (lambda d: set_field(d / "movies.dat", 4, "::", 2, "Drama|Cooking"),
                      ["movies.dat", "line 4:", "'Cooking'"]),
    "bad age code": (lambda d: set_field(d / "users.dat", 2, "::", 2, "30"), ["users.dat", "line 2:", "'age'"]),
    "unknown item": (lambda d: set_field(d / "ratings.dat", 6, "::", 1, "4000"),
                     ["ratings.dat", "line 6:", "item_id 4000", "movies.dat"]),
    "rating out of range": (lambda d: set_field(d / "ratings.dat", 1, "::", 2, "0"), ["line 1:", "1..5"]),
}


@pytest.mark.parametrize("kind", list(ML1M_BREAKAGE))
def test_ml1m_malformed_file_errors(kind, ml1m):
    breakage, expected = ML1M_BREAKAGE[kind]
    breakage(ml1m)
    with pytest.raises(DataFormatError) as info:
        MovieLens1M(data_dir=ml1m).load()
    for part in expected:
        assert part in str(info.value), f"{part!r} not in: {info.value}"


# ---------------------------------------------------------------- the reader itself


def test_reader_counts_quoted_fields_and_keeps_physical_line_numbers(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b'a,b,c\r\n1,"x,y",3\r\n\r\n2,"multi\nline",4\n5,6\n')
    with pytest.raises(DataFormatError, match=r"x.csv: line 6: expected 3 comma-separated fields, found 2"):
        read_table(path, sep=",", quotechar='"')
    path.write_bytes(b'a,b,c\r\n1,"x,y",3\r\n\r\n2,"multi\nline",4')  # no final newline
    table = read_table(path, sep=",", quotechar='"')
    assert table.frame.to_dict("list") == {"a": ["1", "2"], "b": ["x,y", "multi\nline"], "c": ["3", "4"]}
    np.testing.assert_array_equal(table.lines, [2, 4])


def test_reader_rejects_unclosed_quote_duplicate_header_and_bad_encoding(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('a,b\n1,2\n3,"4\n5,6\n')
    with pytest.raises(DataFormatError, match="line 3: a quoted field is never closed"):
        read_table(path, sep=",", quotechar='"')
    path.write_text("a,b,a\n1,2,3\n")
    with pytest.raises(DataFormatError, match=r"line 1: the header names \['a'\] more than once"):
        read_table(path, sep=",", quotechar='"')
    path.write_bytes("a|b\n1|Café\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match="line 2: not valid utf-8"):
        read_table(path, sep="|", names=("a", "b"), encoding="utf-8")
    path.write_text("a,b\n")
    with pytest.raises(DataFormatError, match="header but no rows"):
        read_table(path, sep=",", quotechar='"')


def test_reader_never_pads_short_rows(tmp_path):
    path = tmp_path / "x.dat"
    path.write_text("1|2|3\n4|5\n6|7|8\n")
    with pytest.raises(DataFormatError, match=r"line 2: expected 3 '\|'-separated fields \(a, b, c\), found 2"):
        read_table(path, sep="|", names=("a", "b", "c"))


# ---------------------------------------------------------------- download, cache, checksums


def served(tmp_path: Path, folder: Path, name: str) -> tuple[str, str, Path]:
    """A zip of `folder` laid out like the official archive, as a file:// URL with its MD5."""
    zip_path, md5 = zip_dataset(folder, tmp_path / f"served-{name}.zip", name)
    return zip_path.as_uri(), md5, zip_path


def test_download_verifies_extracts_and_reuses_the_cache(tmp_path, ml100k):
    url, md5, zip_path = served(tmp_path, ml100k, "ml-100k")
    cache = tmp_path / "cache"
    frames = MovieLens100K(cache_dir=cache, url=url, md5=md5).load()
    assert len(frames.interactions) == 400
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k"]  # no temp file or folder left behind
    assert (cache / "ml-100k" / "u.data").read_bytes() == (ml100k / "u.data").read_bytes()
    assert (cache / "ml-100k" / "MD5SUMS").is_file()
    zip_path.unlink()  # a second load must not download again
    again = MovieLens100K(cache_dir=cache, url=url, md5=md5).load()
    pd.testing.assert_frame_equal(again.interactions, frames.interactions)


def test_checksum_mismatch_names_url_and_both_md5s_and_caches_nothing(tmp_path, ml100k):
    url, md5, _ = served(tmp_path, ml100k, "ml-100k")
    cache = tmp_path / "cache"
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as info:
        MovieLens100K(cache_dir=cache, url=url, md5=wrong).load()
    assert url in str(info.value) and wrong in str(info.value) and md5 in str(info.value)
    assert list(cache.iterdir()) == []


def test_download_false_without_data_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        MovieLens1M(cache_dir=tmp_path / "cache", download=False).load()
    message = str(info.value)
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in message
    assert "data_dir" in message and "BENCH_DATA_DIR" in message


def test_unreachable_url_is_a_clear_error_and_leaves_nothing(tmp_path):
    cache = tmp_path / "cache"
    url = (tmp_path / "nowhere.zip").as_uri()
    with pytest.raises(ConnectionError, match="could not download"):
        MovieLens100K(cache_dir=cache, url=url, md5="0" * 32).load()
    assert list(cache.iterdir()) == []


def test_cache_dir_from_env_and_a_corrupted_cache_is_detected(tmp_path, ml1m, monkeypatch):
    url, md5, _ = served(tmp_path, ml1m, "ml-1m")
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "env-cache"))
    MovieLens1M(url=url, md5=md5).load()
    cached = tmp_path / "env-cache" / "ml-1m" / "ratings.dat"
    assert cached.is_file()
    cached.write_text(cached.read_text().replace("::5::", "::4::", 1))
    with pytest.raises(ChecksumError, match="ratings.dat"):
        MovieLens1M(url=url, md5=md5).load()


def test_archive_member_escaping_the_cache_is_refused(tmp_path):
    zip_path = tmp_path / "evil.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t1\t1\t1\n")
        zf.writestr("../outside.txt", "gotcha")
    md5 = hashlib.md5(zip_path.read_bytes(), usedforsecurity=False).hexdigest()
    with pytest.raises(DataFormatError, match="outside"):
        MovieLens100K(cache_dir=tmp_path / "cache", url=zip_path.as_uri(), md5=md5).load()
    assert not (tmp_path / "outside.txt").exists() and list((tmp_path / "cache").iterdir()) == []


def test_md5sums_file_in_data_dir_is_verified(ml100k):
    write_md5sums(ml100k)
    assert len(MovieLens100K(data_dir=ml100k).load().interactions) == 400
    first_rating = (ml100k / "u.data").read_text().split("\t")[2]
    set_field(ml100k / "u.data", 1, "\t", 2, "1" if first_rating != "1" else "2")  # still a valid file
    with pytest.raises(ChecksumError, match=r"u\.data: MD5 is [0-9a-f]{32}, but .*MD5SUMS line \d+ expects"):
        MovieLens100K(data_dir=ml100k).load()
    write_md5sums(ml100k)
    (ml100k / "u.genre").unlink()
    with pytest.raises(ChecksumError, match="lists u.genre, which is missing"):
        MovieLens100K(data_dir=ml100k).load()


# ---------------------------------------------------------------- where the files come from


def test_data_dir_may_be_the_folder_or_its_parent(ml100k):
    assert len(MovieLens100K(data_dir=ml100k).load().interactions) == 400
    assert len(MovieLens100K(data_dir=ml100k.parent).load().interactions) == 400
    with pytest.raises(FileNotFoundError, match="holds neither u.data nor ml-100k/u.data"):
        MovieLens100K(data_dir=ml100k / "u.user").load()


def test_bench_data_dir_is_used_and_explicit_data_dir_wins(tmp_path, monkeypatch):
    env_root = tmp_path / "env"
    write_ml100k(env_root / "ml-100k", n_ratings=300)
    explicit = write_ml100k(tmp_path / "explicit", n_ratings=200)
    monkeypatch.setenv("BENCH_DATA_DIR", str(env_root))
    assert len(MovieLens100K(download=False).load().interactions) == 300
    assert len(MovieLens100K(data_dir=explicit, download=False).load().interactions) == 200
    # BENCH_DATA_DIR without this dataset falls through to the cache
    with pytest.raises(FileNotFoundError, match="BENCH_DATA_DIR="):
        MovieLens1M(cache_dir=tmp_path / "cache", download=False).load()


# ---------------------------------------------------------------- synthetic


def test_synthetic_has_the_ml100k_columns_and_schema(ml100k):
    synthetic = SyntheticDataset(n_users=50, n_items=60, n_interactions=1500).load()
    real = MovieLens100K(data_dir=ml100k).load()
    assert synthetic.schema == real.schema
    for name in ("interactions", "users", "items"):
        ours, theirs = getattr(synthetic, name), getattr(real, name).drop(columns=["title"], errors="ignore")
        assert list(ours.columns) == list(theirs.columns)  # the real items' titles are for display only
        assert ours.dtypes.tolist() == theirs.dtypes.tolist()
    binary = SyntheticDataset(n_users=50, n_items=60, n_interactions=1500, genre_encoding="binary").load()
    assert binary.schema == MovieLens100K(data_dir=ml100k, genre_encoding="binary").load().schema


def test_synthetic_sizes_ranges_and_uniqueness():
    frames = SyntheticDataset(n_users=200, n_items=300, n_interactions=8000, seed=3).load()
    inter = frames.interactions
    assert len(inter) == 8000 and len(frames.users) == 200 and len(frames.items) == 300
    assert not inter.duplicated(["user_id", "item_id"]).any()
    assert set(inter.rating.unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert inter.user_id.between(1, 200).all() and inter.item_id.between(1, 300).all()
    assert inter.groupby("user_id").size().min() >= 20  # ML-100K's floor, when the total allows
    assert np.corrcoef(np.arange(len(inter)), inter.timestamp)[0, 1] > 0.99  # increasing, with noise
    assert (np.diff(inter.timestamp.to_numpy()) < 0).any()
    assert frames.users.age.between(0, 99).all() and set(frames.users.gender) == {"M", "F"}
    assert (frames.items.genres != "").all()


def test_synthetic_is_deterministic_by_seed():
    a = SyntheticDataset(n_users=40, n_items=50, n_interactions=600, seed=7).load()
    b = SyntheticDataset(n_users=40, n_items=50, n_interactions=600, seed=7).load()
    c = SyntheticDataset(n_users=40, n_items=50, n_interactions=600, seed=8).load()
    for name in ("interactions", "users", "items"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert not a.interactions.equals(c.interactions)


def test_synthetic_dense_request_uses_every_pair_once():
    inter = SyntheticDataset(n_users=5, n_items=4, n_interactions=20).load().interactions
    assert len(inter.drop_duplicates(["user_id", "item_id"])) == 20
    with pytest.raises(ValueError, match="exceeds n_users \\* n_items"):
        SyntheticDataset(n_users=5, n_items=4, n_interactions=21).load()
    with pytest.raises(ValueError, match="n_users must be an integer >= 1, got 0"):
        SyntheticDataset(n_users=0).load()
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        SyntheticDataset(seed=1.5).load()
    from_cli = SyntheticDataset(n_users="5", n_items="4", n_interactions="20", seed="0").load()
    pd.testing.assert_frame_equal(from_cli.interactions, inter)


def test_synthetic_item_popularity_is_skewed():
    inter = SyntheticDataset().load().interactions  # the ML-100K size
    assert len(inter) == 100_000 and inter.user_id.nunique() == 943
    counts = np.sort(inter.item_id.value_counts().to_numpy())[::-1]
    top_tenth = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_tenth > 0.3  # uniform popularity would give about 0.1 (ML-100K: 0.43)
    assert counts[0] > 10 * np.median(counts)  # ML-100K: 583 vs a median of 27


def genre_share_spread(inter: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, column: str) -> float:
    """How much the genre mix of rated items differs between groups of users (by one user column)."""
    genres = items.set_index("item_id").genres.str.get_dummies(sep="|")
    rated = genres.loc[inter.item_id].to_numpy()
    groups = users.set_index("user_id")[column].loc[inter.user_id].to_numpy()
    shares = pd.DataFrame(rated).groupby(groups).mean()
    weights = pd.Series(groups).value_counts().reindex(shares.index).to_numpy()
    return float((shares.sub(shares.mean()).abs().sum(axis=1) * weights).sum() / weights.sum())


def test_synthetic_user_features_predict_which_genres_a_user_rates_high():
    frames = SyntheticDataset(seed=1).load()
    liked = frames.interactions[frames.interactions.rating >= 4]
    users = frames.users.assign(age=np.digitize(frames.users.age, [18, 25, 35, 45, 55, 65]))  # the buckets
    shuffled = users.assign(**{c: np.random.default_rng(0).permutation(users[c])
                               for c in ("gender", "occupation", "age")})
    for column in ("gender", "occupation", "age"):
        real = genre_share_spread(liked, users, frames.items, column)
        null = genre_share_spread(liked, shuffled, frames.items, column)
        assert real > 2 * null, (column, real, null)  # features carry signal a model can learn


# ---------------------------------------------------------------- csv


def test_csv_interactions_only(tmp_path):
    (tmp_path / "clicks.csv").write_text("user_id,item_id,extra\nu1,a,x\nu2,b,y\nu1,c,z\n", encoding="utf-8-sig")
    frames = CsvDataset(data_dir=tmp_path, interactions="clicks.csv").load()
    inter = frames.interactions
    assert inter.user_id.tolist() == ["u1", "u2", "u1"] and inter.item_id.tolist() == ["a", "b", "c"]
    assert inter.rating.tolist() == [1.0, 1.0, 1.0]  # every row a positive
    assert inter.timestamp.tolist() == [0, 1, 2]  # file order is time
    assert frames.users.user_id.tolist() == ["u1", "u2"] and frames.items.item_id.tolist() == ["a", "b", "c"]
    assert [(s.name, s.encoder, s.is_id) for s in frames.schema] == [("user_id", "label", True),
                                                                      ("item_id", "label", True)]


def write_csv_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(
        "uid;iid;stars;when\n"
        "7;m1;4.5;2020-01-02T10:00:00Z\n"
        "8;m2;2;2020-01-01\n"
        '7;"m;3";3;2020-01-03 00:00:01\n'
    )
    (folder / "users.csv").write_text("uid;country;income\n7;FR;1200.5\n8;DE;900\n9;FR;100\n")
    (folder / "items.csv").write_text('iid;tags;studio\nm1;a|b;X\nm2;;Y\n"m;3";b;X\n')
    return folder


def test_csv_with_feature_files_and_every_option(tmp_path):
    folder = write_csv_dataset(tmp_path / "mine")
    frames = CsvDataset(data_dir=folder, interactions="ratings.csv", users="users.csv", items="items.csv",
                        sep=";", user_col="uid", item_col="iid", rating_col="stars", timestamp_col="when",
                        multi_columns="tags", numeric_columns=["income"]).load()
    inter = frames.interactions
    assert inter.item_id.tolist() == ["m1", "m2", "m;3"]  # quoted field holding the separator
    assert inter.rating.tolist() == [4.5, 2.0, 3.0]
    assert inter.timestamp.tolist() == [1577959200, 1577836800, 1578009601]
    assert list(frames.users.columns) == ["user_id", "country", "income"] and len(frames.users) == 3
    assert frames.users.income.tolist() == [1200.5, 900.0, 100.0]
    assert frames.items.tags.tolist() == ["a|b", "", "b"]
    schema = {s.name: (s.side, s.encoder, s.options, s.is_id) for s in frames.schema}
    assert schema == {
        "user_id": ("user", "label", {}, True), "country": ("user", "label", {}, False),
        "income": ("user", "bucket", {"quantiles": 10}, False), "item_id": ("item", "label", {}, True),
        "tags": ("item", "multihot", {"sep": "|"}, False), "studio": ("item", "label", {}, False),
    }


CSV_BREAKAGE = {
    "missing id column": (dict(user_col="user"), DataFormatError, ["ratings.csv", "'user'", "option user_col"]),
    "unknown user": (dict(users="users.csv"), DataFormatError, ["ratings.csv", "line 3", "'8'", "users.csv"]),
    "non-numeric rating": (dict(rating_col="when"), DataFormatError, ["lines 2, 3, 4:", "'when'"]),
    "numeric column absent": (dict(numeric_columns="age"), DataFormatError, ["numeric_columns", "'age'"]),
    "column in both lists": (dict(numeric_columns="tags", multi_columns="tags"), DataFormatError, ["both"]),
    "missing file": (dict(items="nope.csv"), DataFormatError, ["nope.csv", "not found"]),
    "no interactions option": (dict(interactions=None), DataFormatError, ["interactions", "required"]),
    "unknown option": (dict(rating_column="stars"), DataFormatError, ["rating_column", "rating_col"]),
}


@pytest.mark.parametrize("kind", list(CSV_BREAKAGE))
def test_csv_errors(kind, tmp_path):
    folder = write_csv_dataset(tmp_path / "mine")
    (folder / "users.csv").write_text("uid;country\n7;FR\n")
    overrides, error, expected = CSV_BREAKAGE[kind]
    options = dict(interactions="ratings.csv", sep=";", user_col="uid", item_col="iid", items="items.csv")
    with pytest.raises(error) as info:
        CsvDataset(data_dir=folder, **{**options, **overrides}).load()
    for part in expected:
        assert part in str(info.value), f"{part!r} not in: {info.value}"


def test_csv_bad_timestamp_names_the_line(tmp_path):
    (tmp_path / "r.csv").write_text("user_id,item_id,t\n1,2,2020-01-01\n1,3,yesterday\n")
    with pytest.raises(DataFormatError, match=r"r.csv: line 3: column 't' must be a number or an ISO date"):
        CsvDataset(interactions=tmp_path / "r.csv", timestamp_col="t").load()


# ---------------------------------------------------------------- the real MovieLens-100K


@pytest.mark.integration
def test_real_ml100k_loads_verified(tmp_path, monkeypatch):
    # the caller's BENCH_DATA_DIR or download cache (read before the fixture replaced them); skipped without
    # either, and a failure under CI
    for name, value in (("BENCH_DATA_DIR", REAL_DATA_DIR), ("BENCH_CACHE_DIR", REAL_CACHE_DIR)):
        if value:
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name, raising=False)
    folder = require_ml100k()
    frames = MovieLens100K(data_dir=folder).load()
    assert len(frames.interactions) == 100_000
    assert frames.interactions.user_id.nunique() == 943 and len(frames.users) == 943
    assert frames.interactions.item_id.nunique() == 1682 and len(frames.items) == 1682
    assert frames.interactions.rating.between(1, 5).all()
    assert frames.users.occupation.nunique() == 21
    assert frames.items.loc[frames.items.item_id == 1, "genres"].item() == "Animation|Children's|Comedy"
    binary = MovieLens100K(data_dir=folder, genre_encoding="binary").load()
    assert binary.items.filter(like="genre_").to_numpy().sum() == frames.items.genres.str.count(r"\|").add(1).sum()
    # the shared copy ships an MD5SUMS: a corrupted copy must not load
    if (folder / "MD5SUMS").is_file():
        copy = Path(shutil.copytree(folder, tmp_path / "ml-100k"))
        with open(copy / "u.data", "ab") as fh:
            fh.write(b"1\t1\t5\t881250949\n")
        with pytest.raises(ChecksumError):
            MovieLens100K(data_dir=copy).load()
