"""The documentation is true: the plugin guide's examples are real code that builds through the registry and
works, the command-line page names every option the commands take, the site builds with warnings as errors,
and every relative link of the README points at a file that exists."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from conftest import REPO

import registry
from bench.config import EvalConfig, ModelConfig, TrainConfig
from bench.data.pipeline import prepare
from bench.eval.evaluator import evaluate
from bench.nn.model import known_matrix, score_every_pair
from bench.runner import build_model
from bench.train.trainer import train

PLUGIN_GUIDE = REPO / "docs" / "plugins.md"


def example(name: str) -> dict:
    """The namespace of the plugin guide's python block that defines `name`."""
    text = PLUGIN_GUIDE.read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if f"class {name}(" in b)
    namespace: dict = {}
    exec(compile(block, str(PLUGIN_GUIDE), "exec"), namespace)
    return namespace


def test_every_python_block_of_the_plugin_guide_is_tested():
    """A new example must get a test here: each block defines one of the classes the tests below execute."""
    blocks = re.findall(r"```python\n(.*?)```", PLUGIN_GUIDE.read_text(), flags=re.S)
    defined = sorted(name for b in blocks for name in re.findall(r"^class (\w+)\(", b, flags=re.M))
    assert defined == sorted(["MyDeepFM", "CoCounts", "InnerProducts", "HashEncoder", "EasyNegatives", "JsonLines",
                              "MaxPooling"])


def test_the_history_encoder_example_reads_the_window_trains_and_is_swept(small_frames):
    encoder_cls = example("MaxPooling")["MaxPooling"]
    with registry.isolated():
        registry.register("history_encoder", "docs-max")(encoder_cls)
        made = registry.create("history_encoder", "docs-max", dim=4, length=3)
        history, mask = torch.randn(2, 3, 4), torch.tensor([[False, True, True], [False, False, False]])
        out = made(history, mask)
        assert torch.allclose(out[0], made.map(history[0, 1:]).max(0).values) and torch.equal(out[1], torch.zeros(4))
        data = prepare(small_frames, history=5, history_encoder="docs-max", history_options={"bias": False})
        torch.manual_seed(0)
        model = build_model(ModelConfig("deepfm", embed_dim=8), data)
        assert model.embedding.user.bags[0].encoder.map.bias is None  # its option reached it
        train(model, data, TrainConfig(epochs=1, batch_size=256), EvalConfig(), torch.device("cpu"))
        model.eval()
        user_x = data.user_rows()(torch.from_numpy(data.test.states[:4]))
        with torch.no_grad():
            torch.testing.assert_close(model.score_all(user_x, data.item_features),
                                       score_every_pair(model, user_x, data.item_features))
        from bench.tune.space import trial_params

        params = trial_params(optuna.trial.FixedTrial({"lr": 1e-3, "weight_decay": 1e-5, "num_negatives": 2,
                                                        "batch_size": 256, "embed_dim": 8, "history": 5,
                                                        "history_encoder": "docs-max", "history.bias": False,
                                                        "mlp": "64,32", "dropout": 0.1}),
                              "deepfm", ("history",))[1]
        assert params["history_encoder"] == "docs-max" and params["history.bias"] is False


def test_the_model_example_trains_and_ranks_like_a_built_in(small_data):
    model_cls = example("MyDeepFM")["MyDeepFM"]
    with registry.isolated():
        registry.register("model", "docs-mydeepfm")(model_cls)
        model = registry.create("model", "docs-mydeepfm", spec=small_data.spec, embed_dim=8)
        users, items = small_data.train.users[:64], small_data.train.items[:64]
        logits = model(small_data.user_features[users], small_data.item_features[items])
        assert logits.shape == (64,)
        logits.sum().backward()
        model.eval()
        with torch.no_grad():
            full = model.score_all(small_data.user_features[1:4], small_data.item_features)
            one = model(small_data.user_features[[2]], small_data.item_features[[5]])
        assert full.shape == (3, small_data.n_items) and torch.allclose(full[1, 5], one[0], atol=1e-6)
        assert model.floats_per_pair() >= 1 and model.floats_per_row() >= 1
        assert "dropout" in model_cls.search_space(optuna.trial.FixedTrial({"dropout": 0.3}))


def test_the_fitted_model_example_scores_its_formula_and_evaluates(small_data):
    model_cls = example("CoCounts")["CoCounts"]
    with registry.isolated():
        registry.register("model", "docs-cocounts")(model_cls)
        model = build_model(ModelConfig("docs-cocounts"), small_data)  # fitted there
        assert model.trainable is False
        x = torch.zeros(small_data.n_users, small_data.n_items)
        x[torch.from_numpy(small_data.train.users), torch.from_numpy(small_data.train.items)] = 1.0
        counts = x.T @ x
        counts.fill_diagonal_(0.0)
        states = torch.from_numpy(np.asarray(small_data.test.states[:5], np.int64))
        items = torch.arange(small_data.n_items)
        expected = known_matrix(small_data, states) @ counts
        assert torch.allclose(model.score(states, items), expected)
        result = evaluate(model, small_data, "test")
    assert result.users.size == len(small_data.test) and 0.0 <= result.metrics["HR@10"] <= 1.0


