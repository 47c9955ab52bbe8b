"""Issue 23, `bench run`: a sampler's contract enforced every epoch, the split and the device checked once before
any work, history windows bounded by the data, tuned-params files checked, honest --rerun comparisons, Ctrl-C
while data loads, and a one-line refusal when memory is too short to start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import SYNTH

import registry
from bench.cli import main
from bench.data.base import TrainSamples
from bench.data.pipeline import prepare
from bench.data.types import ColumnSchema, DatasetFrames
from plugins.samplers.uniform import UniformSampler

FAST = ["--epochs", "1", "--batch-size", "512", "--embed-dim", "8", "--no-progress"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def no_store(results: Path) -> bool:
    return not (results / "bench.db").exists()


# --- the sampler contract, checked every epoch -------------------------------------------------------------

class _Leaky(UniformSampler):
    """Negatives that are the user's own training positives: each such pair trains as both 1 and 0."""

    def sample(self, epoch):
        drawn = super().sample(epoch)
        n_pos = len(self.data.train)
        items = drawn.items.numpy().copy()
        items[n_pos:] = self.data.train.items[drawn.positives.numpy()[n_pos:]]
        return TrainSamples(drawn.positives.numpy(), items, drawn.labels.numpy())


class _SevenLabels(UniformSampler):
    def sample(self, epoch):
        drawn = super().sample(epoch)
        return TrainSamples(drawn.positives.numpy(), drawn.items.numpy(), drawn.labels.numpy() * 7)


class _OutOfPool(UniformSampler):
    def sample(self, epoch):
        drawn = super().sample(epoch)
        items = drawn.items.numpy().copy()
        items[-1] = self.data.n_items + 5
        return TrainSamples(drawn.positives.numpy(), items, drawn.labels.numpy())


class _NotSamples(UniformSampler):
    def sample(self, epoch):
        drawn = super().sample(epoch)
        return drawn.positives, drawn.items, drawn.labels


@pytest.mark.parametrize("sampler, problem", [
    (_Leaky, "negatives are training positives of their user"),
    (_SevenLabels, "labels must be 0 or 1, got 7.0"),
    (_OutOfPool, "items must be in 1.."),
    (_NotSamples, "returned tuple, not TrainSamples"),
])
def test_a_sampler_breaking_its_contract_fails_the_run_naming_it(tmp_path, sampler, problem):
    with registry.isolated():
        registry.register("sampler", "test-bad")(sampler)
        res = invoke("run", "--models", "fm", "--baseline", "fm", "--sampler", "test-bad", *SYNTH, *FAST,
                     "--results-dir", str(tmp_path))
    assert res.exit_code == 1, res.output
    assert "fm seed 1: SamplerContractError: sampler 'test-bad'" in res.stderr and problem in res.stderr
    assert res.stdout == ""  # no leaderboard row from a run trained on broken samples


def test_the_built_in_samplers_meet_the_checked_contract(small_data):
    from bench.data.base import check_samples

    for name, options in (("uniform", {}), ("popularity", {"alpha": 0.5}), ("uniform", {"exclude_held_out": True})):
        sampler = registry.create("sampler", name, num_negatives=3, seed=1, **options).fit(small_data)
        for epoch in (1, 2):
            check_samples(sampler.sample(epoch), small_data, name)  # raises on any breach


# --- the split checked once, before any run or store ---------------------------------------------------------

def _csv(tmp_path: Path, rows: list[tuple]) -> list[str]:
    path = tmp_path / "ratings.csv"
    pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).to_csv(path, index=False)
    return ["--dataset", "csv", "--dataset-opt", f"interactions={path}", "--dataset-opt", "rating_col=rating",
            "--dataset-opt", "timestamp_col=timestamp"]


