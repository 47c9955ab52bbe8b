"""MovieLens 100K, 1M, 20M and 25M from the official GroupLens files, validated, as frames + column schema.

Users: user_id, age, gender, occupation (zip code is not a feature); 20M and 25M have no user features,
so their user side is user_id alone. Items: item_id and the genres, either one multi-hot field
(`genre_encoding="multihot"`, default) or one 0/1 field per genre (`"binary"`, as in the original
notebook). Options `url` / `md5` point the download at a mirror (or, in tests, a local file:// archive);
the archive must still match the MD5 given, and may extract to at most a few times the official archive's
size (`Archive.expanded`, about what it extracts to).

20M and 25M (ratings.csv `userId,movieId,rating,timestamp`, ratings 0.5..5.0 in half stars; movies.csv
`movieId,title,genres`, UTF-8, titles quoted when they hold a comma): their genre vocabulary is the union
of the genres movies.csv uses, not a fixed list. Their README lists ML-1M's 18 genres, but the files also
use "IMAX" and spell "Children" without the 's', so a fixed list would have to be guessed from files that
cannot be checked here and would refuse the genuine ones if a release differs. What is checked instead is
the form: non-empty names without surrounding spaces, joined by '|'. "(no genres listed)" means no genre
(an empty multi-hot row, all-zero binary fields) and must stand alone; binary fields follow the sorted
vocabulary. Ids are int32, ratings float32 and timestamps int64, and ratings.csv is converted while it is
read (bench.data.readers), so 25M ratings never exist as Python strings.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from bench.data.base import DatasetPlugin
from bench.data.download import Archive, locate
from bench.data.readers import DataFormatError, Table, read_table, take_options
from bench.data.types import ColumnSchema, DatasetFrames

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
ML1M_GENRES = ML100K_GENRES[1:]  # ML-1M has no "unknown" genre
AGE_BINS = [0, 18, 25, 35, 45, 55, 65, 100]  # right-open: 7 buckets, as in the notebook
ML1M_AGE_CODES = ("1", "18", "25", "35", "45", "50", "56")
GENRE_ENCODINGS = ("multihot", "binary")
RATINGS = ("user_id", "item_id", "rating", "timestamp")
ENCODING = "latin-1"  # item titles are latin-1 in both releases
RATINGS_CSV = ("userId", "movieId", "rating", "timestamp")  # the 20M / 25M headers
MOVIES_CSV = ("movieId", "title", "genres")
NO_GENRES = "(no genres listed)"


def genre_fields(flags: np.ndarray, genres: tuple[str, ...], encoding: str) -> dict[str, np.ndarray]:
    """Item feature columns from an (n_items, n_genres) 0/1 matrix: 'genres' ("Action|Comedy") or genre_*."""
    flags = np.asarray(flags, dtype=bool)
    if encoding == "binary":
        return {f"genre_{g}": flags[:, j].astype(np.int64) for j, g in enumerate(genres)}
    joined = np.full(len(flags), "", dtype=object)
    for j, genre in enumerate(genres):  # one vectorised step per genre
        joined = joined + np.where(flags[:, j], genre + "|", "")
    return {"genres": pd.Series(joined, dtype=str).str.removesuffix("|").to_numpy()}


def genre_schema(genres: tuple[str, ...], encoding: str) -> list[ColumnSchema]:
    if encoding == "binary":
        return [ColumnSchema(f"genre_{g}", "item", "label") for g in genres]
    return [ColumnSchema("genres", "item", "multihot", {"sep": "|"})]


def ml100k_schema(genre_encoding: str = "multihot") -> list[ColumnSchema]:
    """The ML-100K columns; the synthetic dataset produces the same ones."""
    return [
        ColumnSchema("user_id", "user", "label", is_id=True),
        ColumnSchema("age", "user", "bucket", {"bins": list(AGE_BINS)}),
        ColumnSchema("gender", "user", "label"),
        ColumnSchema("occupation", "user", "label"),
        ColumnSchema("item_id", "item", "label", is_id=True),
        *genre_schema(ML100K_GENRES, genre_encoding),
    ]


def read_ratings(path: Path, sep: str) -> tuple[Table, pd.DataFrame]:
    """The ratings file as interactions (file order kept): integer ids and timestamps, ratings 1..5."""
    table = read_table(path, sep=sep, names=RATINGS, encoding=ENCODING, newline_at_end=True)
    frame = pd.DataFrame({
        "user_id": table.numeric("user_id", integer=True),
        "item_id": table.numeric("item_id", integer=True),
        "rating": table.numeric("rating", integer=True, low=1, high=5).astype(np.float64),
        "timestamp": table.numeric("timestamp", integer=True, low=0),
    })
    return table, frame


def check_ids(ratings: Table, interactions: pd.DataFrame, users: Table, items: Table,
              user_ids: np.ndarray, item_ids: np.ndarray) -> None:
    """Unique ids in the user/item files, and every rated user and item listed there."""
    users.unique("user_id", user_ids)
    items.unique("item_id", item_ids)
    ratings.known("user_id", interactions["user_id"], user_ids, users.path)
    ratings.known("item_id", interactions["item_id"], item_ids, items.path)


class _MovieLens(DatasetPlugin):
    """Shared loading: options, then locating (downloading) the files; each release's `read` parses them."""

    archive: Archive
    defaults: ClassVar[dict[str, Any]] = {"genre_encoding": "multihot", "url": None, "md5": None}

    def load(self) -> DatasetFrames:
        opts = take_options(self.name, self.options, self.defaults, text=("genre_encoding", "url", "md5"))
        if opts["genre_encoding"] not in GENRE_ENCODINGS:
            raise DataFormatError(f"dataset {self.name!r}: option genre_encoding must be one of "
                                  f"{GENRE_ENCODINGS}, got {opts['genre_encoding']!r}")
        archive = replace(self.archive, url=opts["url"] or self.archive.url, md5=opts["md5"] or self.archive.md5)
        folder = locate(archive, self.data_dir, self.cache_dir, self.download)
        interactions, users, items, schema = self.read(folder, opts["genre_encoding"])
        return DatasetFrames(self.name, interactions, users, items, schema, seconds_per_unit=1.0)  # Unix seconds


