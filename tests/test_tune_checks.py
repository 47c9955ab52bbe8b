"""`bench tune`: --storage is checked before any data loads or trial runs; the best-params file stays inside
--results-dir whatever the dataset options."""

from __future__ import annotations

import json
import sys

import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from conftest import SYNTH_OPTS, tune_config

import bench.runner as runner_mod
from bench.cli import main
from bench.config import DataConfig, ExperimentConfig, ModelConfig
from bench.tune.best import best_params_path, load_best_params, save_best
from bench.tune.storage import check_url
from bench.tune.study import TuneConfig, tune


def config(tmp_path, **kw) -> TuneConfig:
    return tune_config(tmp_path / "results", **{"trials": 1, **kw})


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "corrupt.db").write_bytes(b"this is not a SQLite database, just some bytes" * 40)
    (tmp_path / "folder.db").mkdir()
    return tmp_path


@pytest.mark.parametrize("url, expected", [
    ("not a url", "--storage 'not a url': not a storage URL (expected a database URL such as sqlite:///"),
    ("optuna.db", "--storage 'optuna.db': not a storage URL"),
    ("foo://x", "--storage foo://x: unknown database 'foo' (expected a database URL"),
    ("sqlite:////nope/dir/x.db", "--storage sqlite:////nope/dir/x.db: folder /nope/dir does not exist "
                                 "(expected a SQLite file in an existing folder)"),
    ("sqlite://", "--storage sqlite://: an in-memory SQLite database is private to one process"),
    ("sqlite:///{tmp}/corrupt.db", "--storage sqlite:///{tmp}/corrupt.db: {tmp}/corrupt.db is not a usable SQLite "
                                   "database (file is not a database)"),
    ("sqlite:///{tmp}/folder.db", "{tmp}/folder.db is a folder, not a SQLite file"),
    ("/nope/dir/study.journal", "--storage /nope/dir/study.journal: folder /nope/dir does not exist (expected a "
                                "journal file in an existing folder)"),
    ("mysql://me:s3cret@db/optuna", "--storage mysql://me:***@db/optuna: the mysql driver mysqldb is not installed"),
])
def test_bad_storage_is_one_line_naming_the_option_and_what_was_expected(bad_files, url, expected):
    url, expected = url.format(tmp=bad_files), expected.format(tmp=bad_files)
    with pytest.raises(ValueError) as err:
        check_url(url)
    message = str(err.value)
    assert expected in message and "\n" not in message and "s3cret" not in message


def test_postgres_without_its_driver_names_the_extra_at_once(monkeypatch):
    """Was ~15 s of retries, then a traceback ("Failed to import DB access module")."""
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the postgres extra were not installed
    with pytest.raises(ValueError) as err:
        check_url("postgresql://me:s3cret@db.example/optuna")
    message = str(err.value)
    assert message.startswith("--storage postgresql://me:***@db.example/optuna: the postgresql driver psycopg is "
                              'not installed: pip install "deepfm-bench[postgres]"')
    assert "s3cret" not in message
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(ValueError, match=r'psycopg2.*or use postgresql:// with pip install "deepfm-bench\[postgres'):
        check_url("postgresql+psycopg2://db/optuna")


@pytest.mark.parametrize("url", [None, "sqlite:///{tmp}/new.db", "{tmp}/study.journal", "{tmp}/study.log"])
def test_good_storage_passes(tmp_path, url):
    check_url(url.format(tmp=tmp_path) if url else None)
    sqlite_url = f"sqlite:///{tmp_path / 'made.db'}"
    optuna.create_study(storage=sqlite_url, study_name="s")  # an existing Optuna database passes too
    check_url(sqlite_url)


def test_tune_checks_storage_before_loading_data_or_creating_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_mod, "load_frames", lambda *a, **k: pytest.fail("data loaded before the check"))
    with pytest.raises(ValueError, match="unknown database 'foo'"):
        tune(config(tmp_path, storage="foo://x"))
    with pytest.raises(ValueError, match="folder /nope/dir does not exist"):
        tune(config(tmp_path, storage="sqlite:////nope/dir/x.db"))
    assert not list(tmp_path.iterdir())


