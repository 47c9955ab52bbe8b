"""The results page's environment line: every run's commit, device and torch, never the first run's alone."""

import numpy as np
import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.results.pages import id_ranges
from bench.results.store import ResultStore


def _finished_run(store: ResultStore, model: str, seed: int, commit: str, torch: str) -> int:
    run_id = store.start_run(dataset="ml-100k", model=model, seed=seed, device="cpu", protocol="full",
                             ties="expected", num_negatives=None, config={}, versions={"torch": torch, "threads": 1},
                             git_commit=commit)
    store.finish_run(run_id, metrics={"HR@10": 0.1 * seed}, history=[], timings={"train_s": 1.0},
                     users=np.arange(5), per_user={"HR@10": np.linspace(0, 1, 5) * seed})
    return run_id


def test_id_ranges_join_consecutive_ids():
    assert id_ranges([9, 1, 3, 4, 5, 6]) == "1, 3-6, 9"


def test_the_page_names_each_commit_with_its_runs_and_a_shared_value_once(tmp_path):
    store = ResultStore(tmp_path)
    for seed, commit in ((1, "aaa"), (2, "aaa"), (3, "bbb-dirty")):
        _finished_run(store, "mostpop", seed, commit, "2.13.0+cpu")
    page = tmp_path / "page.md"
    res = CliRunner().invoke(main, ["report", "--results-dir", str(tmp_path), "--baseline", "mostpop",
                                    "--metrics", "HR@10", "--output", str(page)])
    assert res.exit_code == 0, res.output
    line = next(x for x in page.read_text().splitlines() if x.startswith("Recorded"))
    assert "commit `aaa` (runs 1-2), `bbb-dirty` (runs 3)" in line
    assert "torch `2.13.0+cpu`," in line and "device `cpu`," in line and "threads `1`," in line


def test_ids_take_ranges_and_the_page_shows_just_those_runs(tmp_path):
    store = ResultStore(tmp_path)
    for seed, commit in ((1, "aaa"), (2, "aaa"), (3, "bbb"), (4, "ccc")):
        _finished_run(store, "mostpop", seed, commit, "2.13.0+cpu")
    page = tmp_path / "page.md"
    res = CliRunner().invoke(main, ["report", "--results-dir", str(tmp_path), "--ids", "2-3", "--baseline", "mostpop",
                                    "--metrics", "HR@10", "--output", str(page)])
    assert res.exit_code == 0, res.output
    assert "commit `aaa` (runs 2), `bbb` (runs 3)." in page.read_text()
    assert "--ids 2-3 " in page.read_text()  # the command that made the page, ranges kept


@pytest.mark.parametrize("ids, message", [("3-1", "'3-1' is not a range of run ids"),
                                          ("1-2000000", "at most 1,000,000 ids"),
                                          ("1-2-3", "'1-2-3' is not a run id or a range"),
                                          ("0-4", "0 is not a run id"), ("-5", "-5 is not a run id")])
def test_ids_refuse_a_range_that_is_not_one_naming_it(tmp_path, ids, message):
    ResultStore(tmp_path)
    res = CliRunner().invoke(main, ["report", "--results-dir", str(tmp_path), "--ids", ids])
    assert res.exit_code == 2 and "--ids" in res.output and message in res.output, res.output
