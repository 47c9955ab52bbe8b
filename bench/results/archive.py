"""A committable copy of a results folder: the run store, the study store and the best params.

The stores are SQLite files that runs and studies keep writing; a plain file copy taken meanwhile can be torn.
SQLite's online backup copies a consistent state, so a leaderboard still being extended can be archived
beside the pages it produced, and `bench report` / `bench tune` work on the copy as on the original.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

from bench.results.store import DB_NAME, STUDY_DB, _file_mode, _read_only_uri, write_atomic

STORES = (DB_NAME, STUDY_DB)


def _backup(source: Path, target: Path) -> None:
    """Copy one SQLite database consistently (retrying while a writer holds it), then swap it in atomically."""
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        src = sqlite3.connect(_read_only_uri(source), uri=True, timeout=60)
        dst = sqlite3.connect(temp)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, whatever the source's mode
        finally:
            dst.close()
            src.close()
        os.chmod(temp, _file_mode(target))
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def archive(results_dir: str | Path, output: str | Path) -> list[Path]:
    """Copy the stores found in `results_dir` (and its best_params/*.json) into `output`; return what was written."""
    source, output = Path(results_dir), Path(output)
    stores = [source / name for name in STORES if (source / name).is_file()]
    if not stores:
        raise ValueError(f"{source}: no {' or '.join(STORES)} to archive (expected a --results-dir that "
                         "bench run or bench tune wrote)")
    if output.resolve() == source.resolve():
        raise ValueError(f"--output {output}: is the results folder itself; expected another folder")
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output}: is a file; expected a folder")
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for store in stores:
        _backup(store, output / store.name)
        written.append(output / store.name)
    for params in sorted((source / "best_params").glob("*.json")):
        written.append(write_atomic(output / "best_params" / params.name, params.read_bytes()))
    return written
