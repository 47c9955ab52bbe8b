"""Training: BCE with logits, Adam (or lazy Adam for the tables), negatives re-drawn every epoch, early
stopping on validation.

The best state is deep-copied (cloned tensors) and restored at the end: the original notebook's
`state_dict().copy()` is a shallow copy whose tensors keep training, so it silently restored the last
epoch. Each epoch's (user state, item row, label) indices are shuffled once; their feature rows (static user
features and history windows, item features; the matrices kept on the device) are gathered GATHER_ROWS
samples at a time, then sliced into batches: no per-sample Python, no DataLoader, and memory bounded by the
chunk rather than by an epoch's feature rows (gathering batch by batch instead cost 17% of FM's training
speed on ML-100K).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bench.config import EvalConfig, TrainConfig, make_sampler
from bench.data.base import check_samples
from bench.data.types import InteractionData
from bench.device import flush_denormal
from bench.eval.evaluator import evaluate


class NaNLossError(FloatingPointError):
    """The training loss stopped being finite; the run is recorded as failed with this message."""


# An epoch whose mean loss exceeds this multiple of the first batch's flags the run: the loss diverged
# (`--lr 1e6` took it from 0.69 to 4e33 within the first epoch, still finite). Ordinary training only
# lowers it from the untrained model's ~ln 2.
LOSS_RISE_FLAG = 10.0
GATHER_ROWS = 1 << 16  # samples whose feature rows are gathered at once (~5 MB for MovieLens's columns)


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    best_epoch: int
    best_value: float
    epochs_run: int
    train_seconds: float  # gradient steps only
    sampling_seconds: float
    eval_seconds: float
    samples: int
    warnings: list[str] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else float("nan")


def _mean_state(states: deque[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of several epochs' weights (integer buffers taken from the last)."""
    last = states[-1]
    return {k: torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v.clone()
            for k, v in last.items()}


