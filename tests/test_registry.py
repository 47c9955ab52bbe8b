"""The registry: discovery through entry points, clear errors, isolation of broken plugins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import registry

BUILTINS = {
    "model": {"fm", "deepfm", "xdeepfm", "autoint", "attention-deepfm", "neumf", "mostpop", "composed"},
    "interaction": {"fm", "cin", "attention"},
    "encoder": {"label", "multihot", "bucket"},
    "sampler": {"uniform", "popularity"},
    "dataset": {"ml-100k", "ml-1m", "csv", "synthetic"},
}


@pytest.mark.parametrize("kind", sorted(BUILTINS))
def test_every_builtin_is_discovered_and_loads(kind):
    assert BUILTINS[kind] <= set(registry.available(kind))
    for name in BUILTINS[kind]:
        obj = registry.get(kind, name)
        assert callable(obj), (kind, name)


def test_describe_names_the_source_distribution():
    rows = {(p.kind, p.name): p for p in registry.describe()}
    assert rows[("model", "deepfm")].source == "deepfm-bench"
    assert rows[("model", "deepfm")].error is None
    assert rows[("model", "deepfm")].doc  # one-line doc shown by `bench list`


def test_unknown_name_lists_known_and_suggests_closest():
    with pytest.raises(registry.UnknownPluginError) as err:
        registry.get("model", "deepfn")
    message = str(err.value)
    assert "Did you mean 'deepfm'?" in message
    for name in ("xdeepfm", "neumf", "mostpop"):
        assert name in message


def test_unknown_kind_lists_kinds():
    with pytest.raises(registry.UnknownKindError, match="model, interaction, encoder, sampler, dataset"):
        registry.available("optimizer")


def test_register_decorator_and_pattern_listing():
    class Toy:
        """A toy sampler."""

        def fit(self, data):
            return self

        def sample(self, epoch):
            return None

    with registry.isolated():
        registry.register("sampler", "test-only-sampler", aliases=("test-only-alias",))(Toy)
        assert registry.get("sampler", "test-only-sampler") is Toy
        assert registry.get("sampler", "test-only-alias") is Toy
        assert registry.available("sampler", "test-only-*") == ["test-only-alias", "test-only-sampler"]
        assert registry.create("sampler", "test-only-sampler").__class__ is Toy
        registry.unregister("sampler", "test-only-alias")
        assert registry.available("sampler", "test-only-*") == ["test-only-sampler"]
    assert registry.available("sampler", "test-only-*") == []  # gone with the block


def test_defaults_are_the_constructor_options_a_plugin_is_built_with_when_unset():
    class Toy:
        def __init__(self, spec, embed_dim: int = 8, widths=(4, 2), *, scale: float = 0.5, **options):
            pass

    with registry.isolated():
        registry.register("model", "test-only-toy")(Toy)
        assert registry.defaults("model", "test-only-toy") == {"embed_dim": 8, "widths": (4, 2), "scale": 0.5}
    assert registry.defaults("model", "deepfm")["mlp"] == (128, 64, 32)


def test_a_plugin_that_breaks_its_kinds_contract_says_what_it_lacks():
    class NoSample:
        def fit(self, data):
            return self

    class Narrow(torch.nn.Module):
        def __init__(self, num_fields, dim):
            super().__init__()
            self.num_fields, self.dim = num_fields, dim  # but no out_dim

    with registry.isolated():
        registry.register("sampler", "test-no-sample")(NoSample)
        registry.register("interaction", "test-narrow")(Narrow)
        with pytest.raises(registry.PluginContractError, match=r"sampler 'test-no-sample' .* needs a sample\(epoch\)"):
            registry.create("sampler", "test-no-sample")
        with pytest.raises(registry.PluginContractError, match="an int attribute out_dim >= 1"):
            registry.create("interaction", "test-narrow", num_fields=3, dim=4)
    with pytest.raises(registry.UnknownPluginError, match="no sampler 'test-no-sample' was registered"):
        registry.unregister("sampler", "test-no-sample")


def test_two_claims_on_one_name_is_an_error_naming_both():
    class First:
        pass

    with registry.isolated():
        registry.register("encoder", "test-dupe")(First)
        with pytest.raises(registry.DuplicatePluginError) as err:
            @registry.register("encoder", "test-dupe")
            class Second:
                pass
        assert "First" in str(err.value) and "Second" in str(err.value)


def test_register_in_code_clashing_with_an_entry_point_is_reported():
    class ImpostorNeuMF:
        pass

    with registry.isolated():
        registry.register("model", "neumf")(ImpostorNeuMF)
        with pytest.raises(registry.DuplicatePluginError) as err:
            registry.get("model", "neumf")
        assert "deepfm-bench" in str(err.value) and "test_registry" in str(err.value)
        assert registry.get("model", "deepfm")  # the others keep working


THIRD_PARTY = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "toy-recs"
        version = "0.0.1"

        [project.entry-points."deepfm_bench.models"]
        toy = "toy_recs:ToyModel"
        broken = "toy_recs_broken:Model"
        deepfm = "toy_recs:ToyModel"

        [project.entry-points."deepfm_bench.samplers"]
        toy-sampler = "toy_recs:ToySampler"

        [project.entry-points."deepfm_bench.interactions"]
        toy-layer = "toy_recs:ToyLayer"

        [tool.setuptools]
        py-modules = ["toy_recs", "toy_recs_broken"]
    """,
    "toy_recs.py": '''
        """A third-party plugin package."""
        import torch
        from plugins.models.mostpop import MostPop


        class ToyModel(MostPop):
            """Toy model shipped by a third party."""


        class ToySampler:
            """Toy sampler shipped by a third party."""


        class ToyLayer(torch.nn.Module):
            """Toy interaction layer shipped by a third party: the sum of every field vector's coordinates."""

            def __init__(self, num_fields, dim):
                super().__init__()
                self.num_fields, self.dim, self.out_dim = num_fields, dim, 1

            def forward(self, fields):
                return fields.sum(dim=(1, 2)).unsqueeze(1)
    ''',
    "toy_recs_broken.py": """
        import a_module_that_does_not_exist  # noqa: F401
    """,
}


