"""How each stage scales: load, split, one epoch of negatives, training, full ranking, validation, baseline fits.

    python -m bench.scale --interactions 1000000,5000000,20000000 --history 0,50 --output results/scale.md
    python -m bench.scale --interactions 5000000,20000000 --history 50 --encoders mean,recency,target,transformer,gru
    python -m bench.scale --interactions 5000000 --split loo,global --no-baselines

Each (size, history, split) is measured in a process of its own, one after another (peak RSS is a process's),
on the `synthetic` dataset with ML-20M's proportions: about 145 positives' worth of ratings per user and
27,000 items at 20M interactions (items grow as the square root of the size). Per stage: wall seconds and
the peak RSS during that stage (Linux: the process's high-water mark is reset as each stage starts; where
it cannot be, the peak so far). Training and full ranking are timed on a bounded part and extrapolated
(steps to one epoch, users to all users): their cost is linear in those, and at 20M a whole epoch takes
minutes and a whole ranking tens of minutes; the table says which figures are extrapolated. Training's
timing starts after a few untimed steps (the FM kernel compiles once per process: seconds). Training is timed
with each `train.optimizer` (Adam, lazy Adam), each from the same initial weights, and with history once per
`--encoders` encoder (Adam). After the last training stage of a model come its full ranking, the
validation early stopping would run by default (`--val-budget`: the subset of users `budget_users` picks for
Adam's epoch time, timed whole) and the share of the machine's measured float32 matrix-multiply rate that
ranking reaches (FLOPs counted by torch's FlopCounterMode on a few users). The baselines are fitted at
history 0 only: their fits read the training positives, never the history, so the figures would repeat (at
20M, half an hour of them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

USERS_PER_INTERACTION = 138_000 / 20_000_000
ITEMS_AT_20M = 27_000
TRAIN_STEPS = 200
WARMUP_STEPS = 3  # untimed: the FM kernel's one compilation per process, Adam's first allocation of its moments
BATCH = 1024
RANK_USERS = 2_000
RANK_USERS_PAIRWISE = 200  # a target-aware encoder scores every pair through its attention: 10x the work
FLOP_USERS = 20


def shape(n: int) -> tuple[int, int]:
    """(users, items) of a synthetic dataset with `n` interactions in ML-20M's proportions."""
    return max(int(n * USERS_PER_INTERACTION), 50), max(int(ITEMS_AT_20M * (n / 20_000_000) ** 0.5), 100)


def reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark (Linux: clear_refs 5), so the next peak is one stage's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The RSS high-water mark in MB: since the last reset where /proc has one, else the process's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 matrix-multiply rate (median of `repeats` size x size products), GFLOP/s: the
    peak that ranking, a batched product at heart, is read against."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up: thread pool, caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def with_encoder(data: Any, encoder: str) -> Any:
    """`data` whose history field is read by `encoder` (the split and the windows are shared, not redone)."""
    fields = [dataclasses.replace(f, pooling=encoder) if f.name == "history" else f for f in data.spec.fields]
    return dataclasses.replace(data, spec=type(data.spec)(fields))


