"""Small files in the genuine MovieLens formats, for tests anywhere in the suite.

`write_ml100k(dir)` / `write_ml1m(dir)` write a complete, valid dataset folder (tabs, pipes, '::', latin-1
titles with non-ASCII characters and commas) and return it; `write_ml20m(dir)` writes the ML-20M / ML-25M
format (ratings.csv and movies.csv with headers, half-star ratings, UTF-8 titles quoted when they hold a
comma or a quote, movie ids with gaps, "(no genres listed)", movies nobody rated). Tests corrupt a copy to
check the errors. Every user rates at least `MIN_PER_USER` items, so leave-one-out splits have something
to hold out.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
ML1M_GENRES = ML100K_GENRES[1:]
OCCUPATIONS = ("administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
               "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
               "retired", "salesman", "scientist", "student", "technician", "writer")
TITLES = np.array(["Café Olé (1995)", "Misérables, Les (1995)", "Toy Story (1995)", "Señor Cortés (1997)",
                   "Heat (1995)", 'Shawshank "Redemption", The (1994)', "Zoë & Ünal (1998)"], dtype=object)
ML20M_GENRES = ("Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
                "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                "War", "Western")  # as the 20M / 25M files spell them; "(no genres listed)" besides
NO_GENRES = "(no genres listed)"
MIN_PER_USER = 3
FIRST_TIMESTAMP = 874_724_710


def ratings(n_users: int, n_items: int, n_ratings: int, seed: int) -> pd.DataFrame:
    """Distinct (user, item) pairs, >= MIN_PER_USER per user, in shuffled file order, ids from 1."""
    if not MIN_PER_USER * n_users <= n_ratings <= n_users * n_items:
        raise ValueError(f"n_ratings must be within {MIN_PER_USER * n_users}..{n_users * n_items}")
    rng = np.random.default_rng(seed)
    rank = np.argsort(rng.random((n_users, n_items)), axis=1)  # a random item order per user
    first = np.zeros((n_users, n_items), dtype=bool)
    np.put_along_axis(first, rank[:, :MIN_PER_USER], True, axis=1)
    rest = rng.permutation(np.flatnonzero(~first.ravel()))[: n_ratings - first.sum()]
    cells = rng.permutation(np.concatenate([np.flatnonzero(first.ravel()), rest]))
    users, items = np.divmod(cells, n_items)
    return pd.DataFrame({
        "user": users + 1,
        "item": items + 1,
        "rating": rng.integers(1, 6, len(cells)),
        "timestamp": FIRST_TIMESTAMP + rng.integers(0, 10_000_000, len(cells)),
    })


def genre_flags(rng: np.random.Generator, n_items: int, n_genres: int) -> np.ndarray:
    """(n_items, n_genres) 0/1 with 1-3 genres per item."""
    k = rng.integers(1, 4, n_items)
    rank = np.argsort(np.argsort(rng.random((n_items, n_genres)), axis=1), axis=1)
    return (rank < k[:, None]).astype(np.int64)


def join(columns: list, sep: str) -> str:
    """Rows of the given columns joined by `sep`, one line each (column by column, no per-row loop)."""
    line = pd.Series(columns[0]).astype(str)
    for column in columns[1:]:
        line = line + sep + pd.Series(column).astype(str).to_numpy()
    return "\n".join(line) + "\n"


def write_ml100k(folder: str | Path, n_users: int = 30, n_items: int = 40, n_ratings: int = 400,
                 seed: int = 0) -> Path:
    """u.data, u.user, u.item (latin-1), u.genre, u.occupation in the ML-100K formats."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    r = ratings(n_users, n_items, n_ratings, seed)
    (folder / "u.data").write_text(join([r.user, r.item, r.rating, r.timestamp], "\t"))
    ids = np.arange(1, n_users + 1)
    zips = np.where(ids % 7 == 0, "T8H1N", rng.integers(10_000, 99_999, n_users).astype(str))
    (folder / "u.user").write_text(join([ids, rng.integers(7, 74, n_users), rng.choice(["M", "F"], n_users),
                                         rng.choice(OCCUPATIONS, n_users), zips], "|"))
    items = np.arange(1, n_items + 1)
    flags = genre_flags(rng, n_items, len(ML100K_GENRES))
    titles = TITLES[(items - 1) % len(TITLES)]
    urls = "http://us.imdb.com/M/title-exact?" + pd.Series(titles).str.replace(" ", "%20").to_numpy()
    columns = [items, titles, np.full(n_items, "01-Jan-1995"), np.full(n_items, ""), urls, *flags.T]
    (folder / "u.item").write_bytes(join(columns, "|").encode("latin-1"))
    (folder / "u.genre").write_text(join([list(ML100K_GENRES), range(len(ML100K_GENRES))], "|") + "\n")
    (folder / "u.occupation").write_text("\n".join(OCCUPATIONS) + "\n")
    return folder


