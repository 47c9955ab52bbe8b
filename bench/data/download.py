"""Where a dataset's files come from: a local folder, or the official archive downloaded once and verified.

Resolution order: explicit `data_dir` > env `BENCH_DATA_DIR` > the cache (`cache_dir`, env
`BENCH_CACHE_DIR`, or ~/.cache/deepfm-bench), downloading there when allowed. A download goes to a temp
file in the cache, is checked against the archive's MD5, extracted to a temp folder and only then renamed
into place, so an interrupted or corrupt download never leaves anything a later run would trust.

Extraction is bounded (a `url` / `md5` option can point at any archive): the members' declared sizes must
sum to at most `GROWTH` times the dataset's known extracted size, no member may expand more than
`MAX_RATIO` times, both checked before anything is written, and the bytes are counted while extracting, so
a member that holds more than it declares is refused too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from bench.data.readers import DataFormatError, human_bytes

DATA_DIR_ENV = "BENCH_DATA_DIR"
CACHE_DIR_ENV = "BENCH_CACHE_DIR"
DEFAULT_CACHE = Path("~/.cache/deepfm-bench")
CHECKSUMS = "MD5SUMS"
GROWTH = 4  # an archive may extract to at most this many times its dataset's known size
UNKNOWN_SIZE_CAP = 16 << 30  # what an archive whose extracted size is not known may extract to
MAX_RATIO = 100  # the MovieLens archives expand 3-5 times in all; a member claiming more than this is refused
RATIO_FROM = 1 << 20  # members smaller than this are not judged by their ratio
_BLOCK = 1 << 20


class ChecksumError(DataFormatError):
    """A file or archive does not have the MD5 it should."""


@dataclass(frozen=True)
class Archive:
    """An official dataset archive: `folder` is its top-level directory, `marker` a file inside it,
    `expanded` about how many bytes the official archive extracts to (0: not known)."""

    folder: str
    url: str
    md5: str
    marker: str
    expanded: int = 0

    @property
    def size_cap(self) -> int:
        """The most its members may extract to, in bytes."""
        return GROWTH * self.expanded if self.expanded else UNKNOWN_SIZE_CAP


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # the published sums are MD5
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_root(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE).expanduser()


def locate(archive: Archive, data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
           download: bool = True) -> Path:
    """The folder holding the dataset's files, verified against its MD5SUMS when it has one."""
    if data_dir is not None:
        folder = _dataset_folder(Path(data_dir).expanduser(), archive)
        if folder is None:
            raise FileNotFoundError(f"data_dir {data_dir} holds neither {archive.marker} nor "
                                    f"{archive.folder}/{archive.marker}")
        return verify_checksums(folder)
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        folder = _dataset_folder(Path(env).expanduser(), archive)
        if folder is not None:
            return verify_checksums(folder)
    cached = cache_root(cache_dir) / archive.folder
    if (cached / archive.marker).is_file():
        return verify_checksums(cached)
    if not download:
        looked = f"{DATA_DIR_ENV}={env} and " if env else ""
        raise FileNotFoundError(
            f"{archive.folder} not found (looked in {looked}{cached}) and download=False. Get {archive.url}, "
            f"unzip it and pass --data-dir FOLDER (data_dir= in Python) or set {DATA_DIR_ENV}, or allow the download"
        )
    return fetch(archive, cache_root(cache_dir))


def _dataset_folder(path: Path, archive: Archive) -> Path | None:
    """`path` itself when it is the dataset folder, or its `archive.folder` child."""
    for candidate in (path, path / archive.folder):
        if (candidate / archive.marker).is_file():
            return candidate
    return None


