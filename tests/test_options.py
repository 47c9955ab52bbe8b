"""Every data, training and evaluation option is declared once (`bench.config.option`): it appears in the
commands' --help, every way of setting it is checked, and it survives the store."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.config import DataConfig, EvalConfig, ExperimentConfig, ModelConfig, TrainConfig, options_of

CLASSES = (DataConfig, TrainConfig, EvalConfig)
DECLARED = [(cls, name, default, spec) for cls in CLASSES for name, default, spec in options_of(cls)]
CHECKED = [d for d in DECLARED if not d[3].path]  # a folder may be any text: it is checked where it is used
ON_THE_LINE = [d for d in CHECKED if d[3].kind not in (bool, dict)]  # a flag has no bad value; KEY=VALUE pairs
# are the plugin's to check (the sampler and dataset tests)


def ids(declared):
    return [f"{cls.__name__}.{name}" for cls, name, _, _ in declared]

NON_DEFAULT = {  # a valid value other than the default, for the round trip
    "dataset": "synthetic", "data_dir": "/data/here", "cache_dir": "/cache/here", "options": {"n_users": 50},
    "split": "global", "split_options": {"val": 0.7}, "threshold": 3.5, "min_interactions": 4, "history": 7,
    "history_encoder": "recency", "history_options": {"decay": 0.5}, "history_order": "shuffled", "epochs": 3,
    "batch_size": 64, "lr": 0.01, "weight_decay": 0.0, "patience": 2, "num_negatives": 2, "sampler": "popularity",
    "sampler_options": {"alpha": 0.5}, "val_metric": "HR@5", "smoothing": 0.5, "average": 2, "schedule": "cosine",
    "val_users": 100, "val_budget": 0.5, "optimizer": "lazy_adam", "loss": "sampled_softmax", "deterministic": True,
    "protocol": "sampled", "eval_negatives": 50, "ks": (1, 10), "ties": "pessimistic",
}


def _bad(name, spec):
    if spec.choices:
        return "no-such-choice"
    if spec.kind in (int, float):
        return (spec.low - 1) if spec.low is not None else "many"
    return {bool: "maybe", dict: 5, tuple: (0,), str: 5}[spec.kind]


def test_every_declared_option_has_a_non_default_value_here():
    assert {name for _, name, _, _ in DECLARED} == set(NON_DEFAULT)


@pytest.mark.parametrize("command", ["run", "tune"])
def test_every_declared_option_appears_in_help_with_its_help_text(command):
    res = CliRunner().invoke(main, [command, "--help"], terminal_width=400)
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for _, name, _, spec in DECLARED:
        assert f"--{spec.flag_name(name)}" in res.output, name
        assert " ".join(spec.help.split())[:40] in text, name


@pytest.mark.parametrize("cls, name, default, spec", CHECKED, ids=ids(CHECKED))
def test_every_declared_option_refuses_a_bad_value_naming_its_flag(cls, name, default, spec):
    with pytest.raises(ValueError, match=f"--{spec.flag_name(name)}"):
        cls(**{name: _bad(name, spec)})


@pytest.mark.parametrize("cls, name, default, spec", ON_THE_LINE, ids=ids(ON_THE_LINE))
def test_every_declared_option_refuses_a_bad_value_from_the_command_line(tmp_path, cls, name, default, spec):
    value = ",".join(map(str, _bad(name, spec))) if spec.kind is tuple else str(_bad(name, spec))
    res = CliRunner().invoke(main, ["run", "--models", "mostpop", f"--{spec.flag_name(name)}", value,
                                    "--results-dir", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert f"--{spec.flag_name(name)}" in res.output and not (tmp_path / "bench.db").exists()


def test_every_declared_option_round_trips_through_the_stored_record():
    data = DataConfig(**{n: NON_DEFAULT[n] for n, _, _ in options_of(DataConfig)})
    train = TrainConfig(**{n: NON_DEFAULT[n] for n, _, _ in options_of(TrainConfig)})
    evaluation = EvalConfig(**{n: NON_DEFAULT[n] for n, _, _ in options_of(EvalConfig)})
    model = ModelConfig("fm", embed_dim=8)
    config = ExperimentConfig(data=data, train=train, eval=evaluation, models=(model,), seeds=(5,))
    record = json.loads(json.dumps(config.run_record(model, 5), default=str))  # as the store keeps it
    again = ExperimentConfig.from_record(record)
    assert again.data == data and again.eval == evaluation and again.train == train and again.seeds == (5,)
    for _, name, default, _ in DECLARED:
        assert NON_DEFAULT[name] != default, name  # the round trip really carried a value of its own