@pytest.mark.parametrize("case, message", [
    ("single item", "nothing to rank"),
    ("too few positives", "nothing to evaluate"),
    ("min interactions beyond every user", "nothing to evaluate"),
    ("synthetic one item", "nothing to rank"),
    ("only held-out positives", "nothing to train on"),
])
def test_data_leaving_nothing_to_rank_evaluate_or_train_is_refused_before_any_run(tmp_path, case, message):
    results = tmp_path / "results"
    if case == "single item":
        data = _csv(tmp_path, [(u, 1, 5, t) for u in range(5) for t in range(3)])
    elif case == "too few positives":
        data = _csv(tmp_path, [(u, i, 5, i) for u in range(5) for i in range(2)])
    elif case == "min interactions beyond every user":
        data = SYNTH + ["--min-interactions", "100000"]
    elif case == "synthetic one item":
        data = ["--dataset", "synthetic", "--dataset-opt", "n_users=20", "--dataset-opt", "n_items=1",
                "--dataset-opt", "n_interactions=20"]
    else:  # every user has exactly the validation and the test positive
        data = _csv(tmp_path, [(u, (u + i) % 7, 5, i) for u in range(6) for i in range(2)]) + \
            ["--min-interactions", "2"]
    res = invoke("run", "--models", "fm,mostpop", "--baseline", "mostpop", *data, *FAST,
                 "--results-dir", str(results))
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert no_store(results)


# --- history windows bounded by the data -------------------------------------------------------------------

