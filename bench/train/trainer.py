"""Training: BCE with logits, Adam (or lazy Adam for the tables), negatives re-drawn every epoch, early
stopping on validation.

The best state is deep-copied (cloned tensors) and restored at the end: the original notebook's
`state_dict().copy()` is a shallow copy whose tensors keep training, so it silently restored the last
epoch. Each epoch's (user state, item row, label) indices are shuffled once; their feature rows (static user
features and history windows, item features; the matrices kept on the device) are gathered GATHER_ROWS
samples at a time, then sliced into batches: no per-sample Python, no DataLoader, and memory bounded by the
chunk rather than by an epoch's feature rows (gathering batch by batch instead was slower: docs/performance.md).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bench.config import EvalConfig, TrainConfig, make_sampler
from bench.data.base import TrainSamples, check_samples
from bench.data.types import InteractionData, UserRows
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
    val_users: int = 0  # validation users early stopping ranked (fewer than all: `budget_users`, or --val-users)
    val_note: str | None = None  # why, when fewer than all by the budget

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else float("nan")


def make_adam(params: torch.nn.Module | list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch has one for the parameters' device (one kernel per
    step instead of several per tensor); otherwise the default implementation, with the same update rule."""
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


class EarlyStopping:
    """Which epoch to keep, and when to stop: the best (optionally smoothed) validation value so far, a deep
    copy of that epoch's weights (or of their mean over the last `average` epochs), and the epochs waited
    since it. The notebook's `state_dict().copy()` was shallow: its "best" tensors kept training."""

    def __init__(self, patience: int, smoothing: float = 0.0, average: int = 1):
        self.patience, self.smoothing, self.average = patience, smoothing, average
        self.best_value, self.best_epoch, self.waited = float("-inf"), 0, 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self._smoothed: float | None = None
        self._recent: deque[dict[str, torch.Tensor]] = deque(maxlen=average)  # the last epochs' weights

    def update(self, epoch: int, value: float, model: torch.nn.Module) -> None:
        """Record one epoch's validation value; keep the model's weights when it is the best so far."""
        if self.average > 1:
            self._recent.append(_copy_state(model))
        smoothed = value if self._smoothed is None else self.smoothing * self._smoothed + (1 - self.smoothing) * value
        self._smoothed = smoothed
        if smoothed > self.best_value:
            self.best_value, self.best_epoch, self.waited = smoothed, epoch, 0
            self.best_state = _mean_state(self._recent) if self.average > 1 else _copy_state(model)
        else:
            self.waited += 1

    @property
    def should_stop(self) -> bool:
        return self.waited >= self.patience

    def restore(self, model: torch.nn.Module) -> None:
        """Put the kept weights back into `model` (nothing was kept: nothing changes)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def _copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _mean_state(states: deque[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of several epochs' weights (integer buffers taken from the last)."""
    last = states[-1]
    return {k: torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v.clone()
            for k, v in last.items()}


@dataclass
class EpochLoss:
    """One training epoch's outcome: its mean loss, the first batch's loss (the untrained model's, in the first
    epoch), and how many samples it trained on."""

    mean: float
    first: float | None
    samples: int


@dataclass
class DeviceFeatures:
    """The feature matrices training gathers from, kept on the training device for the whole run."""

    user_rows: UserRows  # user state -> static features and history window
    items: torch.Tensor  # item row -> item features
    train_states: torch.Tensor  # training positive -> its user state

    @classmethod
    def of(cls, data: InteractionData, device: torch.device) -> "DeviceFeatures":
        return cls(data.user_rows(device), data.item_features.to(device),
                   torch.from_numpy(data.train.states).to(device))


