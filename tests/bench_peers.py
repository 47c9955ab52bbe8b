"""One DeepFM training step of this project against the real peer libraries, each in its own training-loop form, on
the same ML-100K batches as tests/bench_plain_deepfm.py (the notebook's 24 fields, 19 binary genres): pytorch-fm
0.7.0 (`torchfm`) and DeepCTR-Torch 0.3.0 (`deepctr_torch`), installed by the `bench` extra; without them their
cases skip. Run: make bench, or pytest tests/bench_peers.py --benchmark-only --benchmark-columns=min,median,max.

Made equal as far as each library's own constructor allows: D=16; bias + first-order term + FM + MLP 128-64-32 (ReLU,
dropout 0.2 after each hidden layer) + a Linear to one logit (asserted below); one optimizer for all three, this
project's (fused Adam, lr 1e-3, weight decay 1e-5 on every parameter), so DeepCTR-Torch's own L2 terms are set to 0
(its loop still calls get_regularization_loss). Not equal, and not removable without editing the peers: pytorch-fm's
MLP has a BatchNorm1d after every hidden Linear (more work per step); DeepCTR-Torch keeps two tables per field (48
lookups a forward, where pytorch-fm makes 2 and this project 4), takes its input as floats cast back to int per
field, and sums its loss over the batch (Adam is nearly invariant to that scale)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from bench_plain_deepfm import batches
from conftest import require_ml100k
from torch import nn

import registry
from bench.config import ModelConfig, TrainConfig
from bench.data.pipeline import prepare
from bench.runner import build_model
from bench.train.trainer import make_adam, make_optimizers, optimizer_step

EMBED_DIM, HIDDEN, DROPOUT = 16, (128, 64, 32), 0.2
BATCH_SIZES = (256, 4096)
IMPLEMENTATIONS = ("ours", "pytorch-fm", "deepctr-torch")
MISSING = "{package} is not installed: pip install -e '.[bench]' (the bench extra) brings the peer libraries"

Step = Callable[[], float | torch.Tensor]


@pytest.fixture(scope="module")
def ml100k():
    frames = registry.create("dataset", "ml-100k", data_dir=require_ml100k(), genre_encoding="binary").load()
    return prepare(frames)


def import_torchfm_deepfm() -> type:
    """pytorch-fm's DeepFM class, or a skip naming the bench extra."""
    try:
        from torchfm.model.dfm import DeepFactorizationMachineModel
    except ImportError:
        pytest.skip(MISSING.format(package="pytorch-fm (torchfm)"))
    return DeepFactorizationMachineModel


def import_deepctr_torch() -> None:
    """Import deepctr_torch without its import-time update check: the package starts a non-daemon thread that asks
    PyPI for the latest release with no timeout (network traffic inside a benchmark; a stalled request would keep
    pytest from exiting). Its utils module (no package-relative imports) is loaded first with check_version made a
    no-op; a skip naming the bench extra when the package, or `requests` that it imports undeclared, is missing."""
    if "deepctr_torch" not in sys.modules:
        found = importlib.util.find_spec("deepctr_torch")
        if found is None or found.origin is None:
            pytest.skip(MISSING.format(package="DeepCTR-Torch (deepctr-torch)"))
        spec = importlib.util.spec_from_file_location("deepctr_torch.utils", Path(found.origin).with_name("utils.py"))
        utils = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(utils)
        except ImportError as e:
            pytest.skip(MISSING.format(package=f"DeepCTR-Torch's dependency {e.name}"))
        utils.check_version = lambda _version: None
        sys.modules["deepctr_torch.utils"] = utils
    import deepctr_torch.models  # noqa: F401


def same_adam(model: nn.Module) -> torch.optim.Adam:
    """The one optimizer every implementation gets: this project's default (fused Adam, lr 1e-3, decay 1e-5)."""
    return make_adam(model, TrainConfig())


