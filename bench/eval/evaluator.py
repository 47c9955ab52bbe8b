"""Leave-one-out evaluation: rank each user's held-out item among candidates, under two protocols.

full     every pool item (rows 1..n_items-1) competes, except what the user has already shown us: the
         training items, and for test also the validation item. (The original notebook masked only
         training items at test time, so the validation item, which a good model ranks high, competed
         with the answer.) The held-out item itself always competes, even if it also appears in train.
sampled  the held-out item against `num_negatives` items the user never interacted with, drawn with a
         fixed seed (the NCF protocol: cheaper, but optimistic and not comparable with `full`).

What the evaluator asks of a model is its declared contract (`bench.nn.model`): a trained model's
`item_scorer` (full: made once per block of items, so the item side is computed once for all user chunks)
or `forward` (sampled), on each evaluated user's state (the user's features and, with history, what they
liked before the held-out item); a fitted model's `score(states, items)`. Users are taken in chunks sized
by the model's declared `floats_per_pair`, `floats_per_user` / `floats_per_row` so one chunk's buffers stay around
CHUNK_FLOATS (and items in blocks where one user's row alone would pass that); rank counts come from
`bench.eval.metrics.rank_counts` and metrics from `bench.eval.metrics.ranking_metrics`, so tie handling is
one explicit policy.

With `top=True` (the runner's test evaluation) the full protocol also keeps each user's top-K list
(`bench.eval.metrics.top_items` on the same masked scores, in the same chunks) and computes the beyond-accuracy
metrics from it (`bench.eval.beyond`); `top_k_items` ranks chosen users exactly as the evaluator does
(`bench recommend`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bench.config import EvalConfig
from bench.data.eval_negatives import sample_eval_negatives
from bench.data.types import InteractionData, Pairs, UserRows
from bench.device import flush_denormal
from bench.eval.beyond import beyond_accuracy
from bench.eval.metrics import rank_counts, ranking_metrics, top_items
from bench.nn.model import RankingModel

SPLITS = ("val", "test")
CHUNK_FLOATS = 4 * 2**20  # float32 values per chunk (~16 MB; docs/performance.md says how it was chosen)


@dataclass
class EvalResult:
    metrics: dict[str, float]  # name -> mean over users
    per_user: dict[str, np.ndarray]  # name -> float64 per user, aligned with `users` (significance tests)
    users: np.ndarray  # user rows evaluated
    n_candidates: float  # mean number of candidates per user, the held-out item included
    protocol: str
    ties: str
    num_negatives: int | None  # None for the full protocol
    split: str
    seconds: float
    users_per_s: float
    top: np.ndarray | None = None  # (users, max K) each user's best candidates, best first (evaluate(top=True))


def evaluate(model: RankingModel, data: InteractionData, split: str = "val", config: EvalConfig | None = None, *,
             seed: int = 0, device: str | torch.device = "cpu", batch_users: int | None = None,
             max_users: int | None = None, top: bool = False) -> EvalResult:
    """Rank every `split` user's held-out item under `config` (protocol, negatives, cutoffs, tie policy; the
    defaults of EvalConfig when None); see the module docstring for the protocols.

    `max_users`: rank only a fixed subset of that many users, the same for every call (chosen by a hash of
    the rows, not by `seed`), to bound what early stopping costs at scale; never for test.

    `top`: under the full protocol, also keep each user's top-max(K) items (`EvalResult.top`) and add the
    beyond-accuracy metrics (`bench.eval.beyond`) after the accuracy ones; the sampled protocol has no full list,
    so there it adds nothing."""
    config = config or EvalConfig()
    if split not in SPLITS:
        raise ValueError(f"evaluate: split={split!r}; expected one of {', '.join(SPLITS)}")
    if batch_users is not None and batch_users < 1:
        raise ValueError(f"batch_users must be >= 1 (or None for automatic), got {batch_users}")
    users, items, states = _held_out(data, split)
    if max_users is not None and max_users < len(users):
        if split == "test":
            raise ValueError("evaluate: max_users bounds validation only; test ranks every user")
        keep = np.sort(np.argsort(_hash_rows(users), kind="stable")[:max_users])
        users, items, states = users[keep], items[keep], states[keep]
    device = torch.device(device)
    _check_model_device(model, device)

    flush_denormal()
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            best = None
            if config.protocol == "full":
                greater, tied, n_candidates, best = _rank_full(model, data, users, items, states, split, device,
                                                               batch_users, max(config.ks) if top else 0)
            else:
                greater, tied, n_candidates = _rank_sampled(model, data, users, items, states,
                                                            config.eval_negatives, seed, device, batch_users)
    finally:
        model.train(was_training)
    per_user = ranking_metrics(greater, tied, config.ks, config.ties)
    metrics = {name: float(values.mean()) for name, values in per_user.items()}
    if best is not None:
        extra, extra_per_user = beyond_accuracy(best, data.item_counts(), config.ks)
        metrics.update(extra)
        per_user.update(extra_per_user)
    seconds = time.perf_counter() - start
    return EvalResult(
        metrics=metrics,
        per_user=per_user,
        users=users,
        n_candidates=n_candidates,
        protocol=config.protocol,
        ties=config.ties,
        num_negatives=config.eval_negatives if config.protocol == "sampled" else None,
        split=split,
        seconds=seconds,
        users_per_s=len(users) / seconds if seconds > 0 else float("inf"),
        top=best,
    )


def _hash_rows(rows: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random key per user row (SplitMix64), so a subset by smallest key is the same in every
    epoch, run and trial, and spread over the users."""
    from bench.data.eval_negatives import _splitmix64

    return _splitmix64(np.asarray(rows, dtype=np.uint64))


