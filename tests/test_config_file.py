"""Experiment files (issue 28): YAML in the structure the store records, under the command line's options, with
one-line errors naming the file, the line and the key; a stored run written back as a file runs again."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO, SYNTH

from bench.cli import main
from bench.config_file import ConfigFileError, load
from bench.results.store import ResultStore

FAST = ["--epochs", "1", "--batch-size", "512", "--no-progress"]
EXAMPLE = REPO / "examples" / "ml-100k-history.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_the_example_file_runs_with_command_line_overrides(tmp_path):
    res = CliRunner().invoke(main, ["run", "--config", str(EXAMPLE), *SYNTH, *FAST, "--seeds", "1",
                                    "--results-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    runs = {r.model: r for r in ResultStore(tmp_path).runs()}
    assert set(runs) == {"ease", "neumf", "deepfm+history"}  # the file's models
    deepfm = runs["deepfm+history"]
    assert deepfm.config["train"]["epochs"] == 1  # the command line's --epochs over the file's 30
    assert deepfm.config["train"]["patience"] == 10 and deepfm.config["eval"]["ks"] == [5, 10, 20]  # the file's
    assert deepfm.config["model"]["params"] == {"dropout": 0.2} and deepfm.config["data"]["history"] == 10
    assert runs["ease"].dataset.startswith("synthetic")  # --dataset over the file's ml-100k
    assert "| neumf" in res.stdout  # the file's baseline: the comparison is against neumf


def test_values_the_command_line_leaves_alone_come_from_the_file(tmp_path):
    path = write(tmp_path, "train: {epochs: 1, lr: 0.01}\nmodels: [fm]\nseeds: [4]\nbaseline: fm\n")
    res = CliRunner().invoke(main, ["run", "--config", str(path), *SYNTH, "--no-progress",
                                    "--results-dir", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    (run,) = ResultStore(tmp_path / "r").runs()
    assert (run.model, run.seed, run.config["train"]["lr"], run.config["train"]["epochs"]) == ("fm", 4, 0.01, 1)


@pytest.mark.parametrize("text, line, message", [
    ("trian: {epochs: 2}\n", 1, "unknown key 'trian' (did you mean 'train'?)"),
    ("train:\n  epochs: 2\n  lrr: 0.1\n", 3, "train.lrr: unknown key (did you mean 'lr'?)"),
    ("train:\n  epochs: many\n", 2, "train.epochs: expected an integer"),
    ("eval:\n  protocol: loo\n", 2, "eval.protocol 'loo': expected one of full, sampled"),
    ("models:\n  - fm\n  - {name: deepfm, dropuot: 0.1}\n", 3, "unknown key 'dropuot'"),
    ("models:\n  - nosuchmodel\n", 2, "unknown model 'nosuchmodel'"),
    ("seeds: [1, -2]\n", 1, "seeds: expected a list of integers >= 0"),
    ("data: [1, 2]\n", 1, "data must be a mapping"),
    ("train: {epochs: 2\n", 2, "not valid YAML"),
])
def test_a_bad_file_is_one_line_naming_file_line_and_key(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as caught:
        load(path)
    assert f"{path}: line {line}: " in str(caught.value) and message in str(caught.value)
    res = CliRunner().invoke(main, ["run", "--config", str(path), "--results-dir", str(tmp_path / "r")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and message in res.output
    assert not (tmp_path / "r").exists()


def test_only_safe_yaml_is_loaded(tmp_path):
    path = write(tmp_path, "train: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigFileError):
        load(path)
    assert not (Path.cwd() / "pwned").exists()


def test_a_stored_run_written_out_as_a_file_runs_again_the_same(tmp_path):
    first = CliRunner().invoke(main, ["run", "--models", "fm,deepfm+history", "--baseline", "fm", "--set",
                                      "deepfm+history.dropout=0.1", "--lr", "0.003", "--seeds", "2", *SYNTH, *FAST,
                                      "--results-dir", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    ids = ",".join(str(r.id) for r in ResultStore(tmp_path / "a").runs())
    out = CliRunner().invoke(main, ["report", "--results-dir", str(tmp_path / "a"), "--ids", ids, "--baseline", "fm",
                                    "--config-out", str(tmp_path / "exp.yaml")])
    assert out.exit_code == 0, out.output
    written = yaml.safe_load((tmp_path / "exp.yaml").read_text())
    assert written["train"]["lr"] == 0.003 and written["seeds"] == [2]
    again = CliRunner().invoke(main, ["run", "--config", str(tmp_path / "exp.yaml"), "--no-progress",
                                      "--results-dir", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    before = {r.model: r.metrics for r in ResultStore(tmp_path / "a").runs()}
    after = {r.model: r.metrics for r in ResultStore(tmp_path / "b").runs()}
    assert after == before  # the same experiment, run again: every metric identical