def ours(data, user_x, item_x, labels) -> tuple[nn.Module, Step]:
    """This project's DeepFM, stepped as bench/train/trainer.py's train_epoch does: BCE on logits, every optimizer
    stepped by optimizer_step, the loss summed on the device (no sync per step)."""
    model = build_model(ModelConfig("deepfm"), data)
    optimizers = make_optimizers(model, TrainConfig())
    model.train()
    running = torch.zeros(())

    def step() -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(model(user_x, item_x), labels)
        optimizer_step(optimizers, loss)
        running.add_(loss.detach())
        return loss.detach()

    return model, step


def pytorch_fm(data, x, labels) -> tuple[nn.Module, Step]:
    """pytorch-fm's DeepFM, stepped as its examples/main.py train() does per batch: sigmoid outputs into BCELoss,
    model.zero_grad(), backward, step, `total_loss += loss.item()`."""
    model = import_torchfm_deepfm()([f.vocab_size for f in data.spec], embed_dim=EMBED_DIM, mlp_dims=HIDDEN,
                                    dropout=DROPOUT)
    criterion, optimizer = nn.BCELoss(), same_adam(model)
    model.train()

    def step() -> float:
        fields, target = x.to("cpu"), labels.to("cpu")
        loss = criterion(model(fields), target.float())
        model.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return model, step


def deepctr_torch(data, x, labels) -> tuple[nn.Module, Step]:
    """DeepCTR-Torch's DeepFM, stepped as BaseModel.fit's inner loop does per batch (compiled with no metrics, so
    no sklearn metric per batch): the batch cast to float, the sigmoid output squeezed, zero_grad, the summed
    binary_cross_entropy plus get_regularization_loss() and aux_loss, both losses read by .item(), backward, step."""
    import_deepctr_torch()
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DeepFM

    columns = [SparseFeat(f.name, vocabulary_size=f.vocab_size, embedding_dim=EMBED_DIM) for f in data.spec]
    model = DeepFM(columns, columns, dnn_hidden_units=HIDDEN, dnn_dropout=DROPOUT, l2_reg_linear=0,
                   l2_reg_embedding=0, l2_reg_dnn=0, task="binary", device="cpu")
    model.compile(same_adam(model), "binary_crossentropy")
    model.train()
    loss_func, optim = model.loss_func, model.optim

    def step() -> float:
        x_batch, y = x.to(model.device).float(), labels.to(model.device).float()
        y_pred = model(x_batch)
        if y_pred.ndim > 1 and y_pred.shape[-1] == 1:
            y_pred = y_pred.squeeze(-1)
        optim.zero_grad()
        loss = loss_func(y_pred, y, reduction="sum")
        total_loss = loss + model.get_regularization_loss() + model.aux_loss
        loss.item()
        total = total_loss.item()
        total_loss.backward()
        optim.step()
        return total

    return model, step


def linear_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """(in, out) of every Linear in registration order: the MLP and its output layer."""
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def check_trains(step: Step, steps: int = 20) -> None:
    """The timed step really trains: `steps` more steps on the same batch lower its loss."""
    first = float(step())
    for _ in range(steps):
        last = float(step())
    assert last < first, f"the loss did not fall over {steps} steps ({first} -> {last})"


@pytest.mark.parametrize("batch_size,impl", [pytest.param(b, i, id=f"{b}-{i}")
                                             for b in BATCH_SIZES for i in IMPLEMENTATIONS])
def test_deepfm_step(benchmark, ml100k, batch_size, impl):
    torch.manual_seed(0)
    user_x, item_x, labels = batches(ml100k, batch_size)
    assert len(ml100k.spec) == 24
    x = torch.cat([user_x, item_x], dim=1)  # the peers' one (B, F) matrix of field-local indices, user fields first
    if impl == "ours":
        model, step = ours(ml100k, user_x, item_x, labels)
    else:
        model, step = (pytorch_fm if impl == "pytorch-fm" else deepctr_torch)(ml100k, x, labels)
        benchmark.extra_info["version"] = version("torchfm" if impl == "pytorch-fm" else "deepctr-torch")
    width = len(ml100k.spec) * EMBED_DIM
    assert linear_shapes(model) == list(zip((width, *HIDDEN), (*HIDDEN, 1), strict=True))
    torch.manual_seed(0)
    check_trains(step)
    benchmark.group = f"DeepFM training step, batch {batch_size}"
    benchmark(step)