def _held_out(data: InteractionData, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The split's (user rows, held-out item rows, user-state rows), checked against the feature matrices."""
    pairs: Pairs = data.val if split == "val" else data.test
    users, items = np.asarray(pairs.users, np.int64), np.asarray(pairs.items, np.int64)
    states = np.asarray(pairs.states, np.int64)
    if len(users) == 0:
        raise ValueError(f"data.{split} has no users to evaluate (dataset {data.name!r})")
    if users.shape != items.shape:
        raise ValueError(f"data.{split}: users {users.shape} and items {items.shape} are not aligned")
    for what, rows, size in (("user", users, data.n_users), ("item", items, data.n_items)):
        bad = rows[(rows < 1) | (rows >= size)]
        if bad.size:
            raise ValueError(f"data.{split}: {what} rows must be in 1..{size - 1} (row 0 is padding), "
                             f"got {bad[:5].tolist()}")
    return users, items, states


def _check_model_device(model: RankingModel, device: torch.device) -> None:
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    if tensor is None:
        return
    here = tensor.device
    if here.type != device.type or (device.index is not None and here.index != device.index):
        raise ValueError(f"evaluate: the model is on {here} but device={str(device)!r}; move the model "
                         f"or pass device={str(here)!r}")


def _chunk_users(model: RankingModel, items_per_user: int, full: bool = True) -> int:
    """Users per chunk so chunk * (items * floats one pair needs + floats one user needs, as the model
    declares) stays near CHUNK_FLOATS (at least one)."""
    if not full:
        return max(1, CHUNK_FLOATS // (items_per_user * model.floats_per_row()))
    return max(1, CHUNK_FLOATS // (items_per_user * model.floats_per_pair() + model.floats_per_user()))


def _item_block(model: RankingModel, data: InteractionData, users: int) -> int:
    """Items scored per call for `users` users at a time: all of them, unless one chunk's pairs would pass
    CHUNK_FLOATS (a large catalogue, a wide model), so the per-pair buffers stay bounded."""
    return min(data.n_items, max(1, CHUNK_FLOATS // (users * model.floats_per_pair())))


def _item_scorers(model: RankingModel, data: InteractionData, item_x: torch.Tensor,
                  block: int) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The model's `item_scorer` for each block of items: user feature rows -> (U, block) scores, the item
    side computed once for all user chunks."""
    return [model.item_scorer(item_x[lo:lo + block]) for lo in range(0, data.n_items, block)]


def _scores(model: RankingModel, data: InteractionData, user_rows: UserRows, states: np.ndarray,
            device: torch.device, scorers: list[Callable[[torch.Tensor], torch.Tensor]] | None = None) -> torch.Tensor:
    """(U, I) scores of these user states against every item row: from feature rows for a trained model
    (`scorers`, one per block of items), from the state and item rows for a fitted one (`FittedModel.score`,
    whole rows: its x_u is users x items whatever the block)."""
    rows = torch.from_numpy(states).to(device)
    if not model.trainable:
        return model.score(rows, torch.arange(data.n_items, device=device))
    user_x = user_rows(rows)
    parts = [score(user_x) for score in scorers]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _full_setup(model: RankingModel, data: InteractionData, split: str, device: torch.device,
                batch_users: int | None) -> tuple[list, UserRows, int, list | None]:
    """What every chunk of a full ranking shares: the split's masks (checked against the item matrix), the user
    rows, the users per chunk and, for a trained model, its item scorers."""
    known = data.eval_masks(split)
    for csr in known:
        if csr.n_items != data.n_items:
            raise ValueError(f"evaluate: interaction CSR has {csr.n_items} item columns but the item feature "
                             f"matrix has {data.n_items} rows")
    user_rows, item_x = data.user_rows(device), data.item_features.to(device)
    chunk = batch_users or _chunk_users(model, data.n_items)
    scorers = _item_scorers(model, data, item_x, _item_block(model, data, chunk)) if model.trainable else None
    return known, user_rows, chunk, scorers


def _chunk_full(model: RankingModel, data: InteractionData, rows: np.ndarray, items: np.ndarray,
                states: np.ndarray, known: list, user_rows: UserRows, scorers: list | None, device: torch.device,
                mask: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk's (scores, candidates, target): every pool item competes except what the user had already shown
    us (`known`, unless `mask` is off), and the held-out item always does."""
    target = torch.from_numpy(items).to(device)
    candidates = torch.ones(len(rows), data.n_items, dtype=torch.bool, device=device)
    for csr in known if mask else ():
        r, c = csr.rows_pairs(rows)
        candidates[torch.from_numpy(r).to(device), torch.from_numpy(c).to(device)] = False
    candidates[:, 0] = False  # the padding row is never a candidate
    candidates[torch.arange(len(rows), device=device), target] = True  # the answer always competes
    scores = _scores(model, data, user_rows, states, device, scorers)
    if scores.shape != candidates.shape:
        raise ValueError(f"{type(model).__name__} scored {tuple(scores.shape)}, expected "
                         f"{tuple(candidates.shape)} (users x items)")
    return scores, candidates, target


def _rank_full(model: RankingModel, data: InteractionData, users: np.ndarray, items: np.ndarray,
               states: np.ndarray, split: str, device: torch.device, batch_users: int | None,
               top_k: int = 0) -> tuple[np.ndarray, np.ndarray, float, np.ndarray | None]:
    """Rank counts against every pool item not already known for the user, and with `top_k` each user's
    `top_k` best candidates (else None)."""
    known, user_rows, chunk, scorers = _full_setup(model, data, split, device, batch_users)
    greater, tied, counts = (torch.empty(len(users), dtype=torch.long, device=device) for _ in range(3))
    best = torch.zeros(len(users), min(top_k, data.n_items), dtype=torch.long, device=device) if top_k else None
    for start in range(0, len(users), chunk):
        done = slice(start, start + chunk)
        scores, candidates, target = _chunk_full(model, data, users[done], items[done], states[done], known,
                                                 user_rows, scorers, device)
        greater[done], tied[done] = rank_counts(scores, target, candidates)
        counts[done] = candidates.sum(dim=1)
        if best is not None:
            best[done] = top_items(scores, candidates, top_k)[0]
    return (_numpy(greater), _numpy(tied), counts.double().mean().item(),
            None if best is None else _numpy(best))


def top_k_items(model: RankingModel, data: InteractionData, split: str, positions: np.ndarray, k: int, *,
                include_seen: bool = False, device: str | torch.device = "cpu",
                batch_users: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The `k` best items (item rows, 0 past a user's candidates) and their scores, best first, of the `split`
    rows at `positions` (indices into data.val / data.test), ranked as `evaluate(..., top=True)` ranks them: the
    same state, masks, tie order and chunks (each position's whole chunk is scored, so the scores are the ones
    the evaluator computed, whatever a batch size changes in the arithmetic). `include_seen`: nothing masked."""
    users, items, states = _held_out(data, split)
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size and (positions.min() < 0 or positions.max() >= len(users)):
        raise ValueError(f"top_k_items: positions must be in 0..{len(users) - 1}")
    device = torch.device(device)
    _check_model_device(model, device)
    flush_denormal()
    was_training = model.training
    model.eval()
    out_items = np.zeros((len(positions), min(k, data.n_items)), dtype=np.int64)
    out_scores = np.zeros(out_items.shape, dtype=np.float64)
    try:
        with torch.inference_mode():
            known, user_rows, chunk, scorers = _full_setup(model, data, split, device, batch_users)
            for start in np.unique(positions // chunk * chunk):
                done = slice(int(start), int(start) + chunk)
                scores, candidates, _ = _chunk_full(model, data, users[done], items[done], states[done], known,
                                                    user_rows, scorers, device, mask=not include_seen)
                bad = (~scores.isfinite() & candidates).any(dim=1)
                if bool(bad.any()):
                    raise ValueError(f"the model produced NaN or infinite scores for {int(bad.sum())} users; they "
                                     "cannot be ranked")
                best, values = top_items(scores, candidates, k)
                here = np.flatnonzero(positions // chunk * chunk == start)
                within = torch.from_numpy(positions[here] - start).to(device)
                out_items[here] = _numpy(best[within])
                out_scores[here] = values[within].double().cpu().numpy()
    finally:
        model.train(was_training)
    return out_items, out_scores


def _rank_sampled(model: RankingModel, data: InteractionData, users: np.ndarray, items: np.ndarray,
                  states: np.ndarray, num_negatives: int, seed: int, device: torch.device,
                  batch_users: int | None) -> tuple[np.ndarray, np.ndarray, float]:
    """Rank counts against a fixed-seed sample of items the user never interacted with."""
    negatives = np.asarray(sample_eval_negatives(data, users, n=num_negatives, seed=seed, allow_fewer=True))
    if negatives.shape != (len(users), num_negatives):
        raise ValueError(f"sample_eval_negatives returned shape {negatives.shape}, expected "
                         f"{(len(users), num_negatives)}")
    if negatives.size and (negatives.min() < 0 or negatives.max() >= data.n_items):
        raise ValueError(f"sample_eval_negatives returned item rows outside 0..{data.n_items - 1}")
    width = num_negatives + 1
    # column 0 is the held-out item; the rest are its negatives
    candidates = torch.from_numpy(np.concatenate([items[:, None], negatives.astype(np.int64)], axis=1))
    candidates = candidates.to(device)
    state_rows = torch.from_numpy(states).to(device)
    user_rows, item_x_all = data.user_rows(device), data.item_features.to(device)
    chunk = batch_users or _chunk_users(model, width, full=False)
    greater, tied = (torch.empty(len(users), dtype=torch.long, device=device) for _ in range(2))
    for start in range(0, len(users), chunk):
        block = candidates[start:start + chunk]
        if model.trainable:
            scores = model(user_rows(state_rows[start:start + chunk].repeat_interleave(width)),
                           item_x_all[block.reshape(-1)])
        else:  # a fitted model scores rows: all items of these states, then the candidates' columns
            scores = _scores(model, data, user_rows, states[start:start + chunk], device).gather(1, block)
        if scores.numel() != block.numel():
            raise ValueError(f"{type(model).__name__}.forward returned {scores.numel()} scores for "
                             f"{block.numel()} (user, item) rows")
        target = torch.zeros(len(block), dtype=torch.long, device=device)
        done = slice(start, start + len(block))
        greater[done], tied[done] = rank_counts(scores.reshape(block.shape), target, block != 0)  # 0 pads a short row
    return _numpy(greater), _numpy(tied), float(1 + (negatives != 0).sum(axis=1).mean())


def _numpy(counts: torch.Tensor) -> np.ndarray:
    return counts.cpu().numpy().astype(np.int64, copy=False)