class Stages:
    """The measured rows of one process: each stage's wall seconds and its own peak RSS."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.per_stage_peak = reset_peak_rss()

    def begin(self) -> float:
        reset_peak_rss()
        return time.perf_counter()

    def add(self, name: str, seconds: float, note: str = "") -> None:
        self.rows.append({"stage": name, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "note": note})


def time_training(stages: Stages, label: str, data: Any, optimizer: str,
                  batches: tuple[torch.Tensor, torch.Tensor, torch.Tensor], epoch_steps: int) -> tuple[Any, float]:
    """One epoch of DeepFM's training on `data` with `optimizer`, extrapolated from the batches given; returns
    the model and the epoch's estimated seconds."""
    from bench.config import ModelConfig, TrainConfig
    from bench.runner import build_model
    from bench.train.trainer import make_optimizers, optimizer_step

    user_x, item_x, labels = batches
    torch.manual_seed(0)
    model = build_model(ModelConfig("deepfm"), data)
    optimizers = make_optimizers(model, TrainConfig(batch_size=BATCH, optimizer=optimizer))

    def step(start: int) -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(user_x[start:start + BATCH], item_x[start:start + BATCH]), labels[start:start + BATCH])
        optimizer_step(optimizers, loss)

    t = stages.begin()
    for _ in range(WARMUP_STEPS):
        step(0)
    warmup = time.perf_counter() - t
    t = time.perf_counter()
    for start in range(0, len(labels), BATCH):
        step(start)
    seconds = time.perf_counter() - t
    steps = -(-len(labels) // BATCH)
    epoch = seconds / steps * epoch_steps
    stages.add(f"{label} training, one epoch, {optimizer}", epoch,
               f"extrapolated from {steps} steps of {BATCH} ({seconds / steps * 1e3:.2f} ms a step; "
               f"{WARMUP_STEPS} untimed warm-up steps took {warmup:.1f} s)")
    return model, epoch


def time_ranking(stages: Stages, label: str, model: Any, data: Any, epoch_seconds: float, peak: float,
                 pairwise: bool, validation: bool = True) -> None:
    """Full ranking of every validation user (extrapolated from a fixed subset), its share of the matmul peak,
    and (`validation`) the validation early stopping would run by default after an epoch of `epoch_seconds`."""
    from torch.utils.flop_counter import FlopCounterMode

    from bench.config import EvalConfig, TrainConfig
    from bench.eval.evaluator import evaluate
    from bench.train.trainer import budget_users

    config = EvalConfig(ks=(10,))
    ranked = min(RANK_USERS_PAIRWISE if pairwise else RANK_USERS, len(data.val))
    t = stages.begin()
    evaluate(model, data, "val", config, max_users=ranked)
    seconds = time.perf_counter() - t
    counted = min(FLOP_USERS, ranked)
    with FlopCounterMode(display=False) as flops:
        evaluate(model, data, "val", config, max_users=counted)
    rate = flops.get_total_flops() / counted * ranked / seconds / 1e9
    stages.add(f"{label} full ranking, all validation users", seconds / ranked * len(data.val),
               f"extrapolated from {ranked:,} of {len(data.val):,} users x {data.n_items - 1:,} items; "
               f"{rate:.1f} GFLOP/s in matmuls, {rate / peak:.0%} of the {peak:.0f} GFLOP/s matmul peak")
    if not validation:
        return
    t = stages.begin()
    users, _ = budget_users(model, data, TrainConfig(batch_size=BATCH), config, torch.device("cpu"), epoch_seconds)
    probe = time.perf_counter() - t
    t = time.perf_counter()
    evaluate(model, data, "val", config, max_users=users)
    seconds = time.perf_counter() - t
    shown = f"{users:,} of {len(data.val):,} users" if users else f"all {len(data.val):,} users"
    stages.add(f"{label} validation by default (--val-budget 0.25)", seconds,
               f"{shown}: {seconds / epoch_seconds:.0%} of the Adam epoch (+{probe:.1f} s probe after the first epoch)")


def measure(n: int, history: int, threads: int, split: str = "loo", encoders: tuple[str, ...] = ("mean",),
            baselines: bool = True, ranking: bool = True, validation: bool = True) -> dict[str, Any]:
    """Every stage at one size, in this process (`ranking=False`: without full ranking and validation;
    `validation=False`: full ranking without the default validation, which at 20M costs a quarter of an
    epoch per encoder)."""
    import registry
    from bench.config import OPTIMIZERS, ModelConfig, TrainConfig, make_sampler
    from bench.data.pipeline import prepare
    from bench.device import flush_denormal
    from bench.runner import build_model

    torch.set_num_threads(threads)
    flush_denormal()
    peak = matmul_gflops()
    users, items = shape(n)
    stages = Stages()

    t = stages.begin()
    frames = registry.create("dataset", "synthetic", n_users=users, n_items=items, n_interactions=n).load()
    stages.add("load (generate)", time.perf_counter() - t)
    t = stages.begin()
    data = prepare(frames, history=history, split=split)
    del frames
    stages.add("split + encode + states", time.perf_counter() - t,
               f"{split}: {len(data.train):,} train positives, {len(data.val):,} validation users")

    t = stages.begin()
    sampler = make_sampler(TrainConfig(batch_size=BATCH)).fit(data)
    drawn = sampler.sample(1)
    stages.add("negatives, one epoch", time.perf_counter() - t, f"{len(drawn):,} rows")

    states = torch.from_numpy(data.train.states)[drawn.positives[: TRAIN_STEPS * BATCH]]
    batches = (data.user_rows()(states), data.item_features[drawn.items[: TRAIN_STEPS * BATCH]],
               drawn.labels[: TRAIN_STEPS * BATCH])
    epoch_steps = -(-len(drawn) // BATCH)
    del drawn, sampler
    for encoder in encoders if history else ("",):
        encoded = with_encoder(data, encoder) if history else data
        label = f"DeepFM + {encoder}" if history else "DeepFM"
        pairwise = bool(history) and registry.get("history_encoder", encoder).target_aware
        epochs = {}  # the validation budget is a share of the default optimizer's (Adam's) epoch
        for optimizer in OPTIMIZERS if encoder in ("", encoders[0]) else ("adam",):
            model, epochs[optimizer] = time_training(stages, label, encoded, optimizer, batches, epoch_steps)
        if ranking:
            time_ranking(stages, label, model, encoded, epochs["adam"], peak, pairwise, validation)
        del model
    del batches

    for name in ("mostpop", "itemknn", "ease") if history == 0 and baselines else ():  # never read the history
        t = stages.begin()
        try:
            build_model(ModelConfig(name), data)
            stages.add(f"{name} fit", time.perf_counter() - t)
        except MemoryError as exc:
            stages.add(f"{name} fit", float("nan"), f"refused: {exc}")
    return {"interactions": n, "users": users, "items": items, "history": history, "split": split,
            "threads": threads, "states": len(data.states), "matmul_gflops": peak,
            "per_stage_peak": stages.per_stage_peak, "stages": stages.rows}


def table(results: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    out = []
    for r in results:
        head = (f"### {r['interactions']:,} interactions ({r['users']:,} users, {r['items']:,} items), "
                f"history {r['history']}, {r.get('split', 'loo')} split, {r['threads']} threads, "
                f"{r['states']:,} user states")
        peak = "peak RSS MB" + ("" if r.get("per_stage_peak") else " (so far)")
        body = tabulate([[s["stage"], "-" if s["seconds"] != s["seconds"] else f"{s['seconds']:.1f}",
                          f"{s['peak_rss_mb']:,.0f}", s["note"]] for s in r["stages"]],
                        headers=["stage", "seconds", peak, "note"], tablefmt="github")
        out.append(f"{head}\n\n{body}\n")
    return "\n".join(out)


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", default="1000000,5000000,20000000")
    parser.add_argument("--history", default="0,50")
    parser.add_argument("--split", default="loo", help="loo, global or both (comma-separated)")
    parser.add_argument("--encoders", default="mean", help="history encoders to time (with history > 0)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the mostpop/itemknn/ease fits")
    parser.add_argument("--no-ranking", action="store_true",
                        help="skip full ranking and validation (training and memory only)")
    parser.add_argument("--no-validation", action="store_true",
                        help="time full ranking but not the validation early stopping runs by default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=None, help="write the tables to this Markdown file")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes, histories = [int(x) for x in _list(args.interactions)], [int(x) for x in _list(args.history)]
    splits, encoders = _list(args.split), tuple(_list(args.encoders))
    if args.one:
        print(json.dumps(measure(sizes[0], histories[0], args.threads, splits[0], encoders, not args.no_baselines,
                                 not args.no_ranking, not args.no_validation)))
        return
    results = []
    for n in sizes:
        for history in histories:
            for split in splits:
                cmd = [sys.executable, "-m", "bench.scale", "--one", "--interactions", str(n), "--history",
                       str(history), "--split", split, "--encoders", ",".join(encoders), "--threads",
                       str(args.threads), *(["--no-baselines"] if args.no_baselines else []),
                       *(["--no-ranking"] if args.no_ranking else []),
                       *(["--no-validation"] if args.no_validation else [])]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
                results.append(json.loads(done.stdout.splitlines()[-1]))
                print(table(results[-1:]), flush=True)
                if args.output:  # after every process, so that a long run stopped part-way keeps what it measured
                    write_page(Path(args.output), results, argv if argv is not None else sys.argv[1:])


def write_page(path: Path, results: list[dict[str, Any]], argv: list[str]) -> None:
    """The measured tables under the command that made them (a page of its own: the reading goes elsewhere)."""
    from bench.results.store import write_atomic

    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads available"
    page = ["# Scale measurements", "", "Produced by:", "", "```", " ".join(["python -m bench.scale", *argv]),
            "```", "", f"Machine: {machine}, torch {torch.__version__}; one process at a time.", "", table(results)]
    write_atomic(path, "\n".join(page) + "\n")


if __name__ == "__main__":
    main()
