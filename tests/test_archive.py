"""`bench archive`: the copy holds every finished run (per-user arrays included) and the studies, and can be
worked on like the original; bad input is refused before anything is written."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import optuna
from click.testing import CliRunner

from bench.cli import main
from bench.results.store import ResultStore


def _finished_run(store: ResultStore, model: str, seed: int) -> int:
    run_id = store.start_run(dataset="ml-100k", model=model, seed=seed, device="cpu", protocol="full",
                             ties="expected", num_negatives=None, config={"lr": 1e-3}, versions={}, git_commit=None)
    store.finish_run(run_id, metrics={"HR@10": 0.1 * seed}, history=[], timings={"train_s": 1.0},
                     users=np.arange(5), per_user={"HR@10": np.linspace(0, 1, 5) * seed})
    return run_id


def _study(results, trials: int) -> None:
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{results / 'optuna.db'}", direction="maximize",
                                load_if_exists=True)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=trials)


def _archive(results, output):
    return CliRunner().invoke(main, ["archive", "--results-dir", str(results), "--output", str(output)])


def test_the_copy_holds_runs_studies_and_params_and_can_be_worked_on(tmp_path):
    results, out = tmp_path / "results", tmp_path / "stores" / "lb"
    store = ResultStore(results)
    ids = [_finished_run(store, "deepfm", seed) for seed in (1, 2)]
    _study(results, 3)
    (results / "best_params").mkdir()
    (results / "best_params" / "ml-100k-deepfm.json").write_text(json.dumps({"params": {"lr": 0.01}}))

    res = _archive(results, out)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["bench.db", "best_params", "optuna.db"]  # no temporary left
    copied = ResultStore(out, readonly=True).runs()
    assert [r.id for r in copied] == ids
    assert np.allclose(copied[1].per_user["HR@10"], np.linspace(0, 1, 5) * 2)
    values = [t.values for t in optuna.load_study(study_name="s", storage=f"sqlite:///{out / 'optuna.db'}").trials]
    source = optuna.load_study(study_name="s", storage=f"sqlite:///{results / 'optuna.db'}")
    assert values == [t.values for t in source.trials]
    assert json.loads((out / "best_params" / "ml-100k-deepfm.json").read_text()) == {"params": {"lr": 0.01}}

    _study(out, 1)  # the copy resumes on its own: the original is untouched
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{out / 'optuna.db'}").trials) == 4
    assert len(source.trials) == 3

    later = _finished_run(store, "deepfm", 3)  # archiving again replaces the copy with the new state
    assert _archive(results, out).exit_code == 0
    assert [r.id for r in ResultStore(out, readonly=True).runs()] == ids + [later]


def test_a_write_in_progress_is_not_copied(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    store = ResultStore(results)
    first = _finished_run(store, "mf", 1)
    writer = sqlite3.connect(results / "bench.db")
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of recording a run
    writer.execute("UPDATE runs SET model = 'half-written' WHERE id = ?", (first,))
    try:
        assert _archive(results, out).exit_code == 0
    finally:
        writer.rollback()
        writer.close()
    assert [r.model for r in ResultStore(out, readonly=True).runs()] == ["mf"]


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    empty, out = tmp_path / "empty", tmp_path / "out"
    empty.mkdir()
    res = _archive(empty, out)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert str(empty) in res.output and "bench.db or optuna.db" in res.output
    assert not out.exists()

    results = tmp_path / "results"
    _finished_run(ResultStore(results), "mf", 1)
    res = _archive(results, results)
    assert res.exit_code == 2 and "the results folder itself" in res.output
    (tmp_path / "file").write_text("x")
    res = _archive(results, tmp_path / "file")
    assert res.exit_code == 2 and "is a file" in res.output