def write_ml1m(folder: str | Path, n_users: int = 30, n_items: int = 40, n_ratings: int = 400,
               seed: int = 0) -> Path:
    """ratings.dat, users.dat, movies.dat ('::', latin-1) in the ML-1M formats."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    r = ratings(n_users, n_items, n_ratings, seed)
    (folder / "ratings.dat").write_text(join([r.user, r.item, r.rating, r.timestamp], "::"))
    ids = np.arange(1, n_users + 1)
    zips = np.where(ids % 5 == 0, "55117-1234", rng.integers(10_000, 99_999, n_users).astype(str))
    (folder / "users.dat").write_text(join([ids, rng.choice(["M", "F"], n_users),
                                            rng.choice([1, 18, 25, 35, 45, 50, 56], n_users),
                                            rng.integers(0, 21, n_users), zips], "::"))
    flags = genre_flags(rng, n_items, len(ML1M_GENRES)).astype(bool)
    names = np.array(ML1M_GENRES, dtype=object)
    genres = pd.Series([""] * n_items, dtype=object)
    for j in range(len(ML1M_GENRES)):
        genres = genres + np.where(flags[:, j], names[j] + "|", "")
    items = np.arange(1, n_items + 1)
    columns = [items, TITLES[(items - 1) % len(TITLES)], genres.str.removesuffix("|")]
    (folder / "movies.dat").write_bytes(join(columns, "::").encode("latin-1"))
    return folder


def csv_field(values) -> np.ndarray:
    """Values as a CSV writer writes them: quoted (inner quotes doubled) when they hold a comma or a quote."""
    text = pd.Series(values, dtype=object).astype(str)
    quoted = '"' + text.str.replace('"', '""', regex=False) + '"'
    return np.where(text.str.contains('[,"]', regex=True), quoted, text)


def write_ml20m(folder: str | Path, n_users: int = 30, n_items: int = 40, n_ratings: int = 400,
                seed: int = 0) -> Path:
    """ratings.csv and movies.csv (UTF-8, headers) in the ML-20M / ML-25M formats.

    Ratings are half stars written as the official files write them ("3.5", "4.0"), sorted by user then
    movie; movie ids have gaps; every 9th movie has "(no genres listed)"; the last 5 movies are unrated.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    n_movies = n_items + 5
    movie_ids = np.sort(rng.choice(np.arange(1, 20 * n_movies), n_movies, replace=False))
    r = ratings(n_users, n_items, n_ratings, seed).sort_values(["user", "item"])
    stars = pd.Series(rng.integers(1, 11, len(r)) / 2).map("{:.1f}".format)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" +
                                        join([r.user, movie_ids[r.item - 1], stars, r.timestamp], ","))
    flags = genre_flags(rng, n_movies, len(ML20M_GENRES)).astype(bool)
    names = np.array(ML20M_GENRES, dtype=object)
    genres = pd.Series([""] * n_movies, dtype=object)
    for j in range(len(ML20M_GENRES)):
        genres = genres + np.where(flags[:, j], names[j] + "|", "")
    genres = genres.str.removesuffix("|").where(np.arange(n_movies) % 9 != 4, NO_GENRES)
    titles = csv_field(TITLES[np.arange(n_movies) % len(TITLES)])
    (folder / "movies.csv").write_bytes(("movieId,title,genres\n" + join([movie_ids, titles, genres], ","))
                                        .encode("utf-8"))
    return folder


def write_md5sums(folder: str | Path) -> Path:
    """An MD5SUMS file (md5sum format) listing every file in `folder`, as in the shared ML-100K copy."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != "MD5SUMS")
    lines = [f"{hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest()}  {p.name}" for p in files]
    (folder / "MD5SUMS").write_text("\n".join(lines) + "\n")
    return folder


def zip_dataset(folder: str | Path, zip_path: str | Path, arcname: str) -> tuple[Path, str]:
    """Zip `folder` as `arcname/<files>` (the official archives' layout); returns the zip and its MD5."""
    folder, zip_path = Path(folder), Path(zip_path)
    with zipfile.ZipFile(zip_path, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"{arcname}/{path.name}")
    return zip_path, hashlib.md5(zip_path.read_bytes(), usedforsecurity=False).hexdigest()