def test_cli_corrupt_default_study_database_is_one_line_naming_it(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "optuna.db").write_bytes(b"garbage" * 200)
    res = CliRunner().invoke(main, ["tune", "--models", "fm", "--trials", "1", "--dataset", "synthetic",
                                    "--no-progress", "--threads", "1", "--results-dir", str(results)])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert f"{results / 'optuna.db'} is not a usable SQLite database (file is not a database)" in res.output
    bad = CliRunner().invoke(main, ["tune", "--models", "fm", "--trials", "1", "--dataset", "synthetic",
                                    "--storage", "not a url", "--results-dir", str(results)])
    assert bad.exit_code != 0 and "--storage 'not a url': not a storage URL" in bad.output
    assert "Traceback" not in bad.output


# ---- the best-params file ----

def test_best_params_file_name_is_safe_and_inside_the_results_dir(tmp_path):
    results = tmp_path / "a" / "results"
    folder = (results / "best_params").resolve()
    escaping = DataConfig(dataset="csv", options={"interactions": "../../x.csv"})
    path = best_params_path(results, escaping, "fm")
    assert path.resolve().parent == folder and "/" not in path.name and path.name.endswith("-fm.json")
    # names stay distinct where labels differ only in the characters replaced, and a long label is shortened
    other = DataConfig(dataset="csv", options={"interactions": ".._.._x.csv"})
    assert best_params_path(results, other, "fm") != path
    long = DataConfig(dataset="csv", options={"interactions": "/very/" + "deep/" * 100 + "x.csv"})
    assert len(best_params_path(results, long, "fm").name) < 200
    assert best_params_path(results, DataConfig(dataset="csv", options={"interactions": ".."}), "../m").resolve() \
        .parent == folder
    # a label that is already a safe file name keeps the name it had
    plain = DataConfig(dataset="synthetic", options=SYNTH_OPTS)
    assert best_params_path(results, plain, "fm").name == f"{plain.label()}-fm.json"


def test_tune_on_csv_with_a_relative_path_writes_best_params_inside_and_run_finds_them(tmp_path, monkeypatch):
    """The issue's case: --dataset-opt interactions=../../x.csv wrote the file outside --results-dir."""
    rng = np.random.default_rng(0)
    pairs = rng.choice(60 * 90, size=3000, replace=False)
    rows = "\n".join(f"u{p // 90},i{p % 90},{t}" for t, p in enumerate(pairs))
    (tmp_path / "x.csv").write_text("user_id,item_id,timestamp\n" + rows + "\n")
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    opts = ["--dataset", "csv", "--data-dir", str(cwd), "--dataset-opt", "interactions=../../x.csv",
            "--dataset-opt", "timestamp_col=timestamp", "--threshold", "1"]  # the path is relative to --data-dir
    res = CliRunner().invoke(main, ["tune", "--models", "fm", "--trials", "1", *opts, "--epochs", "1",
                                    "--no-progress", "--threads", "1", "--results-dir", "r"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    written = [p for p in tmp_path.rglob("*.json")]
    assert len(written) == 1 and written[0].parent == cwd / "r" / "best_params", written
    data = DataConfig(dataset="csv", options={"interactions": "../../x.csv", "timestamp_col": "timestamp"},
                      threshold=1.0)
    params = load_best_params("best", "r", data, ("fm",))
    assert params["fm"][0] == "fm" and json.loads(written[0].read_text())["dataset"] == data.label()


def test_save_best_and_load_best_params_agree_on_the_new_name(tmp_path):
    data = DataConfig(dataset="csv", options={"interactions": "../../x.csv"})
    cfg = config(tmp_path, experiment=ExperimentConfig(data=data, models=(ModelConfig("fm"),)))
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.3, user_attrs={"run_params": json.dumps({"lr": 0.01}),
                                                                     "registry_model": "fm"}))
    path = save_best(study, cfg)
    assert path.resolve().parent == (tmp_path / "results" / "best_params").resolve()
    assert load_best_params("best", cfg.results_dir, cfg.experiment.data, ("fm",))["fm"][1]["lr"] == 0.01
