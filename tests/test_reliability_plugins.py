"""Issue 23, plugins and the terminal: a broken third-party plugin is one line naming it and its distribution
while the others keep working, and text from users, files and plugins never reaches the terminal raw."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SYNTH

import registry
from bench.cli import main

FAST = ["--epochs", "1", "--batch-size", "512", "--embed-dim", "8", "--no-progress"]
RAW = ("\x1b", "\x07", "\x9b")  # ESC (ANSI/OSC), BEL, CSI

ENTRY_POINTS = """
[deepfm_bench.models]
exits = tp_exits:Model
constant = tp_plugins:NOT_CALLABLE
boom = tp_plugins:BoomModel
shouty = tp_plugins:ShoutyModel

[deepfm_bench.datasets]
none-ds = tp_plugins:NoneDataset
raising-ds = tp_plugins:RaisingDataset

[deepfm_bench.interactions]
too-wide = tp_plugins:TooWide
"""

MODULES = {
    "tp_exits.py": """
        import sys
        sys.exit(3)  # a plugin module that ends the process when imported
    """,
    "tp_plugins.py": '''
        import torch
        from bench.data.base import DatasetPlugin
        from plugins.models.mostpop import MostPop

        NOT_CALLABLE = 5


        class BoomModel(MostPop):
            """Fails when built."""

            def __init__(self, spec):
                raise RuntimeError("the weights server is down")


        class ShoutyModel(MostPop):
            """\\x1b[2J\\x1b]0;pwned\\x07 clears your screen"""


        class NoneDataset(DatasetPlugin):
            def load(self):
                return None


        class RaisingDataset(DatasetPlugin):
            def load(self):
                raise KeyError("user_id")


        class TooWide(torch.nn.Module):
            """Says 3 outputs, gives 5."""

            def __init__(self, num_fields, dim):
                super().__init__()
                self.num_fields, self.dim, self.out_dim = num_fields, dim, 3

            def forward(self, fields):
                return fields.new_zeros(fields.shape[0], 5)
    ''',
}


@pytest.fixture
def third_party(tmp_path, monkeypatch) -> Path:
    """An installed distribution 'tp-plugins' (its modules and a dist-info with entry points) on sys.path, the
    registry discovering entry points afresh."""
    site = tmp_path / "site"
    site.mkdir()
    for name, text in MODULES.items():
        (site / name).write_text(textwrap.dedent(text))
    info = site / "tp_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tp-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry.REGISTRY, "_discovered", {})
    return site


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_a_plugin_calling_sys_exit_on_import_does_not_end_bench_list(third_party):
    res = invoke("list", "model")
    assert res.exit_code == 0, res.output
    assert "| deepfm " in res.stdout and "| exits " in res.stdout
    assert "model exits from tp-plugins (tp_exits:Model): SystemExit: 3" in res.stderr


def test_an_entry_point_that_is_not_callable_is_named_with_its_distribution(third_party):
    listed = invoke("list", "model")
    assert "model constant from tp-plugins (tp_plugins:NOT_CALLABLE): TypeError" in listed.stderr
    res = invoke("run", "--models", "constant", *SYNTH, *FAST, "--results-dir", str(third_party / "r"))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "'constant' from tp-plugins (tp_plugins:NOT_CALLABLE) failed to load" in res.output
    assert "is a int, not a class or factory" in res.output


def test_a_model_whose_constructor_raises_is_one_line_before_any_work(third_party):
    results = third_party / "r"
    res = invoke("run", "--models", "boom,mostpop", "--baseline", "mostpop", *SYNTH, *FAST,
                 "--results-dir", str(results))
    assert res.exit_code == 2, res.output
    assert "model 'boom' from tp-plugins (tp_plugins:BoomModel) failed when created: RuntimeError: the weights " \
           "server is down" in res.output
    assert "Traceback" not in res.output and not (results / "bench.db").exists()


@pytest.mark.parametrize("dataset, problem", [
    ("none-ds", "load() returned NoneType, expected bench.data.types.DatasetFrames"),
    ("raising-ds", "load() raised KeyError: 'user_id'"),
])
def test_a_dataset_plugin_failing_to_load_is_one_line_naming_it(third_party, dataset, problem):
    res = invoke("data", "--dataset", dataset)
    assert res.exit_code == 2, res.output
    assert f"dataset {dataset!r} from tp-plugins" in res.output and problem in res.output
    assert "Traceback" not in res.output


def test_an_interaction_layer_giving_another_width_than_its_out_dim_is_named(third_party):
    res = invoke("run", "--models", "mostpop", "--baseline", "mostpop", "--interactions", "too-wide", *SYNTH, *FAST,
                 "--results-dir", str(third_party / "r"))
    assert res.exit_code == 1, res.output
    assert "interaction 'too-wide' (tp_plugins.TooWide) returned shape (" in res.stderr
    assert "but its out_dim is 3: expected (" in res.stderr


def test_a_plugins_docstring_reaches_bench_list_escaped(third_party):
    res = invoke("list", "model")
    shouty = next(line for line in res.stdout.splitlines() if line.startswith("| shouty"))
    assert "\\x1b[2J\\x1b]0;pwned\\x07 clears your screen" in shouty
    assert not any(c in res.output for c in RAW)


# --- control characters from the user and from files ---------------------------------------------------------

def test_a_model_label_with_escapes_is_refused_and_the_error_is_escaped(tmp_path):
    res = invoke("run", "--models", "fm:\x1b]0;pwned\x07", *SYNTH, *FAST, "--results-dir", str(tmp_path))
    assert res.exit_code == 2
    assert "a model label must be printable text" in res.output
    assert not any(c in res.output for c in RAW)


def test_a_forged_line_in_a_label_stays_on_one_line(tmp_path):
    forged = "mostpop:\n1 of 1 runs FAILED"
    res = invoke("run", "--models", forged, "--baseline", forged, *SYNTH, *FAST, "--results-dir", str(tmp_path))
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1 and "mostpop:\\n1 of 1 runs FAILED" in res.output


def test_paths_with_escapes_are_printed_escaped(tmp_path):
    results = tmp_path / "res\x1b[31mults"
    res = invoke("run", "--models", "mostpop", "--baseline", "mostpop", *SYNTH, *FAST, "--results-dir", str(results))
    assert res.exit_code == 0, res.output
    assert "res\\x1b[31mults" in res.stderr and not any(c in res.output for c in RAW)
    missing = invoke("data", "--dataset", "csv", "--dataset-opt", "interactions=rat\x07ings.csv")
    assert missing.exit_code == 2 and "rat\\x07ings.csv" in missing.output and "\x07" not in missing.output


def test_stored_labels_with_escapes_reach_the_tables_escaped():
    from types import SimpleNamespace

    import numpy as np

    from bench.results.tables import comparison, leaderboard

    def run(model, seed, value):
        users = np.arange(1, 6)
        return SimpleNamespace(model=model, seed=seed, status="finished", metrics={"HR@10": value},
                               per_user={"HR@10": np.full(5, value)}, users=users, notes=["diverged\x1b[2J"],
                               timings={"params": 1, "wall_s": 1.0})

    runs = [run("base\x1b[2J", 1, 0.1), run("other\x9b31m", 1, 0.2)]
    for fmt in ("github", "latex", "csv"):
        text = leaderboard(runs, fmt) + comparison(runs, "base\x1b[2J", fmt)
        assert not any(c in text for c in RAW) and "base\\x1b[2J" in text