def train_epoch(model: torch.nn.Module, drawn: TrainSamples, order: torch.Tensor,
                optimizers: list[torch.optim.Optimizer], batch_size: int, features: DeviceFeatures,
                device: torch.device) -> EpochLoss:
    """One BCE pass over an epoch's samples in `order`: features gathered GATHER_ROWS samples at a time, then
    sliced into batches, each a step of every optimizer. One device sync per epoch (and one for the first
    batch's loss)."""
    positives, items, labels = (x[order].to(device) for x in (drawn.positives, drawn.items, drawn.labels))
    states = features.train_states[positives]  # a negative's user side is its positive's state
    model.train()
    total = _Total(device)
    chunk = max(GATHER_ROWS // batch_size, 1) * batch_size  # whole batches per chunk
    for begin in range(0, len(labels), chunk):
        user_x = features.user_rows(states[begin:begin + chunk])
        item_x = features.items.index_select(0, items[begin:begin + chunk])
        for start in range(0, len(user_x), batch_size):
            end = start + batch_size
            logits = model(user_x[start:end], item_x[start:end])
            total.step(optimizers, F.binary_cross_entropy_with_logits(logits, labels[begin + start:begin + end]))
    return total.result(len(labels))


def softmax_epoch(model: torch.nn.Module, drawn: TrainSamples, generator: torch.Generator,
                  optimizers: list[torch.optim.Optimizer], batch_size: int, features: DeviceFeatures,
                  device: torch.device, sampled: bool) -> EpochLoss:
    """One softmax pass over the epoch's positives in a random order: each positive's logit against its own
    negatives' (`sampled`: the rows the sampler drew for it, batch_size rows per step) or against every item's
    (padding excluded; batch_size positives per step, each scored against the whole catalogue)."""
    groups = _groups(drawn) if sampled else torch.nonzero(drawn.labels == 1).flatten().unsqueeze(1)
    groups = groups[torch.randperm(len(groups), generator=generator)].to(device)
    width = groups.shape[1]
    per_step = max(batch_size // width, 1) if sampled else batch_size
    positives, items = drawn.positives.to(device), drawn.items.to(device)
    model.train()
    total = _Total(device)
    for start in range(0, len(groups), per_step):
        rows = groups[start:start + per_step]
        user_x = features.user_rows(features.train_states[positives[rows[:, 0]]])
        if sampled:  # row 0 of each group is its positive
            flat = rows.reshape(-1)
            logits = model(user_x.repeat_interleave(width, 0), features.items.index_select(0, items[flat]))
            logits, target = logits.view(-1, width), torch.zeros(len(rows), dtype=torch.long, device=device)
        else:
            logits = model.all_item_logits(user_x, features.items)
            logits = torch.cat([torch.full_like(logits[:, :1], float("-inf")), logits[:, 1:]], dim=1)  # no padding
            target = items[rows[:, 0]]
        total.step(optimizers, F.cross_entropy(logits, target))
    return total.result(len(groups) * width)


def _groups(drawn: TrainSamples) -> torch.Tensor:
    """(positives, 1 + negatives) row indices of the epoch's samples, each positive's row first: a sampled softmax
    needs every positive to come with the same number of negatives, as the built-in samplers draw them."""
    key = drawn.positives * 2 + (drawn.labels == 0).long()  # a positive's own row first, then its negatives
    order = torch.argsort(key, stable=True)
    counts = torch.bincount(drawn.positives)
    counts = counts[counts > 0]
    if len(counts) == 0 or (counts != counts[0]).any() or int(counts[0]) < 2:
        raise ValueError("train.loss=sampled_softmax: the sampler must give every positive the same number (>= 1) "
                         "of negatives")
    grouped = order.view(-1, int(counts[0]))
    if not bool((drawn.labels[grouped[:, 0]] == 1).all()) or bool((drawn.labels[grouped[:, 1:]] == 1).any()):
        raise ValueError("train.loss=sampled_softmax: each positive needs exactly one label-1 row")
    return grouped


class _Total:
    """An epoch's running loss: one device sync for the first batch's loss, one for the mean."""

    def __init__(self, device: torch.device):
        self.sum, self.steps, self.first = torch.zeros((), device=device), 0, None

    def step(self, optimizers: list[torch.optim.Optimizer], loss: torch.Tensor) -> None:
        optimizer_step(optimizers, loss)
        self.sum += loss.detach()
        self.steps += 1
        if self.first is None:
            self.first = loss.item()

    def result(self, samples: int) -> EpochLoss:
        return EpochLoss((self.sum / max(self.steps, 1)).item(), self.first, samples)


def validate(model: torch.nn.Module, data: InteractionData, config: TrainConfig, evaluation: EvalConfig,
             device: torch.device, users: int | None = None) -> dict[str, float]:
    """The validation metrics early stopping reads (`config.val_metric`'s cutoff only), on every validation
    user or on a fixed subset of `users` of them (the same in every epoch: `evaluate`'s max_users)."""
    return evaluate(model, data, "val", replace(evaluation, ks=(config.val_k,)), seed=config.seed, device=device,
                    max_users=users).metrics


PROBE_USERS = 2000  # validation users timed to estimate what a full pass costs (fewer: always every user)


def budget_users(model: torch.nn.Module, data: InteractionData, config: TrainConfig, evaluation: EvalConfig,
                 device: torch.device, epoch_seconds: float) -> tuple[int | None, str | None]:
    """How many validation users early stopping ranks: `config.val_users` when set; otherwise every one, unless
    a full pass would cost more than `config.val_budget` of a training epoch (estimated from ranking a fixed
    PROBE_USERS of them), then as many as that budget pays for (at least PROBE_USERS). Returns the count (None:
    all) and a line saying why when they are fewer than all."""
    n = len(data.val)
    if config.val_users or not config.val_budget or n <= PROBE_USERS:
        return (config.val_users or None), None
    probe = evaluate(model, data, "val", replace(evaluation, ks=(config.val_k,)), seed=config.seed, device=device,
                     max_users=PROBE_USERS)
    full = probe.seconds * n / PROBE_USERS
    allowed = config.val_budget * epoch_seconds
    if full <= allowed:
        return None, None
    users = max(PROBE_USERS, int(n * allowed / full))
    return users, (f"validation ranks a fixed subset of {users:,} of {n:,} users: a full pass would take about "
                   f"{full:.0f} s, more than {config.val_budget:.0%} of a training epoch ({epoch_seconds:.0f} s; "
                   "--val-budget, or --val-users N to choose); test ranks every user")


def train(model: torch.nn.Module, data: InteractionData, config: TrainConfig, evaluation: EvalConfig,
          device: torch.device, on_epoch: Callable[[int, dict[str, float]], None] | None = None,
          progress: bool = False, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train `model` in place and leave it at its best validation epoch (`config.val_metric` under the
    `evaluation` protocol, at its cutoff only; smoothed over epochs with `config.smoothing`, the weights
    averaged over `config.average` epochs).

    `on_epoch(epoch, row)` is called after each validation (the tuner reports to Optuna there and may
    raise optuna.TrialPruned); `progress` shows a progress bar; `log` gets the line saying when validation
    ranks a subset of its users to stay within `config.val_budget` (`budget_users`).
    """
    flush_denormal()
    sampler = make_sampler(config).fit(data)
    optimizers = make_optimizers(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    features = DeviceFeatures.of(data, device)
    stopping = EarlyStopping(config.patience, config.smoothing, config.average)
    schedules = ([torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=config.epochs) for o in optimizers]
                 if config.schedule == "cosine" else [])
    history: list[dict[str, float]] = []
    train_s = sample_s = eval_s = 0.0
    samples = 0
    warnings: list[str] = []
    first_loss: float | None = None
    val_users, val_note = None, None
    bar = tqdm(range(1, config.epochs + 1), desc=type(model).__name__, disable=not progress, leave=False,
               dynamic_ncols=True)
    for epoch in bar:
        t0 = time.perf_counter()
        drawn = sampler.sample(epoch)
        check_samples(drawn, data, config.sampler)
        t1 = time.perf_counter()
        if config.loss == "bce":
            order = torch.randperm(len(drawn), generator=generator)
            loss = train_epoch(model, drawn, order, optimizers, config.batch_size, features, device)
        else:
            loss = softmax_epoch(model, drawn, generator, optimizers, config.batch_size, features, device,
                                 sampled=config.loss == "sampled_softmax")
        first_loss = loss.first if first_loss is None else first_loss
        for schedule in schedules:
            schedule.step()
        t2 = time.perf_counter()
        _check_loss(loss.mean, first_loss, epoch, config, warnings)
        if epoch == 1:  # the first epoch's training time prices validation (`budget_users`)
            val_users, val_note = budget_users(model, data, config, evaluation, device, t2 - t1)
            if val_note and log is not None:
                log(val_note)
        metrics = validate(model, data, config, evaluation, device, val_users)
        t3 = time.perf_counter()
        sample_s, train_s, eval_s = sample_s + t1 - t0, train_s + t2 - t1, eval_s + t3 - t2
        samples += loss.samples
        value = metrics[config.val_metric]
        row = {"epoch": epoch, "loss": loss.mean, **{f"val_{k}": v for k, v in metrics.items()},
               "sample_s": t1 - t0, "train_s": t2 - t1, "eval_s": t3 - t2}
        history.append(row)
        bar.set_postfix(loss=f"{loss.mean:.4f}", **{f"val_{config.val_metric}": f"{value:.4f}"})
        stopping.update(epoch, value, model)
        if on_epoch is not None:
            on_epoch(epoch, row)
        if stopping.should_stop:
            break
    stopping.restore(model)
    return TrainResult(history, stopping.best_epoch, stopping.best_value, len(history), train_s, sample_s, eval_s,
                       samples, warnings, val_users or len(data.val), val_note)


def _check_loss(mean: float, first: float | None, epoch: int, config: TrainConfig, warnings: list[str]) -> None:
    """A loss that is not finite fails the run; one that rose LOSS_RISE_FLAG-fold over the first batch's flags it
    (once)."""
    if not math.isfinite(mean):
        raise NaNLossError(f"training loss became {mean} in epoch {epoch} "
                           f"(lr={config.lr}, weight_decay={config.weight_decay})")
    if not warnings and first is not None and mean > LOSS_RISE_FLAG * first:
        warnings.append(f"training loss rose from {first:.4g} (first batch) to {mean:.4g} (epoch "
                        f"{epoch} mean): diverging (lr={config.lr})")