def test_a_history_window_longer_than_any_past_is_cut_to_the_longest_with_a_warning():
    rows = [(u, i, 5, i) for u in range(4) for i in range(6 + u)]  # the longest past: 8 earlier positives
    frames = DatasetFrames("hand-made", pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]),
                           pd.DataFrame({"user_id": range(4)}), pd.DataFrame({"item_id": range(9)}),
                           [ColumnSchema("user_id", "user", "label", is_id=True),
                            ColumnSchema("item_id", "item", "label", is_id=True)])
    with pytest.warns(UserWarning, match="--history 1000000: the longest past of any row holds 8 earlier"):
        data = prepare(frames, history=1_000_000)
    assert data.spec.field("history").max_len == 8 and data.states.length == 8 and data.info["history"] == 8
    with pytest.warns(UserWarning) as caught:  # a window that fits is taken as asked, without a word
        prepare(frames, history=8)
        import warnings
        warnings.warn("sentinel", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["sentinel"]


def test_bench_run_with_a_huge_history_trains_on_the_longest_window(tmp_path):
    res = invoke("run", "--models", "fm", "--baseline", "fm", "--history", "1000000", *SYNTH, *FAST,
                 "--results-dir", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert "warning: --history 1000000: the longest past of any row holds" in res.stderr


# --- the device, checked once ------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps", "meta", "bogus"])
def test_an_unusable_device_is_refused_before_any_work(tmp_path, device):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has CUDA: 'cuda' is usable here")  # never on CI's CPU machine
    res = invoke("run", "--models", "fm", "--baseline", "fm", "--device", device, *SYNTH, *FAST,
                 "--results-dir", str(tmp_path))
    assert res.exit_code == 2, res.output
    assert f"--device {device}" in res.output or f"--device '{device}'" in res.output
    assert "Traceback" not in res.output and no_store(tmp_path)


# --- tuned-params files ------------------------------------------------------------------------------------

@pytest.mark.parametrize("payload, message", [
    ({"model": "fm", "params": None}, "'params' must be a JSON object, got null"),
    ({"model": 5, "params": {}}, "'model' must be a JSON string, got number"),
    ({"model": "fm", "params": [1, 2]}, "'params' must be a JSON object, got array"),
    ([1, 2], "expected an object"),
    ({"model": "xdeepfm", "params": {"lr": 0.01}}, "tuned for 'xdeepfm', which is not among --models (fm)"),
])
def test_a_bad_or_foreign_params_file_is_one_line_before_any_work(tmp_path, payload, message):
    params = tmp_path / "params.json"
    params.write_text(json.dumps(payload))
    results = tmp_path / "results"
    res = invoke("run", "--models", "fm", "--baseline", "fm", "--params", str(params), *SYNTH, *FAST,
                 "--results-dir", str(results))
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output and no_store(results)


def test_a_list_of_several_models_params_takes_those_of_models_and_says_so(tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps([{"model": "fm", "params": {"lr": 0.01}}, {"model": "xdeepfm", "params": {}}]))
    res = invoke("run", "--models", "fm", "--baseline", "fm", "--params", str(params), "--tuned-only", *SYNTH, *FAST,
                 "--results-dir", str(tmp_path / "r"), "--format", "json")
    assert res.exit_code == 0, res.output
    assert [r["model"] for r in json.loads(res.stdout)] == ["fm:tuned"]
    assert "skipping the params tuned for 'xdeepfm', which is not among --models" in res.stderr


def test_a_params_file_nested_beyond_reason_is_refused(tmp_path):
    params = tmp_path / "params.json"
    params.write_text("[" * 100_000 + "]" * 100_000)
    res = invoke("run", "--models", "fm", "--params", str(params), *SYNTH, "--results-dir", str(tmp_path / "r"))
    assert res.exit_code == 2 and "nests too deeply" in res.output


# --- --rerun -----------------------------------------------------------------------------------------------

def test_rerun_of_an_id_beyond_64_bits_is_refused_by_name(tmp_path):
    from bench.results.store import ResultStore

    ResultStore(tmp_path)  # a store to look in: the id is refused, not looked up
    res = invoke("run", "--rerun", "99999999999999999999", "--results-dir", str(tmp_path))
    assert res.exit_code == 2 and "--rerun" in res.output and "Traceback" not in res.output


def _run(status="finished", metrics=None, checksum="aaa", run_id=1, reason=None):
    return SimpleNamespace(id=run_id, status=status, reason=reason, metrics=metrics or {},
                           config={"data_checksum": checksum})


def test_rerun_comparison_says_when_the_data_changed_even_with_identical_metrics(capsys):
    from bench.cli.run import _compare_rerun

    _compare_rerun(_run(metrics={"HR@10": 0.5}), _run(metrics={"HR@10": 0.5}, checksum="bbb", run_id=2))
    err = capsys.readouterr().err
    assert "every metric identical (1 compared)" in err and "the data differs (checksum aaa -> bbb)" in err


def test_rerun_comparison_of_a_run_that_never_finished_compares_nothing(capsys):
    from bench.cli.run import _compare_rerun

    _compare_rerun(_run(status="failed", reason="NaNLossError: boom"), _run(metrics={"HR@10": 0.5}, run_id=2))
    err = capsys.readouterr().err
    assert "did not finish (failed: NaNLossError: boom), so there are no metrics to compare" in err
    assert "identical" not in err


# --- signals and memory ------------------------------------------------------------------------------------

def test_ctrl_c_while_the_data_loads_exits_130_without_aborted(tmp_path, monkeypatch):
    import bench.runner as runner_mod

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_mod, "load_frames", interrupted)
    res = invoke("run", "--models", "fm", *SYNTH, *FAST, "--results-dir", str(tmp_path))
    assert res.exit_code == 130 and "interrupted" in res.output and "Aborted!" not in res.output
    assert no_store(tmp_path)


def test_sigterm_while_the_data_loads_exits_143(tmp_path, monkeypatch):
    import bench.runner as runner_mod
    from bench.interrupts import Terminated

    def terminated(config):
        raise Terminated()

    monkeypatch.setattr(runner_mod, "load_frames", terminated)
    res = invoke("data", *SYNTH)
    assert res.exit_code == 143 and "interrupted (SIGTERM)" in res.output


def test_too_little_memory_to_load_torch_is_one_line():
    # 400 MB of address space: Python starts, PyTorch's libraries cannot be mapped
    code = "ulimit -v 400000; exec \"$0\" -m bench list"
    out = subprocess.run(["bash", "-c", code, sys.executable], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith("bench: not enough memory to start") and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_only_memory_failures_become_the_memory_line():
    from bench.entry import short_of_memory

    assert short_of_memory(ImportError("libtorch_cpu.so: failed to map segment from shared object"))
    assert short_of_memory(MemoryError())
    assert not short_of_memory(ImportError("No module named 'torch'"))


def test_a_seeded_split_check_passes_real_shapes(small_data):
    from bench.config import DataConfig
    from bench.runner import check_split

    check_split(small_data, DataConfig())  # the shared small dataset has something to rank, evaluate and train
    assert len(small_data.test) and len(small_data.train) and np.all(small_data.test.items > 0)