def make_adam(params: torch.nn.Module | list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch has one for the parameters' device (one kernel per
    step instead of several per tensor: DeepFM's CPU step 2.9 -> 2.5 ms, NeuMF's 1.7 -> 1.2 ms at batch
    256); otherwise the default implementation, with the same update rule."""
    params = list(params.parameters() if isinstance(params, torch.nn.Module) else params)
    options = {"lr": config.lr, "weight_decay": config.weight_decay}
    try:
        return torch.optim.Adam(params, fused=True, **options)
    except (RuntimeError, ValueError, TypeError):  # older torch or a device without the fused kernel
        return torch.optim.Adam(params, **options)


def make_optimizers(model: torch.nn.Module, config: TrainConfig) -> list[torch.optim.Optimizer]:
    """The optimizers of `config.optimizer`: `adam`, Adam over every parameter; `lazy_adam`, sparse
    gradients for the FeatureEmbedding tables updated by LazyAdam (the looked-up rows only: a step's cost
    follows the batch, not the tables; see bench.train.lazy_adam) and Adam for the rest."""
    from bench.nn.embedding import FeatureEmbedding
    from bench.train.lazy_adam import LazyAdam

    embeddings = [m for m in model.modules() if isinstance(m, FeatureEmbedding)]
    if config.optimizer == "adam":
        for embedding in embeddings:  # dense again, should an earlier lazy_adam have made them sparse
            embedding.use_sparse_gradients(False)
        return [make_adam(model, config)]
    tables = [p for m in embeddings for p in m.use_sparse_gradients()]
    if not tables:
        raise ValueError(f"train.optimizer=lazy_adam: {type(model).__name__} has no FeatureEmbedding tables "
                         f"to update lazily; use train.optimizer=adam")
    lazy = {id(p) for p in tables}
    dense = [p for p in model.parameters() if id(p) not in lazy]
    return ([make_adam(dense, config)] if dense else []) + [
        LazyAdam(tables, lr=config.lr, weight_decay=config.weight_decay)]


def optimizer_step(optimizers: list[torch.optim.Optimizer], loss: torch.Tensor) -> None:
    """One gradient step of every optimizer (`make_optimizers`) on `loss`."""
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()


def train(model: torch.nn.Module, data: InteractionData, config: TrainConfig, evaluation: EvalConfig,
          device: torch.device, on_epoch: Callable[[int, dict[str, float]], None] | None = None,
          progress: bool = False) -> TrainResult:
    """Train `model` in place and leave it at its best validation epoch (`config.val_metric` under the
    `evaluation` protocol, at its cutoff only; smoothed over epochs with `config.smoothing`, the weights
    averaged over `config.average` epochs).

    `on_epoch(epoch, row)` is called after each validation (the tuner reports to Optuna there and may
    raise optuna.TrialPruned); `progress` shows a progress bar.
    """
    flush_denormal()
    sampler = make_sampler(config).fit(data)
    optimizers = make_optimizers(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    user_rows, item_features = data.user_rows(device), data.item_features.to(device)
    train_states = torch.from_numpy(data.train.states).to(device)
    history: list[dict[str, float]] = []
    best_value, best_epoch, best_state, waited = float("-inf"), 0, None, 0
    smoothed: float | None = None
    recent: deque[dict[str, torch.Tensor]] = deque(maxlen=config.average)  # the last epochs' weights
    schedules = ([torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=config.epochs) for o in optimizers]
                 if config.schedule == "cosine" else [])
    train_s = sample_s = eval_s = 0.0
    samples = 0
    warnings: list[str] = []
    first_loss: float | None = None
    bar = tqdm(range(1, config.epochs + 1), desc=type(model).__name__, disable=not progress, leave=False,
               dynamic_ncols=True)
    for epoch in bar:
        t0 = time.perf_counter()
        drawn = sampler.sample(epoch)
        check_samples(drawn, data, config.sampler)
        order = torch.randperm(len(drawn), generator=generator)
        positives, items, labels = (x[order].to(device) for x in (drawn.positives, drawn.items, drawn.labels))
        states = train_states[positives]  # a negative's user side is its positive's state
        t1 = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        steps = 0
        chunk = max(GATHER_ROWS // config.batch_size, 1) * config.batch_size  # whole batches per chunk
        for begin in range(0, len(labels), chunk):
            user_x = user_rows(states[begin:begin + chunk])
            item_x = item_features.index_select(0, items[begin:begin + chunk])
            for start in range(0, len(user_x), config.batch_size):
                end = start + config.batch_size
                logits = model(user_x[start:end], item_x[start:end])
                loss = F.binary_cross_entropy_with_logits(logits, labels[begin + start:begin + end])
                optimizer_step(optimizers, loss)
                loss_sum += loss.detach()
                steps += 1
                if first_loss is None:
                    first_loss = loss.item()  # the untrained model's loss: one sync per training
        mean_loss = (loss_sum / max(steps, 1)).item()  # one sync per epoch
        for schedule in schedules:
            schedule.step()
        t2 = time.perf_counter()
        if not math.isfinite(mean_loss):
            raise NaNLossError(f"training loss became {mean_loss} in epoch {epoch} "
                               f"(lr={config.lr}, weight_decay={config.weight_decay})")
        if not warnings and first_loss is not None and mean_loss > LOSS_RISE_FLAG * first_loss:
            warnings.append(f"training loss rose from {first_loss:.4g} (first batch) to {mean_loss:.4g} (epoch "
                            f"{epoch} mean): diverging (lr={config.lr})")
        val = evaluate(model, data, split="val", protocol=evaluation.protocol, ks=(config.val_k,),
                       ties=evaluation.ties, num_negatives=evaluation.eval_negatives, seed=config.seed, device=device,
                       max_users=config.val_users or None)
        t3 = time.perf_counter()
        sample_s, train_s, eval_s = sample_s + t1 - t0, train_s + t2 - t1, eval_s + t3 - t2
        samples += len(labels)
        value = val.metrics[config.val_metric]
        row = {"epoch": epoch, "loss": mean_loss, **{f"val_{k}": v for k, v in val.metrics.items()},
               "sample_s": t1 - t0, "train_s": t2 - t1, "eval_s": t3 - t2}
        history.append(row)
        bar.set_postfix(loss=f"{mean_loss:.4f}", **{f"val_{config.val_metric}": f"{value:.4f}"})
        if config.average > 1:
            recent.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        smoothed = value if smoothed is None else config.smoothing * smoothed + (1 - config.smoothing) * value
        if smoothed > best_value:
            best_value, best_epoch, waited = smoothed, epoch, 0
            best_state = (_mean_state(recent) if config.average > 1
                          else {k: v.detach().clone() for k, v in model.state_dict().items()})
        else:
            waited += 1
        if on_epoch is not None:
            on_epoch(epoch, row)
        if waited >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainResult(history, best_epoch, best_value, len(history), train_s, sample_s, eval_s, samples, warnings)