@pytest.fixture(scope="module")
def third_party_site(tmp_path_factory) -> Path:
    """Build and pip-install a tiny plugin package into its own directory (not this environment)."""
    src = tmp_path_factory.mktemp("toy-src")
    for name, text in THIRD_PARTY.items():
        (src / name).write_text(textwrap.dedent(text))
    site = tmp_path_factory.mktemp("toy-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(src)],
        check=True, capture_output=True, text=True,
    )
    return site


def _bench(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "bench", *args], env=env, capture_output=True, text=True)


def test_installed_plugin_package_shows_up_in_bench_list(third_party_site):
    out = _bench(third_party_site, "list", "model")
    assert out.returncode == 0, out.stderr
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines() if line.startswith("|")}
    assert "toy-recs" in rows["toy"] and "Toy model shipped by a third party." in rows["toy"]
    # the broken plugin is reported by name with its error; the others still load
    assert "ERROR" in rows["broken"] and "a_module_that_does_not_exist" in rows["broken"]
    assert "deepfm-bench" in rows["xdeepfm"] and "ERROR" not in rows["xdeepfm"]
    # two distributions claiming 'deepfm' is named as such
    assert "claimed by two plugins" in rows["deepfm"]
    assert "deepfm-bench" in rows["deepfm"] and "toy-recs" in rows["deepfm"]
    sampler = _bench(third_party_site, "list", "sampler")
    assert "toy-sampler" in sampler.stdout and "toy-recs" in sampler.stdout


def test_broken_plugin_error_names_it(third_party_site):
    code = "import registry; registry.get('model', 'broken')"
    env = {**os.environ, "PYTHONPATH": str(third_party_site)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "PluginLoadError" in out.stderr and "'broken' from toy-recs" in out.stderr
    assert "a_module_that_does_not_exist" in out.stderr


def test_bench_list_keeps_a_broken_plugin_to_one_short_row(third_party_site):
    out = _bench(third_party_site, "list", "model")
    assert max(len(line) for line in out.stdout.splitlines()) < 180  # was ~230 with the whole error inline
    assert "model broken from toy-recs (toy_recs_broken:Model): ModuleNotFoundError" in out.stderr


def test_a_subclassed_plugin_reports_its_own_registry_name():
    from plugins.samplers.popularity import PopularitySampler

    class HardPop(PopularitySampler):
        """Popularity negatives, registered under a name of their own."""

    with registry.isolated():
        registry.register("sampler", "test-hard-pop")(HardPop)
        with pytest.raises(TypeError, match="test-hard-pop sampler: unknown options"):
            registry.create("sampler", "test-hard-pop", beta=2)
        made = registry.create("sampler", "test-hard-pop", alpha=0.5)
        assert made.name == "test-hard-pop" and isinstance(made, HardPop)
        assert registry.create("sampler", "popularity").name == "popularity"


def test_a_third_party_interaction_layer_is_swept_by_bench_tune(third_party_site, tmp_path):
    synthetic = ["--dataset", "synthetic", "--dataset-opt", "n_users=40", "--dataset-opt", "n_items=50",
                 "--dataset-opt", "n_interactions=1200"]
    out = _bench(third_party_site, "tune", "--models", "fm", "--sweep", "interactions", "--trials", "1", *synthetic,
                 "--epochs", "1", "--threads", "1", "--no-progress", "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    import optuna

    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'optuna.db'}")
    choices = summary.user_attrs["interaction_choices"].split(";")
    assert "toy-layer" in choices and "fm,toy-layer" in choices and "cin" in choices