def verify_checksums(folder: Path) -> Path:
    """Check every file listed in `folder/MD5SUMS` (md5sum format); a mismatch or missing file raises."""
    sums = folder / CHECKSUMS
    if not sums.is_file():
        return folder
    for number, line in enumerate(sums.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        expected, _, name = line.strip().partition(" ")
        name = name.strip().lstrip("*")
        if len(expected) != 32 or not name:
            raise DataFormatError(f"{sums}: line {number}: expected '<md5>  <file name>', got {line!r}")
        if _leaves_folder(name):
            raise DataFormatError(f"{sums}: line {number}: names {name!r}, which is outside {folder}; "
                                  f"{CHECKSUMS} may list only files inside the dataset folder")
        target = folder / name
        if not target.is_file():
            raise ChecksumError(f"{sums}: line {number}: lists {name}, which is missing from {folder}")
        actual = md5_of(target)
        if actual != expected.lower():
            raise ChecksumError(f"{target}: MD5 is {actual}, but {sums} line {number} expects {expected}; "
                                "the file is corrupt or was modified")
    return folder


def _leaves_folder(name: str) -> bool:
    """An MD5SUMS entry that is absolute or climbs out with '..' (as POSIX or Windows would read it).

    Judged on the name alone, so a dataset file that is a symbolic link to elsewhere is still fine.
    """
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    return (posix.is_absolute() or bool(windows.drive or windows.root)
            or ".." in posix.parts or ".." in windows.parts)


def fetch(archive: Archive, root: Path) -> Path:
    """Download, verify, extract and atomically install `archive` under `root`; returns its folder."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / archive.folder
    if final.exists():
        raise FileExistsError(f"{final} exists but has no {archive.marker} (not a complete {archive.folder}); "
                              "remove it and load again")
    fd, part_name = tempfile.mkstemp(dir=root, prefix=f".{archive.folder}-", suffix=".zip.part")
    os.close(fd)
    part = Path(part_name)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{archive.folder}-extract-"))
    try:
        actual = _download(archive.url, part)
        if actual != archive.md5:
            raise ChecksumError(f"{archive.url}: downloaded archive has MD5 {actual}, expected {archive.md5}; "
                                "nothing was cached (retry, or check the URL)")
        folder = _extract(part, staging, archive)
        _write_checksums(folder)
        try:
            os.replace(folder, final)
        except OSError:
            if not (final / archive.marker).is_file():  # not another process winning the same race
                raise
        return verify_checksums(final)
    finally:
        part.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)


def _download(url: str, dest: Path) -> str:
    """Stream `url` into `dest`, returning the MD5 of what arrived."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"could not download {url}: {exc}; download it by hand, unzip it and pass "
                              f"--data-dir FOLDER (data_dir= in Python) or set {DATA_DIR_ENV}") from exc
    return digest.hexdigest()


def _extract(zip_path: Path, staging: Path, archive: Archive) -> Path:
    """Unzip into `staging` (refusing paths that escape it, and sizes beyond the archive's caps, before
    anything is written); returns the folder holding the marker."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            for info in members:
                target = (staging / info.filename).resolve()
                if not target.is_relative_to(staging.resolve()):
                    raise DataFormatError(f"{zip_path}: member {info.filename!r} would extract outside the "
                                          "cache folder")
            _check_sizes(archive, members)
            room = archive.size_cap
            for info in members:
                room -= _extract_member(zf, info, staging, archive, room)
    except zipfile.BadZipFile as exc:
        raise DataFormatError(f"{archive.url}: not a readable zip archive ({exc}); nothing was cached") from None
    folder = _dataset_folder(staging, archive)
    if folder is None:
        raise DataFormatError(f"{archive.url}: archive has no {archive.folder}/{archive.marker}")
    return folder


def _check_sizes(archive: Archive, members: list[zipfile.ZipInfo]) -> None:
    """Refuse, from the sizes the archive declares, one that would extract to more than its cap or holds a
    member expanding more than MAX_RATIO times (a zip bomb), naming the archive, the member and the figures."""
    for info in members:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= RATIO_FROM and ratio > MAX_RATIO:
            raise DataFormatError(
                f"{archive.url}: member {info.filename!r} would expand {ratio:,.0f} times "
                f"({human_bytes(info.compress_size)} to {human_bytes(info.file_size)}), more than the "
                f"{MAX_RATIO} times a dataset file may; refused as a likely zip bomb, nothing was extracted")
    total = sum(info.file_size for info in members)
    if total > archive.size_cap:
        largest = max(members, key=lambda info: info.file_size)
        known = (f"{GROWTH} times the {human_bytes(archive.expanded)} {archive.folder} extracts to" if archive.expanded
                 else "the limit for an archive of unknown size")
        raise DataFormatError(
            f"{archive.url}: would extract to {human_bytes(total)} ({len(members)} members, the largest "
            f"{largest.filename!r} {human_bytes(largest.file_size)}), more than the {human_bytes(archive.size_cap)} "
            f"allowed ({known}); nothing was extracted")


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, staging: Path, archive: Archive, room: int) -> int:
    """Write one member, counting its bytes: more than it declares, or than `room` is left of the archive's
    cap, is refused; a damaged member is a DataFormatError naming it. Returns the bytes written."""
    target = staging / info.filename
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with zf.open(info) as source, open(target, "wb") as out:
            while block := source.read(_BLOCK):
                written += len(block)
                if written > info.file_size or written > room:
                    raise DataFormatError(
                        f"{archive.url}: member {info.filename!r} holds more than the "
                        f"{human_bytes(min(info.file_size, room))} it declares or the archive's cap allows; "
                        "nothing was cached")
                out.write(block)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise DataFormatError(f"{archive.url}: member {info.filename!r} is damaged or unreadable ({exc}); "
                              "nothing was cached") from None
    return written


def _write_checksums(folder: Path) -> None:
    """Record what was verified, so later loads from the cache detect a file changed since."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    lines = [f"{md5_of(p)}  {p.relative_to(folder).as_posix()}" for p in files]
    (folder / CHECKSUMS).write_text("\n".join(lines) + "\n")
