"""How each stage scales: load, split, one epoch of negatives, training, full ranking, baseline fits.

    python -m bench.scale --interactions 1000000,5000000,20000000 --history 0,50 --output results/scale.md

Each (size, history) is measured in a process of its own, one after another (peak RSS is a process's), on
the `synthetic` dataset with ML-20M's proportions: about 145 positives' worth of ratings per user and
27,000 items at 20M interactions (items grow as the square root of the size). Per stage: wall seconds and
the peak RSS during that stage (Linux: the process's high-water mark is reset as each stage starts; where
it cannot be, the peak so far). Training and full ranking are timed on a bounded part and extrapolated
(steps to one epoch, users to all users): their cost is linear in those, and at 20M a whole epoch takes
minutes and a whole ranking tens of minutes; the table says which figures are extrapolated. Training is
timed with each `train.optimizer` (Adam, lazy Adam), each from the same initial weights; the ranking uses
the last. The baselines
are fitted at history 0 only: their fits read the training positives, never the history, so the figures
would repeat (at 20M, half an hour of them).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

USERS_PER_INTERACTION = 138_000 / 20_000_000
ITEMS_AT_20M = 27_000
TRAIN_STEPS = 200
BATCH = 1024
RANK_USERS = 2_000


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


def measure(n: int, history: int, threads: int) -> dict[str, Any]:
    """Every stage at one size, in this process."""
    import registry
    from bench.config import OPTIMIZERS, EvalConfig, ModelConfig, TrainConfig, make_sampler
    from bench.data.pipeline import prepare
    from bench.device import flush_denormal
    from bench.eval.evaluator import evaluate
    from bench.runner import build_model
    from bench.train.trainer import make_optimizers, optimizer_step

    torch.set_num_threads(threads)
    flush_denormal()
    users, items = shape(n)
    rows: list[dict[str, Any]] = []
    per_stage = reset_peak_rss()

    def begin() -> float:
        reset_peak_rss()
        return time.perf_counter()

    def stage(name: str, seconds: float, note: str = "") -> None:
        rows.append({"stage": name, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "note": note})

    t = begin()
    frames = registry.create("dataset", "synthetic", n_users=users, n_items=items, n_interactions=n).load()
    stage("load (generate)", time.perf_counter() - t)
    t = begin()
    data = prepare(frames, history=history)
    del frames
    stage("split + encode + states", time.perf_counter() - t, f"{len(data.train):,} train positives")

    config = TrainConfig(batch_size=BATCH)
    t = begin()
    sampler = make_sampler(config).fit(data)
    drawn = sampler.sample(1)
    stage("negatives, one epoch", time.perf_counter() - t, f"{len(drawn):,} rows")

    user_rows = data.user_rows()
    states = torch.from_numpy(data.train.states)[drawn.positives[: TRAIN_STEPS * BATCH]]
    user_x, item_x = user_rows(states), data.item_features[drawn.items[: TRAIN_STEPS * BATCH]]
    labels = drawn.labels[: TRAIN_STEPS * BATCH]
    epoch_steps = -(-len(drawn) // BATCH)
    for optimizer_name in OPTIMIZERS:
        torch.manual_seed(0)
        model = build_model(ModelConfig("deepfm"), data)
        optimizers = make_optimizers(model, TrainConfig(batch_size=BATCH, optimizer=optimizer_name))
        t = begin()
        for start in range(0, len(labels), BATCH):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(user_x[start:start + BATCH], item_x[start:start + BATCH]), labels[start:start + BATCH])
            optimizer_step(optimizers, loss)
        seconds = time.perf_counter() - t
        steps = -(-len(labels) // BATCH)
        stage(f"DeepFM training, one epoch, {optimizer_name}", seconds / steps * epoch_steps,
              f"extrapolated from {steps} steps of {BATCH} ({seconds / steps * 1e3:.2f} ms a step)")
    del drawn, sampler, user_x, item_x

    ranked = min(RANK_USERS, len(data.val))
    t = begin()
    evaluate(model, data, "val", EvalConfig(ks=(10,)), max_users=ranked)
    seconds = time.perf_counter() - t
    stage("DeepFM full ranking, all validation users", seconds / ranked * len(data.val),
          f"extrapolated from {ranked:,} of {len(data.val):,} users x {data.n_items - 1:,} items")
    del model, optimizers

    for name in ("mostpop", "itemknn", "ease") if history == 0 else ():  # their fits never read the history
        t = begin()
        try:
            build_model(ModelConfig(name), data)
            stage(f"{name} fit", time.perf_counter() - t)
        except MemoryError as exc:
            stage(f"{name} fit", float("nan"), f"refused: {exc}")
    return {"interactions": n, "users": users, "items": items, "history": history, "threads": threads,
            "states": len(data.states), "per_stage_peak": per_stage, "stages": rows}


def table(results: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    out = []
    for r in results:
        head = (f"### {r['interactions']:,} interactions ({r['users']:,} users, {r['items']:,} items), "
                f"history {r['history']}, {r['threads']} threads, {r['states']:,} user states")
        peak = "peak RSS MB" + ("" if r.get("per_stage_peak") else " (so far)")
        body = tabulate([[s["stage"], "-" if s["seconds"] != s["seconds"] else f"{s['seconds']:.1f}",
                          f"{s['peak_rss_mb']:,.0f}", s["note"]] for s in r["stages"]],
                        headers=["stage", "seconds", peak, "note"], tablefmt="github")
        out.append(f"{head}\n\n{body}\n")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", default="1000000,5000000,20000000")
    parser.add_argument("--history", default="0,50")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=None)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.interactions.split(",")]
    histories = [int(x) for x in args.history.split(",")]
    if args.one:
        print(json.dumps(measure(sizes[0], histories[0], args.threads)))
        return
    results = []
    for n in sizes:
        for history in histories:
            cmd = [sys.executable, "-m", "bench.scale", "--one", "--interactions", str(n), "--history",
                   str(history), "--threads", str(args.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
            results.append(json.loads(done.stdout.splitlines()[-1]))
            print(table(results[-1:]), flush=True)
            if args.output:  # after every size, so that a long run stopped part-way keeps what it measured
                write_page(Path(args.output), args, results)


def write_page(path: Path, args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    from bench.results.store import write_atomic

    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads available"
    page = ["# Scale", "", "Produced by:", "", "```", f"python -m bench.scale --interactions {args.interactions} "
            f"--history {args.history} --threads {args.threads}", "```", "", f"Machine: {machine}, torch "
            f"{torch.__version__}; one process at a time.", "", table(results)]
    write_atomic(path, "\n".join(page) + "\n")


if __name__ == "__main__":
    main()
