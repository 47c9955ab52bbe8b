"""MovieLens 20M / 25M (issue 16, section 2) on generated files in the official formats: frames, schema,
validation errors, the pipeline to a split, and the download / cache / data_dir paths."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import registry
from bench.data.pipeline import prepare
from bench.data.readers import DataFormatError
from plugins.datasets.movielens import MovieLens20M, MovieLens25M

sys.path.insert(0, str(Path(__file__).parent))
from datagen import ML20M_GENRES, NO_GENRES, write_md5sums, write_ml20m, zip_dataset  # noqa: E402

RELEASES = {"ml-20m": MovieLens20M, "ml-25m": MovieLens25M}


pytestmark = pytest.mark.usefixtures("isolated_env")


@pytest.fixture
def ml20m(tmp_path) -> Path:
    return write_ml20m(tmp_path / "ml-20m")


def movies_of(folder: Path) -> pd.DataFrame:
    """movies.csv as Python's csv module reads it (the reference for quoting)."""
    with open(folder / "movies.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return pd.DataFrame(rows[1:], columns=rows[0])


def genre_sets(joined) -> list[set[str]]:
    return [set(g.split("|")) - {"", NO_GENRES} for g in joined]


# ---------------------------------------------------------------- frames and schema


def test_ml20m_frames_match_the_files(ml20m):
    frames = MovieLens20M(data_dir=ml20m).load()
    raw = pd.read_csv(ml20m / "ratings.csv")
    inter = frames.interactions
    assert frames.name == "ml-20m"
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert inter.dtypes.tolist() == [np.int32, np.int32, np.float32, np.int64]  # compact at 20M rows
    np.testing.assert_array_equal(inter.user_id, raw.userId)  # file order kept
    np.testing.assert_array_equal(inter.item_id, raw.movieId)
    np.testing.assert_array_equal(inter.rating, raw.rating.astype(np.float32))
    np.testing.assert_array_equal(inter.timestamp, raw.timestamp)
    assert set(inter.rating) <= {k / 2 for k in range(1, 11)} and 4.5 in set(inter.rating)
    assert list(frames.users.columns) == ["user_id"]  # no user features in 20M / 25M
    np.testing.assert_array_equal(frames.users.user_id, np.unique(raw.userId))
    movies = movies_of(ml20m)
    assert list(frames.items.columns) == ["item_id", "genres", "title"]
    np.testing.assert_array_equal(frames.items.item_id, movies.movieId.astype(int))  # unrated movies too
    assert len(frames.items) > raw.movieId.nunique()
    assert genre_sets(frames.items.genres) == genre_sets(movies.genres)
    no_genres = (movies.genres == NO_GENRES).to_numpy()
    assert no_genres.any() and (frames.items.genres[no_genres] == "").all()  # no genre, not a genre


def test_ml20m_schema(ml20m):
    schema = MovieLens20M(data_dir=ml20m).load().schema
    assert [(s.name, s.side, s.encoder, s.options, s.is_id) for s in schema] == [
        ("user_id", "user", "label", {}, True),
        ("item_id", "item", "label", {}, True),
        ("genres", "item", "multihot", {"sep": "|"}, False),
    ]


def test_ml20m_binary_genres_are_the_files_vocabulary(ml20m):
    frames = MovieLens20M(data_dir=ml20m, genre_encoding="binary").load()
    names = [f"genre_{g}" for g in sorted(ML20M_GENRES)]  # IMAX and "Children" included, no "(no genres listed)"
    assert list(frames.items.columns) == ["item_id", *names, "title"]
    assert "genre_IMAX" in names and "genre_Children" in names
    flags = frames.items[names].to_numpy()
    wanted = genre_sets(movies_of(ml20m).genres)
    assert [{g for g, f in zip(sorted(ML20M_GENRES), row, strict=True) if f} for row in flags] == wanted
    assert {(s.encoder, s.side) for s in frames.schema if s.name.startswith("genre_")} == {("label", "item")}


def test_ml25m_reads_the_same_format(tmp_path):
    folder = write_ml20m(tmp_path / "ml-25m", seed=3)
    frames = MovieLens25M(data_dir=folder).load()
    assert frames.name == "ml-25m" and len(frames.interactions) == 400
    assert MovieLens25M(data_dir=tmp_path).load().interactions.equals(frames.interactions)  # the parent works too


def test_quoted_titles_with_commas_and_quotes_keep_their_row(ml20m):
    text = (ml20m / "movies.csv").read_text(encoding="utf-8")
    assert '"Misérables, Les (1995)"' in text and '"Shawshank ""Redemption"", The (1994)"' in text
    lines = text.splitlines()
    lines[2] = '25,"Title, with ""commas"", and, more",Drama|IMAX'
    (ml20m / "movies.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    items = MovieLens20M(data_dir=ml20m).load().items.set_index("item_id")
    assert items.loc[25, "genres"] == "Drama|IMAX"


# ---------------------------------------------------------------- validation errors


def edit(path: Path, line: int, change) -> None:
    """Replace line `line` (1-based; None: drop it) by change(old line)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    new = change(lines[line - 1])
    if new is None:
        del lines[line - 1]
    else:
        lines[line - 1] = new
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def rating_field(index: int, value: str):
    def change(line: str) -> str:
        fields = line.split(",")
        fields[index] = value
        return ",".join(fields)
    return change


def movie_id(value: str):
    return lambda line: value + line[line.index(","):]


def genres(value: str):
    return lambda line: line[:line.rindex(",") + 1] + value


def second_movie_id(d: Path) -> str:
    return (d / "movies.csv").read_text(encoding="utf-8").splitlines()[1].split(",")[0]


ML20M_BREAKAGE = {
    "rating 5.5": (lambda d: edit(d / "ratings.csv", 3, rating_field(2, "5.5")),
                   ["ratings.csv", "line 3:", "'rating'", "within 0.5..5.0", "got 5.5"]),
    "rating 0.3": (lambda d: edit(d / "ratings.csv", 4, rating_field(2, "0.3")),
                   ["ratings.csv", "line 4:", "within 0.5..5.0", "got 0.3"]),
    "rating 0": (lambda d: edit(d / "ratings.csv", 4, rating_field(2, "0")), ["line 4:", "within 0.5..5.0"]),
    "rating off the half stars": (lambda d: edit(d / "ratings.csv", 5, rating_field(2, "3.7")),
                                  ["ratings.csv", "line 5:", "half stars", "got 3.7"]),
    "rating not a number": (lambda d: edit(d / "ratings.csv", 6, rating_field(2, "good")),
                            ["ratings.csv", "line 6:", "'rating' must be a number", "'good'"]),
    "fractional userId": (lambda d: edit(d / "ratings.csv", 2, rating_field(0, "1.5")),
                          ["ratings.csv", "line 2:", "'userId' must be an integer", "'1.5'"]),
    "userId beyond int32": (lambda d: edit(d / "ratings.csv", 7, rating_field(0, "3000000000")),
                            ["ratings.csv", "line 7:", "'userId'", "'3000000000'", "int32 range"]),
    "userId 0": (lambda d: edit(d / "ratings.csv", 7, rating_field(0, "0")), ["line 7:", "'userId' must be >= 1"]),
    "negative timestamp": (lambda d: edit(d / "ratings.csv", 8, rating_field(3, "-5")),
                           ["ratings.csv", "line 8:", "'timestamp' must be >= 0", "-5"]),
    "ratings header missing": (lambda d: edit(d / "ratings.csv", 1, lambda _: None),
                               ["ratings.csv", "line 1:", "header", "userId", "missing"]),
    "ratings header misnamed": (lambda d: edit(d / "ratings.csv", 1, lambda _: "userId,itemId,rating,timestamp"),
                                ["ratings.csv", "line 1:", "'movieId'"]),
    "ratings header reordered": (lambda d: edit(d / "ratings.csv", 1, lambda _: "movieId,userId,rating,timestamp"),
                                 ["ratings.csv", "line 1:", "must be userId,movieId,rating,timestamp",
                                  "found movieId,userId"]),
    "ratings row with 5 fields": (lambda d: edit(d / "ratings.csv", 9, lambda line: line + ",1"),
                                  ["ratings.csv", "line 9:", "expected 4 comma-separated fields", "found 5"]),
    "ratings row with 3 fields": (lambda d: edit(d / "ratings.csv", 9, lambda line: line.rsplit(",", 1)[0]),
                                  ["ratings.csv", "line 9:", "found 3"]),
    "tab-separated ratings": (lambda d: (d / "ratings.csv").write_text((d / "ratings.csv").read_text()
                                                                        .replace(",", "\t")),
                              ["ratings.csv", "line 1:", "comma-separated", "separator"]),
    "unknown movieId": (lambda d: edit(d / "ratings.csv", 6, rating_field(1, "999999")),
                        ["ratings.csv", "line 6:", "movieId 999999", "movies.csv"]),
    "duplicate movieId": (lambda d: edit(d / "movies.csv", 3, movie_id(second_movie_id(d))),
                          ["movies.csv", "line 3:", "movieId", "listed twice"]),
    "movies header missing": (lambda d: edit(d / "movies.csv", 1, lambda _: None),
                              ["movies.csv", "line 1:", "header", "'movieId'"]),
    "movies header misnamed": (lambda d: edit(d / "movies.csv", 1, lambda _: "movieId,name,genres"),
                               ["movies.csv", "line 1:", "must be movieId,title,genres"]),
    "unquoted comma in a title": (lambda d: edit(d / "movies.csv", 4, lambda line: line.replace(",", ", x,", 1)),
                                  ["movies.csv", "line 4:", "expected 3 comma-separated fields", "found 4"]),
    "unclosed quote in a title": (lambda d: edit(d / "movies.csv", 5, lambda line: line.replace(",", ',"', 1)),
                                  ["movies.csv", "quoted field is never closed"]),
    "non-integer movieId": (lambda d: edit(d / "movies.csv", 2, movie_id("m18")),
                            ["movies.csv", "line 2:", "'movieId' must be an integer", "'m18'"]),
    "empty genre name": (lambda d: edit(d / "movies.csv", 6, genres("Drama||Comedy")),
                         ["movies.csv", "line 6:", "genre names joined by '|'", "'Drama||Comedy'"]),
    "empty genres": (lambda d: edit(d / "movies.csv", 6, genres("")), ["movies.csv", "line 6:", "genre names"]),
    "spaced genre name": (lambda d: edit(d / "movies.csv", 7, genres("Drama| Comedy")),
                          ["movies.csv", "line 7:", "'Drama| Comedy'"]),
    "no genres plus a genre": (lambda d: edit(d / "movies.csv", 8, genres(f"{NO_GENRES}|Drama")),
                               ["movies.csv", "line 8:", "must stand alone"]),
    "missing movies.csv": (lambda d: (d / "movies.csv").unlink(), ["movies.csv", "not found"]),
    "empty ratings.csv": (lambda d: (d / "ratings.csv").write_text(""), ["ratings.csv", "empty"]),
    "header only": (lambda d: (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n"),
                    ["ratings.csv", "header but no rows"]),
    "movies.csv not UTF-8": (lambda d: (d / "movies.csv").write_bytes(
        (d / "movies.csv").read_text(encoding="utf-8").encode("latin-1")), ["movies.csv", "not valid utf-8"]),
}


@pytest.mark.parametrize("kind", list(ML20M_BREAKAGE))
def test_ml20m_malformed_file_errors(kind, ml20m, tmp_path):
    breakage, expected = ML20M_BREAKAGE[kind]
    breakage(ml20m)
    with pytest.raises(DataFormatError) as info:
        MovieLens20M(data_dir=ml20m).load()
    for part in expected:
        assert part in str(info.value), f"{part!r} not in: {info.value}"


def test_every_bad_rating_line_is_counted(ml20m):
    for line in (3, 5, 7, 9, 11, 13):
        edit(ml20m / "ratings.csv", line, rating_field(2, "5.5"))
    with pytest.raises(DataFormatError, match=r"lines 3, 5, 7, 9, 11 \(and 1 more: 6 in total\): column 'rating'"):
        MovieLens20M(data_dir=ml20m).load()


def test_bad_genre_encoding_is_an_error(ml20m):
    with pytest.raises(DataFormatError, match="multihot"):
        MovieLens20M(data_dir=ml20m, genre_encoding="onehot").load()


# ---------------------------------------------------------------- through the pipeline


def test_ml20m_through_the_pipeline_to_a_split(ml20m):
    frames = MovieLens20M(data_dir=ml20m).load()
    data = prepare(frames, threshold=4.0, min_interactions=3)
    raw = pd.read_csv(ml20m / "ratings.csv")
    liked = raw[raw.rating >= 4.0]  # 4.0, 4.5 and 5.0 stars
    per_user = liked.groupby("userId").size()
    assert data.info["rating_range"] == (0.5, 5.0)
    assert data.info["n_positives"] == len(liked)
    assert data.n_users - 1 == liked.userId.nunique() and data.n_items - 1 == liked.movieId.nunique()
    assert len(data.test) == len(data.val) == (per_user >= 3).sum()
    assert len(data.train) + len(data.val) + len(data.test) == len(liked)
    assert [f.name for f in data.spec] == ["user_id", "item_id", "genres"]
    vocab = data.info["encoders"]["genres"].classes
    assert NO_GENRES not in vocab and set(vocab) <= set(ML20M_GENRES)
    last = liked.sort_values(["userId", "timestamp"], kind="stable").groupby("userId").tail(1)
    last = last[last.userId.map(per_user) >= 3]
    test_pairs = set(zip(data.user_ids[data.test.users], data.item_ids[data.test.items], strict=True))
    assert test_pairs == set(zip(last.userId, last.movieId, strict=True))  # the latest positive is the test item


@pytest.mark.parametrize("name", list(RELEASES))
def test_entry_point_names_the_plugin(name):
    if name not in registry.available("dataset"):
        pytest.skip(f"pyproject.toml does not declare the {name} entry point yet (or the package needs reinstalling)")
    assert registry.get("dataset", name) is RELEASES[name]


# ---------------------------------------------------------------- download, cache, data_dir


@pytest.mark.parametrize("name", list(RELEASES))
def test_download_verifies_extracts_and_reuses_the_cache(name, tmp_path):
    folder = write_ml20m(tmp_path / "source")
    zip_path, md5 = zip_dataset(folder, tmp_path / f"served-{name}.zip", name)
    cache = tmp_path / "cache"
    cls = RELEASES[name]
    frames = cls(cache_dir=cache, url=zip_path.as_uri(), md5=md5).load()
    assert len(frames.interactions) == 400
    assert sorted(p.name for p in cache.iterdir()) == [name]  # nothing else left behind
    assert (cache / name / "ratings.csv").read_bytes() == (folder / "ratings.csv").read_bytes()
    assert (cache / name / "MD5SUMS").is_file()
    zip_path.unlink()  # the second load must not download again
    pd.testing.assert_frame_equal(cls(cache_dir=cache, url=zip_path.as_uri(), md5=md5).load().interactions,
                                  frames.interactions)
    cached = cache / name / "movies.csv"
    cached.write_text(cached.read_text(encoding="utf-8").replace("Drama", "Comedy", 1), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"movies\.csv: MD5"):  # a changed cache is detected
        cls(cache_dir=cache, url=zip_path.as_uri(), md5=md5).load()


def test_wrong_archive_checksum_caches_nothing(tmp_path, ml20m):
    zip_path, md5 = zip_dataset(ml20m, tmp_path / "served.zip", "ml-20m")
    with pytest.raises(DataFormatError, match=f"expected {'0' * 32}"):
        MovieLens20M(cache_dir=tmp_path / "cache", url=zip_path.as_uri(), md5="0" * 32).load()
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("name", list(RELEASES))
def test_official_archives_and_how_to_get_them(name, tmp_path):
    cls = RELEASES[name]
    md5 = {"ml-20m": "cd245b17a1ae2cc31bb14903e1204af3", "ml-25m": "6b51fb2759a8657d3bfcbfc42b592ada"}[name]
    assert (cls.archive.folder, cls.archive.md5, cls.archive.marker) == (name, md5, "ratings.csv")
    url = f"https://files.grouplens.org/datasets/movielens/{name}.zip"
    assert cls.archive.url == url
    with pytest.raises(FileNotFoundError) as info:
        cls(cache_dir=tmp_path / "cache", download=False).load()
    assert url in str(info.value) and "data_dir" in str(info.value)


def test_data_dir_checks_an_md5sums_beside_the_files(ml20m):
    write_md5sums(ml20m)
    assert len(MovieLens20M(data_dir=ml20m).load().interactions) == 400
    edit(ml20m / "ratings.csv", 2, rating_field(2, "1.0" if "1.0" not in
                                               (ml20m / "ratings.csv").read_text().splitlines()[1] else "2.0"))
    with pytest.raises(DataFormatError, match=r"ratings\.csv: MD5"):
        MovieLens20M(data_dir=ml20m).load()
