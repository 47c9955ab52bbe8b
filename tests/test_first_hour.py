"""Issue 18: what a new user meets first: an offline suite, signs of life in a log, tables that fit a
terminal, commands recorded as a reader can re-type them."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import SYNTH, require_ml100k

from bench.cli import main

FAST = ["--epochs", "2", "--batch-size", "512", "--fm-dim", "8"]


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_real_data_tests_skip_naming_bench_data_dir_and_fail_under_ci(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))  # an empty cache
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="set BENCH_DATA_DIR to a folder holding u.data"):
        require_ml100k()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the real-data tests"):
        require_ml100k()
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "u.data").write_text("1\t1\t5\t881250949\n")
    assert require_ml100k() == tmp_path / "ml-100k"  # the download cache counts


def test_piped_output_gets_a_line_per_epoch_and_no_progress_silences_it(tmp_path):
    res = invoke("run", "--models", "fm", *SYNTH, *FAST, "--results-dir", str(tmp_path))
    lines = [line for line in res.stderr.splitlines() if " epoch " in line]
    assert len(lines) == 2 and lines[0].startswith("fm seed 1 epoch 1: loss ")
    assert "val NDCG@10 " in lines[0] and lines[0].endswith(" s")
    quiet = invoke("run", "--models", "fm", *SYNTH, *FAST, "--no-progress", "--results-dir", str(tmp_path))
    assert " epoch " not in quiet.stderr and "fm seed 1: done" in quiet.stderr


def test_the_default_tables_fit_a_terminal_and_metrics_asks_for_more(tmp_path):
    res = invoke("run", "--models", "fm,neumf", *SYNTH, *FAST, "--no-progress", "--results-dir", str(tmp_path))
    assert res.exit_code == 0
    width = max(len(line) for line in res.stdout.splitlines())
    assert width <= 120, res.stdout
    header = res.stdout.splitlines()[0]
    assert "HR@10" in header and "NDCG@10" in header and "MRR" in header
    tables = "\n".join(line for line in res.stdout.splitlines() if line.startswith("|"))
    assert "Recall" not in tables and "HR@5" not in header  # Recall@K is HR@K under leave-one-out
    assert "± 0.0000" not in res.stdout  # one seed: no std to show, an interval over users instead
    more = invoke("report", "--results-dir", str(tmp_path), "--metrics", "HR@20,MAP@10")
    assert "HR@20" in more.stdout.splitlines()[0] and "MAP@10" in more.stdout and "NDCG@10" not in more.stdout
    every = invoke("report", "--results-dir", str(tmp_path), "--metrics", "all")
    table = "\n".join(line for line in every.stdout.splitlines() if line.startswith("|"))
    assert "MAP@20" in table and "Recall" not in table
    asked = invoke("report", "--results-dir", str(tmp_path), "--metrics", "Recall@10")
    assert "Recall@10" in asked.stdout
    bad = invoke("report", "--results-dir", str(tmp_path), "--metrics", "AUC")
    assert bad.exit_code == 2 and "--metrics AUC: not among the computed metrics" in bad.output
    rows = json.loads(invoke("report", "--results-dir", str(tmp_path), "--format", "json").stdout)
    assert {"Recall@10", "MAP@20", "HR@5"} <= set(rows[0])  # json carries every metric
    csv = invoke("report", "--results-dir", str(tmp_path), "--format", "csv").stdout
    assert "Recall@10 mean" in csv.splitlines()[0]


def test_every_cell_carries_an_interval_over_users_and_seeds(tmp_path):
    res = invoke("run", "--models", "fm", "--seeds", "1,2", *SYNTH, *FAST, "--no-progress", "--results-dir",
                 str(tmp_path))
    row = next(line for line in res.stdout.splitlines() if line.startswith("| fm "))
    low, high = (float(x) for x in row.split("[")[1].split("]")[0].split(","))
    mean = float(row.split("|")[2].split("[")[0])
    assert low < mean < high and "2 seed(s)" in res.stdout


def test_bench_data_prints_each_figure_once(tmp_path):
    res = invoke("data", *SYNTH)
    assert res.exit_code == 0
    labels = [line.split("|")[1].strip() for line in res.stdout.splitlines()[2:]]
    assert len(labels) == len(set(labels)) and "users (with a positive)" in labels
    assert "n_users |" not in res.stdout and "n_items |" not in res.stdout


def test_a_page_records_the_command_as_a_reader_would_type_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path.parent / "elsewhere-data"
    res = invoke("run", "--models", "mostpop", *SYNTH, "--no-progress", "--data-dir", str(data),
                 "--results-dir", str(tmp_path / "r"), "--output", str(tmp_path / "r" / "page.md"))
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r" / "page.md").read_text()
    assert "--results-dir r " in page and "--output r/page.md " in page
    assert str(data) not in page and "--data-dir" not in page and str(tmp_path) not in page


def test_seeds_and_format_say_what_they_take():
    text = invoke("run", "--help").output
    assert "comma list of seeds" in text and "[default: 1]" in text
    assert "[default: github]" in text


def test_an_offline_download_says_how_to_point_at_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    res = invoke("data", "--dataset", "ml-1m", "--cache-dir", str(tmp_path / "cache"), "--dataset-opt",
                 f"url=file://{tmp_path / 'nowhere.zip'}")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "--data-dir FOLDER" in res.output and "BENCH_DATA_DIR" in res.output