def test_the_interaction_example_declares_its_pairs_path_and_it_equals_forward(small_data):
    layer_cls = example("InnerProducts")["InnerProducts"]
    with registry.isolated():
        registry.register("interaction", "docs-inner")(layer_cls)
        layer = registry.create("interaction", "docs-inner", num_fields=6, dim=4)
        v = torch.randn(3, 6, 4)
        assert layer.out_dim == 15 and torch.allclose(layer(v)[:, 0], (v[:, 0] * v[:, 1]).sum(-1))
        users, items = torch.randn(3, 2, 4), torch.randn(5, 4, 4)  # user fields first, as pairs are formed
        pairs = torch.cat([users.repeat_interleave(5, 0), items.repeat(3, 1, 1)], dim=1)
        assert torch.allclose(layer.forward_pairs(users, items), layer(pairs).view(3, 5, 15), atol=1e-5)
        assert layer.floats_per_row() == 60 and layer.floats_per_pair() == 36

        torch.manual_seed(0)
        model = build_model(ModelConfig("composed", embed_dim=8).with_params({"interactions": "fm,docs-inner"}),
                            small_data)
        assert [t.pair_path for t in model.modules() if type(t).__name__ == "Term"] == ["scores", "forward"]
        train(model, small_data, TrainConfig(epochs=1), EvalConfig(), torch.device("cpu"))
        model.eval()
        u, i = small_data.user_features[1:4], small_data.item_features
        with torch.no_grad():
            assert torch.allclose(model.score_all(u, i), score_every_pair(model, u, i), atol=1e-5)


def test_the_encoder_example_encodes_saves_and_loads(tmp_path):
    encoder_cls = example("HashEncoder")["HashEncoder"]
    with registry.isolated():
        registry.register("encoder", "hash")(encoder_cls)
        encoder = registry.create("encoder", "hash", buckets=50)
        codes = encoder.fit_transform(pd.Series(["10025", "94110", "", "10025"]))
        assert codes.dtype == np.int64 and codes[2] == 0 and codes[0] == codes[3] and codes[[0, 1, 3]].min() >= 1
        assert codes.max() <= 50 and encoder.vocab_size == 51
        encoder.save(tmp_path / "hash.json")
        again = encoder_cls.load(tmp_path / "hash.json")
        assert np.array_equal(again.transform(pd.Series(["10025", "94110"])), codes[:2])


def test_the_sampler_example_draws_fresh_negatives_that_are_never_positives(small_data):
    sampler_cls = example("EasyNegatives")["EasyNegatives"]
    with registry.isolated():
        registry.register("sampler", "easy")(sampler_cls)
        sampler = registry.create("sampler", "easy", num_negatives=3, seed=1).fit(small_data)
        first, second = sampler.sample(1), sampler.sample(2)
        negatives = first.labels == 0
        assert int(negatives.sum()) == 3 * len(small_data.train) and int(first.labels.sum()) == len(small_data.train)
        users = small_data.train.users[first.positives[negatives].numpy()]
        assert not small_data.train_csr.contains(users, first.items[negatives].numpy()).any()
        assert not torch.equal(first.items, second.items) and torch.equal(first.items, sampler.sample(1).items)
        model = build_model(ModelConfig("fm", embed_dim=8), small_data)
        train(model, small_data, TrainConfig(epochs=1, sampler="easy"), EvalConfig(), torch.device("cpu"))


def test_the_dataset_example_loads_through_the_pipeline(tmp_path):
    dataset_cls = example("JsonLines")["JsonLines"]
    rng = np.random.default_rng(0)
    lines = [{"user": f"u{u}", "item": f"i{rng.integers(30)}", "stars": int(rng.integers(1, 6)), "time": t}
             for t, u in enumerate(np.repeat(np.arange(20), 12))]
    (tmp_path / "plays.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    with registry.isolated():
        registry.register("dataset", "jsonl")(dataset_cls)
        frames = registry.create("dataset", "jsonl", path=str(tmp_path / "plays.jsonl")).load()
        data = prepare(frames, threshold=4.0, min_interactions=3)
        assert [f.name for f in data.spec] == ["user_id", "item_id"] and len(data.test) > 0
        with pytest.raises(ValueError, match="option path"):
            registry.create("dataset", "jsonl").load()


# --- the command-line page and the site ------------------------------------------------------------------------

def command_options() -> list[tuple[str, str]]:
    """(command, flag) of every option spelling of every `bench` command (`--fm-dim` and `--no-progress` too)."""
    import click

    from bench.cli import main

    return [(name, opt) for name, command in main.commands.items() for param in command.params
            if isinstance(param, click.Option) for opt in [*param.opts, *param.secondary_opts]
            if opt not in ("-h", "--help")]


def test_the_command_line_page_names_every_option_of_every_command():
    text = (REPO / "docs" / "cli.md").read_text()
    options = command_options()
    assert ("run", "--val-metric") in options and ("tune", "--confirm-top") in options  # the list is real
    missing = [f"bench {name} {opt}" for name, opt in options if not re.search(rf"(?<![\w-]){opt}(?![\w-])", text)]
    assert not missing, f"docs/cli.md does not mention: {', '.join(missing)}"


def test_every_relative_link_of_the_readme_points_at_a_file():
    text = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    relative = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:|#", t)]
    assert "docs/plugins.md" in relative  # the README links to the pages
    missing = [t for t in relative if not (REPO / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_the_readme_links_every_page_of_the_site():
    text = (REPO / "README.md").read_text()
    pages = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))
    assert pages and not [p for p in pages if f"]({p}" not in text]


@pytest.mark.skipif(not os.environ.get("CI") and (importlib.util.find_spec("mkdocs") is None
                                                  or importlib.util.find_spec("material") is None),
                    reason="mkdocs and mkdocs-material are not installed (pip install -e '.[docs]'); CI installs them")
def test_the_site_builds_with_warnings_as_errors(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                          str(REPO / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")], cwd=REPO,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stderr[-4000:]
    assert (tmp_path / "site" / "plugins" / "index.html").is_file()
    assert "deepfm+history:tuned" in (tmp_path / "site" / "tables" / "ml-100k" / "index.html").read_text()