class MovieLens100K(_MovieLens):
    """MovieLens 100K: 100,000 ratings (1-5) by 943 users of 1682 movies, with demographics and genres."""

    name = "ml-100k"
    archive = Archive("ml-100k", "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                      "0e33842e24a9c977be4e0107933c0723", "u.data", expanded=16_000_000)

    def read(self, folder: Path, genre_encoding: str):
        ratings, interactions = read_ratings(folder / "u.data", "\t")
        users = read_table(folder / "u.user", sep="|", encoding=ENCODING, newline_at_end=True,
                           names=("user_id", "age", "gender", "occupation", "zip_code"))
        items = read_table(folder / "u.item", sep="|", encoding=ENCODING, newline_at_end=True,
                           names=("item_id", "title", "release_date", "video_release_date", "url",
                                  *(f"genre_{g}" for g in ML100K_GENRES)))
        user_frame = pd.DataFrame({
            "user_id": users.numeric("user_id", integer=True),
            "age": users.numeric("age", integer=True, low=AGE_BINS[0], high=AGE_BINS[-1] - 1),
            "gender": users.frame["gender"].to_numpy(),
            "occupation": users.frame["occupation"].to_numpy(),
        })
        users.choice("gender", ("M", "F"))
        users.non_empty("occupation")
        for genre in ML100K_GENRES:
            items.choice(f"genre_{genre}", ("0", "1"))
        flags = items.frame[[f"genre_{g}" for g in ML100K_GENRES]].to_numpy() == "1"
        item_frame = pd.DataFrame({"item_id": items.numeric("item_id", integer=True),
                                   **genre_fields(flags, ML100K_GENRES, genre_encoding),
                                   "title": items.frame["title"].to_numpy()})  # not a feature: for bench recommend
        check_ids(ratings, interactions, users, items, user_frame["user_id"], item_frame["item_id"])
        return interactions, user_frame, item_frame, ml100k_schema(genre_encoding)


class MovieLens1M(_MovieLens):
    """MovieLens 1M: 1,000,209 ratings (1-5) by 6040 users of 3706 (of 3883 listed) movies, with features."""

    name = "ml-1m"
    archive = Archive("ml-1m", "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                      "c4d9eecfca2ab87c1945afe126590906", "ratings.dat", expanded=25_000_000)

    def read(self, folder: Path, genre_encoding: str):
        ratings, interactions = read_ratings(folder / "ratings.dat", "::")
        users = read_table(folder / "users.dat", sep="::", encoding=ENCODING, newline_at_end=True,
                           names=("user_id", "gender", "age", "occupation", "zip_code"))
        items = read_table(folder / "movies.dat", sep="::", encoding=ENCODING, newline_at_end=True,
                           names=("item_id", "title", "genres"))
        users.choice("gender", ("M", "F"))
        users.choice("age", ML1M_AGE_CODES)
        user_frame = pd.DataFrame({
            "user_id": users.numeric("user_id", integer=True),
            "age": users.numeric("age", integer=True),
            "gender": users.frame["gender"].to_numpy(),
            "occupation": users.numeric("occupation", integer=True, low=0, high=20),
        })
        listed = items.frame["genres"].str.split("|").explode()  # index: the row each genre came from
        unknown = ~listed.isin(ML1M_GENRES)
        if unknown.any():
            items.fail(np.isin(np.arange(len(items.frame)), listed.index[unknown]),
                       f"column 'genres' must be genres from {list(ML1M_GENRES)} joined by '|', "
                       f"got {listed[unknown].iloc[0]!r}")
        flags = items.frame["genres"].str.get_dummies(sep="|").reindex(columns=ML1M_GENRES, fill_value=0)
        item_frame = pd.DataFrame({"item_id": items.numeric("item_id", integer=True),
                                   **genre_fields(flags.to_numpy(), ML1M_GENRES, genre_encoding),
                                   "title": items.frame["title"].to_numpy()})
        check_ids(ratings, interactions, users, items, user_frame["user_id"], item_frame["item_id"])
        schema = [
            ColumnSchema("user_id", "user", "label", is_id=True),
            ColumnSchema("age", "user", "label"),
            ColumnSchema("gender", "user", "label"),
            ColumnSchema("occupation", "user", "label"),
            ColumnSchema("item_id", "item", "label", is_id=True),
            *genre_schema(ML1M_GENRES, genre_encoding),
        ]
        return interactions, user_frame, item_frame, schema


def expect_header(table: Table, columns: tuple[str, ...]) -> None:
    """The file's header names exactly `columns`, in order (the official files' header)."""
    found = list(table.frame.columns)
    if found != list(columns):
        raise DataFormatError(f"{table.path}: line {table.header_line}: the header must be {','.join(columns)}, "
                              f"found {','.join(found)}")


def csv_genres(movies: Table) -> tuple[tuple[str, ...], np.ndarray]:
    """The genre vocabulary of movies.csv (sorted) and the (n_movies, n_genres) 0/1 matrix."""
    raw = movies.frame["genres"]
    listed = raw.str.split("|", regex=False).explode()  # index: the row each name came from
    rows = np.arange(len(raw))
    malformed = np.isin(rows, listed.index[(listed == "") | (listed != listed.str.strip())])
    if malformed.any():
        movies.fail(malformed, f"column 'genres' must be genre names joined by '|' (or {NO_GENRES!r}), "
                               f"got {raw[malformed].iloc[0]!r}")
    none = listed == NO_GENRES
    mixed = np.isin(rows, listed.index[none]) & (raw.to_numpy() != NO_GENRES)
    if mixed.any():
        movies.fail(mixed, f"column 'genres': {NO_GENRES!r} must stand alone, got {raw[mixed].iloc[0]!r}")
    genres = tuple(sorted(pd.unique(listed[~none])))
    flags = raw.str.get_dummies(sep="|").reindex(columns=list(genres), fill_value=0).to_numpy()
    return genres, flags


class _MovieLensCsv(_MovieLens):
    """MovieLens 20M / 25M: ratings.csv and movies.csv with headers; no user features."""

    def read(self, folder: Path, genre_encoding: str):
        ratings = read_table(folder / "ratings.csv", sep=",", encoding="utf-8", newline_at_end=True,
                             parse={"userId": np.int32, "movieId": np.int32, "rating": float,
                                    "timestamp": np.int64})
        expect_header(ratings, RATINGS_CSV)
        user_ids = ratings.numeric("userId", integer=True, low=1)
        item_ids = ratings.numeric("movieId", integer=True, low=1)
        stars = ratings.numeric("rating", low=0.5, high=5.0)
        halves = stars * 2
        off_step = halves != np.round(halves)
        del halves
        if off_step.any():
            ratings.fail(off_step, f"column 'rating' must be in half stars (0.5, 1.0, ..., 5.0), got "
                                   f"{stars[off_step][0]}")
        timestamps = ratings.numeric("timestamp", integer=True, low=0)

        movies = read_table(folder / "movies.csv", sep=",", quotechar='"', encoding="utf-8",
                            newline_at_end=True, parse={"movieId": np.int32})
        expect_header(movies, MOVIES_CSV)
        movie_ids = movies.numeric("movieId", integer=True, low=1)
        movies.unique("movieId", movie_ids)
        genres, flags = csv_genres(movies)
        ratings.known("movieId", item_ids, movie_ids, movies.path)

        interactions = pd.DataFrame({"user_id": user_ids, "item_id": item_ids, "rating": stars.astype(np.float32),
                                     "timestamp": timestamps}, copy=False)
        users = pd.DataFrame({"user_id": np.sort(pd.unique(user_ids))})
        items = pd.DataFrame({"item_id": movie_ids, **genre_fields(flags, genres, genre_encoding),
                              "title": movies.frame["title"].to_numpy()})
        schema = [
            ColumnSchema("user_id", "user", "label", is_id=True),
            ColumnSchema("item_id", "item", "label", is_id=True),
            *genre_schema(genres, genre_encoding),
        ]
        return interactions, users, items, schema


class MovieLens20M(_MovieLensCsv):
    """MovieLens 20M: 20,000,263 ratings (0.5-5 stars) by 138,493 users of 27,278 movies; genres only."""

    name = "ml-20m"
    archive = Archive("ml-20m", "https://files.grouplens.org/datasets/movielens/ml-20m.zip",
                      "cd245b17a1ae2cc31bb14903e1204af3", "ratings.csv", expanded=876_000_000)


class MovieLens25M(_MovieLensCsv):
    """MovieLens 25M: 25,000,095 ratings (0.5-5 stars) by 162,541 users of 62,423 movies; genres only."""

    name = "ml-25m"
    archive = Archive("ml-25m", "https://files.grouplens.org/datasets/movielens/ml-25m.zip",
                      "6b51fb2759a8657d3bfcbfc42b592ada", "ratings.csv", expanded=1_157_000_000)
