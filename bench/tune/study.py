"""`bench tune`: Optuna studies over hyperparameters, plugin combinations and devices.

The objective is the validation metric (never test). Each trial's search space is the common training
knobs (declared once, below) plus the model's own `search_space(trial)` and, with `--sweep`, plugin
choices as categorical parameters. Studies live in a storage URL (SQLite under the results dir by
default) and resume: the trials already in the study count toward `--trials`, and any number of
processes or machines pointed at one storage share the work, finishing exactly `--trials` trials.

What counts toward `--trials`: complete and pruned trials, and failed ones whose failure is the trial's own
(NaN loss, out of memory: recorded with `fail_reason`). A trial whose worker died (SIGKILL, power loss, a lost
machine) is *lost*, not failed: every running trial sends a heartbeat every HEARTBEAT_S seconds, and the first
worker that sees one silent for GRACE_S seconds fails it with the reason (user attrs `lost`, `fail_reason`) and
queues it again with the same parameters (a WAITING trial, `retry_of` its number; one killed before it drew any
is replaced by a new trial), so the study still ends with exactly `--trials` counted trials. A trial lost
MAX_RETRIES + 1 times (its configuration may be what kills the worker, e.g. the kernel's out-of-memory killer) is
failed for good and counts. A worker that has nothing left to start while other workers' trials still run waits
for them, to take over any that is lost. A trial aborted by Ctrl-C or SIGTERM is lost too (reason
`lost: interrupted ...`), and queued again at once.

Ctrl-C: every worker finishes its current trial, then `tune` raises StudyInterrupted (nothing runs after it); a
second Ctrl-C aborts the running trials.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from bench.config import ExperimentConfig, ModelConfig
from bench.device import cpu_count, flush_denormal, resolve_device, seed_everything, set_threads
from bench.eval.evaluator import evaluate
from bench.results.store import STUDY_DB
from bench.runner import DataSource, build_model
from bench.train.trainer import NaNLossError, train
from bench.tune.settings import check_resume, encoded, searched_keys, study_settings
from bench.tune.space import interaction_combos, trial_params, untuned_params
from bench.tune.storage import GRACE_S, HEARTBEAT_S, check_url, open_url, retry_lost, worker_id

DONE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class TuneConfig:
    experiment: ExperimentConfig  # data, training and evaluation settings every trial starts from
    model: ModelConfig  # the model tuned; its name labels the study and the saved best params
    trials: int = 50
    timeout: float | None = None
    storage: str | None = None
    study: str | None = None
    n_jobs: int = 1
    threads: int | None = None
    device: str = "cpu"
    sweep: tuple[str, ...] = ()
    objective: str = "NDCG@10"
    pruner: str = "median"
    pruner_startup: int = 5  # trials that finish before the median pruner starts pruning
    seed: int = 0
    results_dir: str = "results"
    progress: bool = True
    track: str | None = None  # MLflow: '' the local store under results_dir, else its URI; None: not tracked
    track_parent: str | None = None  # the MLflow run the trials nest under (made by `tune`)

    def study_name(self) -> str:
        """One study per (data, model, sweep, objective, validation protocol, device): never mixed."""
        if self.study:
            return f"{self.study}-{self.model.name}-{self.device}"
        sweep = f"-sweep_{'+'.join(self.sweep)}" if self.sweep else ""
        protocol = self.experiment.eval.protocol
        protocol = f"-{protocol}" if protocol != "full" else ""
        return f"{self.experiment.data.label()}-{self.model.name}{sweep}-{self.objective}{protocol}-{self.device}"

    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        path = Path(self.results_dir).resolve() / STUDY_DB
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"


def open_study(cfg: TuneConfig) -> optuna.Study:
    """Create or load the study. The sampler is unseeded on purpose: independent workers seeded alike
    propose the very same configurations (seen in the two-worker test); each trial's training is seeded
    by --seed + its trial number, so a trial can be re-run exactly."""
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if cfg.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=cfg.pruner_startup, n_warmup_steps=2)
    options = {"storage": open_url(cfg.storage_url()), "study_name": cfg.study_name(), "direction": "maximize",
               "pruner": pruner, "sampler": optuna.samplers.TPESampler(seed=None)}
    try:  # the storage creates a name once: of workers starting together, exactly one creates the study
        study, created = optuna.create_study(**options, load_if_exists=False), True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.create_study(**options, load_if_exists=True), False
    attrs = {"model": cfg.model.name, "device": cfg.device, "objective": cfg.objective,
             "dataset": cfg.experiment.data.label(), "sweep": ",".join(cfg.sweep)}
    if "interactions" in cfg.sweep:  # the layers installed when the study started are its choices for good
        attrs["interaction_choices"] = ";".join(interaction_combos())
        started = study.user_attrs.get("interaction_choices")
        if started is not None and started != attrs["interaction_choices"]:
            raise ValueError(f"--sweep interactions: study {cfg.study_name()} was started with the layer sets "
                             f"{started.replace(';', ' ')}; the installed layers now give "
                             f"{attrs['interaction_choices'].replace(';', ' ')}; start a new study (--study NAME)")
    settings = study_settings(cfg.model, cfg.experiment.train, cfg.experiment.data)
    searched = set().union(*(searched_keys(json.loads(t.user_attrs["run_params"]))
                             for t in study.get_trials(deepcopy=False) if "run_params" in t.user_attrs))
    check_resume(study.user_attrs.get("settings"), settings, searched, cfg.study_name())
    attrs["settings"] = encoded(settings)
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    if created:  # a new study tries the untuned configuration first
        untuned = untuned_params(cfg.model, cfg.experiment.train, cfg.experiment.data, cfg.sweep)
        if untuned is not None:
            study.enqueue_trial(untuned, user_attrs={"untuned": True})
    return study


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial counts toward the budget: complete, pruned, or failed for a reason of its own. Not: a
    surplus trial (see _objective), a lost one (its worker died; it is retried), one still running or waiting."""
    if trial.user_attrs.get("surplus") or trial.state not in DONE:
        return False
    return not (trial.state == TrialState.FAIL and trial.user_attrs.get("lost"))


def finished(study: optuna.Study) -> int:
    """Trials that count toward the budget."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=DONE) if counts(t))


def lost(study: optuna.Study) -> list[FrozenTrial]:
    """Trials failed because their worker died (each was queued again with its parameters)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.user_attrs.get("lost")]


class StudyInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the study (after the current trials, or at once on a second Ctrl-C); it is kept as it is
    and the same command resumes it. Raised by `tune`, so that nothing runs after it (no confirmation training,
    no best params from a study the user stopped)."""

    def __str__(self) -> str:
        return "Ctrl-C"


class _Stop:
    """Ctrl-C: finish the current trial, then stop; a second Ctrl-C interrupts it.

    `shared` (a multiprocessing or threading Event) carries the request to the helper worker processes and back
    to `tune`.
    """

    def __init__(self, shared: Any = None) -> None:
        self.shared = shared
        self._requested = False

    @property
    def requested(self) -> bool:
        return self._requested or (self.shared is not None and self.shared.is_set())

    def __call__(self, signum: int, frame: Any) -> None:
        if self._requested:
            raise KeyboardInterrupt
        self._requested = True
        if self.shared is not None:
            self.shared.set()
        print("\nstopping after the current trial (Ctrl-C again to abort it)", flush=True)


CATCH = (NaNLossError, RuntimeError, ValueError, MemoryError)  # out of memory is a RuntimeError


def work(cfg: TuneConfig, worker: int = 0, data: Any = None, stop_event: Any = None) -> int:
    """One worker: run trials until the study holds cfg.trials counted ones. Returns the trials it ran.

    Each trial goes through `study.optimize(n_trials=1)` so Optuna keeps its heartbeat and records failures and
    pruning. Before each trial, and every HEARTBEAT_S seconds while it waits for other workers' last trials,
    lost trials are failed with their reason and queued again (see the module docstring); queued ones run first.
    """
    set_threads(cfg.threads)
    flush_denormal()
    study = open_study(cfg)
    tracker = _tracker(cfg)
    data = data if isinstance(data, DataSource) else DataSource.fixed(data) if data is not None else DataSource()
    data.get(cfg.model.data_config(cfg.experiment.data))  # loaded before the first trial
    device = resolve_device(cfg.device)
    stop = _Stop(stop_event)
    previous = signal.signal(signal.SIGINT, stop) if worker == 0 and _main_thread() else None
    started = time.monotonic()
    bar = _progress(cfg, study) if worker == 0 else None
    ran = 0
    try:
        while not stop.requested:
            if cfg.timeout and time.monotonic() - started > cfg.timeout:
                break
            with warnings.catch_warnings():  # heartbeats are an ExperimentalWarning in Optuna, stable since 2.9
                warnings.simplefilter("ignore", ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            done = sum(1 for t in trials if counts(t))
            running = sum(1 for t in trials if t.state == TrialState.RUNNING)
            waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
            if bar is not None:
                _show(bar, study, done)
            if waiting or done + running < cfg.trials:
                ran += _one_trial(study, cfg, data, device, tracker)
            elif running:  # other workers' last trials: wait, to retry any of them that is lost
                _sleep(HEARTBEAT_S, stop)
            else:
                break
        if bar is not None:
            _show(bar, study, finished(study))
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.close()
    return ran


def _one_trial(study: optuna.Study, cfg: TuneConfig, data: Any, device: Any, tracker: Any = None) -> int:
    """Run one trial (a queued retry first); 1 if it was a real one, 0 if a surplus or declared lost meanwhile."""
    state: dict[str, Any] = {"surplus": False, "number": None, "tracker": tracker}
    try:
        study.optimize(lambda trial: _objective(study, trial, cfg, data, device, state), n_trials=1,
                       catch=CATCH, gc_after_trial=False, show_progress_bar=False)
    except (UpdateFinishedTrialError, ValueError):  # Optuna's "Cannot tell a FAIL trial"
        if state["number"] is None or not _frozen(study, state["number"]).user_attrs.get("lost"):
            raise
        number = state["number"]
        print(f"trial {number} of this worker ({worker_id()}) was declared lost by another worker after "
              f"{GRACE_S} s without its heartbeat (was this process stopped?); its result is dropped and it is "
              "retried", file=sys.stderr, flush=True)
        return 0
    return 0 if state["surplus"] else 1


def _frozen(study: optuna.Study, number: int) -> FrozenTrial:
    """The study's trial `number` as it is stored now."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _sleep(seconds: float, stop: _Stop) -> None:
    end = time.monotonic() + seconds
    while not stop.requested and time.monotonic() < end:
        time.sleep(0.2)


def _show(bar: Any, study: optuna.Study, done: int) -> None:
    bar.n = done
    best = _best(study)
    bar.set_postfix(best=f"{best.value:.4f}" if best else "-")
    bar.refresh()


def _real_trials_before(study: optuna.Study, number: int) -> int:
    """Trials numbered below `number` that hold a place in the budget (done, running or queued)."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number < number and not t.user_attrs.get("surplus")
               and not (t.state == TrialState.FAIL and t.user_attrs.get("lost")))


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _progress(cfg: TuneConfig, study: optuna.Study):
    from tqdm.auto import tqdm

    return tqdm(total=cfg.trials, initial=finished(study), desc=f"tune {cfg.model.name}", disable=not cfg.progress,
                dynamic_ncols=True)


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def _objective(study: optuna.Study, trial: optuna.Trial, cfg: TuneConfig, data: Any, device: Any,
               state: dict[str, Any]) -> float:
    """Train one configuration; the best validation value of cfg.objective over its epochs."""
    state["number"] = trial.number
    trial.set_user_attr("worker", worker_id())  # first: a running trial without it is found lost (_RDBStorage)
    if _real_trials_before(study, trial.number) >= cfg.trials:
        # another worker took the budget's last trial at the same moment: close this one unrun, uncounted
        state["surplus"] = True
        trial.set_user_attr("surplus", True)
        raise optuna.TrialPruned(f"surplus: the study already has {cfg.trials} trials")
    data_cfg = cfg.model.data_config(cfg.experiment.data)
    plugin, params = trial_params(trial, cfg.model.plugin, cfg.sweep, history=data_cfg.history > 0,
                                  encoder=data_cfg.history_encoder, loss=cfg.experiment.train.loss)
    trial.set_user_attr("run_params", json.dumps(params))
    trial.set_user_attr("registry_model", plugin)
    trial.set_user_attr("device", str(device))
    model = replace(cfg.model, plugin=plugin).with_params(params)
    train_cfg = model.train_config(replace(cfg.experiment.train, val_metric=cfg.objective), cfg.seed + trial.number)
    started = time.perf_counter()
    tracker = state.get("tracker")
    run = tracker.start(f"trial {trial.number}", {"model": plugin, **params}, {"trial": trial.number}) \
        if tracker else None

    def report(epoch: int, row: dict[str, float]) -> None:
        trial.report(row[f"val_{cfg.objective}"], epoch)
        if tracker:
            tracker.epoch(run, epoch, {"loss": row["loss"], f"val_{cfg.objective}": row[f"val_{cfg.objective}"]})
        if trial.should_prune():
            trial.set_user_attr("seconds", time.perf_counter() - started)
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    try:
        value = _evaluate_trial(trial, cfg, data, device, model, train_cfg, started, report)
    except optuna.TrialPruned:
        if tracker:
            tracker.finish(run, {}, status="KILLED")
        raise
    except BaseException:
        if tracker:
            tracker.finish(run, {}, status="FAILED")
        raise
    if tracker:
        tracker.finish(run, {"value": value})
    return value


def _tracker(cfg: TuneConfig) -> Any:
    """This worker's MLflow tracker (trials nest under the study's run), or None when not tracking."""
    if cfg.track is None:
        return None
    from bench.results.tracking import Tracker

    return Tracker(cfg.track, cfg.results_dir, cfg.study_name(), parent=cfg.track_parent)


def _evaluate_trial(trial: optuna.Trial, cfg: TuneConfig, data: Any, device: Any, model: ModelConfig,
                    train_cfg: Any, started: float, report: Any) -> float:
    """Train (or fit) one trial's configuration; its best validation value of cfg.objective."""
    try:
        seed_everything(train_cfg.seed, train_cfg.deterministic)
        prepared = data.get(model.data_config(cfg.experiment.data))
        built = build_model(model, prepared).to(device)
        if not built.trainable:  # fitted in build_model: its validation value is the trial's
            evaluation = replace(cfg.experiment.eval, ks=(train_cfg.val_k,))
            value = evaluate(built, prepared, "val", evaluation, seed=train_cfg.seed,
                             device=device).metrics[cfg.objective]
            trial.set_user_attr("seconds", time.perf_counter() - started)
            return value
        result = train(built, prepared, train_cfg, cfg.experiment.eval, device, on_epoch=report)
    except UpdateFinishedTrialError:
        raise  # another worker declared this trial lost meanwhile: see _one_trial
    except KeyboardInterrupt as exc:
        _interrupted(trial.study, trial, exc)
        raise
    except CATCH as exc:
        trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
        raise
    trial.set_user_attr("seconds", time.perf_counter() - started)
    trial.set_user_attr("train_samples_per_s", result.samples_per_s)
    trial.set_user_attr("best_epoch", result.best_epoch)
    return result.best_value


def _interrupted(study: optuna.Study, trial: optuna.Trial, exc: KeyboardInterrupt) -> None:
    """A trial aborted by Ctrl-C or SIGTERM says nothing about its configuration: it is failed as lost (not
    counted) and queued again with its parameters, as if its worker had died, so the resumed study still ends
    with exactly --trials counted trials."""
    from bench.interrupts import interrupt_reason

    try:
        trial.set_user_attr("lost", True)
        trial.set_user_attr("fail_reason", f"lost: interrupted ({interrupt_reason(exc)}); retried with the same "
                                           "parameters")
        retry_lost(study, _frozen(study, trial.number))
    except (UpdateFinishedTrialError, KeyError):
        pass  # declared lost by another worker meanwhile, and queued again by it


def _worker_main(cfg: TuneConfig, worker: int, stop_event: Any, parent_pid: int) -> None:
    _exit_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent's Ctrl-C arrives through stop_event
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a spawned process starts with Optuna's INFO
    work(cfg, worker, stop_event=stop_event)


def _exit_with_parent(parent_pid: int, poll_s: float = 0.5) -> threading.Thread:
    """A helper worker exits at once when its parent `bench tune` dies, even by SIGKILL (a daemon process is
    only ended by a parent that exits normally). A thread waits on the pipe the parent holds open while it lives
    (multiprocessing's parent sentinel) and checks the parent pid, on every platform. The trial the helper was
    running is then lost and retried like any other."""
    parent = mp.parent_process()
    sentinel = parent.sentinel if parent is not None else None

    def watch() -> None:
        from multiprocessing.connection import wait

        while True:
            if sentinel is not None and wait([sentinel], timeout=poll_s):
                break
            if sentinel is None:
                time.sleep(poll_s)
            if os.getppid() != parent_pid:
                break
        print(f"bench tune worker {os.getpid()}: its parent process {parent_pid} died; exiting", file=sys.stderr,
              flush=True)
        os._exit(1)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


def worker_threads(n_jobs: int, threads: int | None) -> int:
    """Torch threads per worker: --threads, else the cores shared out (at least 1)."""
    return threads if threads is not None else max(1, cpu_count() // max(n_jobs, 1))


def oversubscribed(n_jobs: int, threads: int | None) -> str | None:
    """One warning line when the workers' threads outnumber the cores (None when they fit): the study still
    runs, every trial slower."""
    cores, per_worker = cpu_count(), worker_threads(n_jobs, threads)
    if n_jobs * per_worker <= cores:
        return None
    if n_jobs > cores:
        return (f"warning: --n-jobs {n_jobs} exceeds the {cores} CPU core(s) available: each worker gets {per_worker} "
                f"torch thread(s) and the {n_jobs} workers take turns on {cores} core(s), so every trial runs slower "
                f"(--n-jobs {cores} uses them all)")
    return (f"warning: --n-jobs {n_jobs} x --threads {per_worker} exceeds the {cores} CPU core(s) available: the "
            f"threads take turns on the cores, so every trial runs slower (--threads {max(1, cores // n_jobs)} fits)")


def tune(cfg: TuneConfig, data: Any = None) -> optuna.Study:
    """Run the study to cfg.trials counted trials with cfg.n_jobs worker processes (threads shared); `data`: this
    process's DataSource (or prepared data), loaded once (helper processes load their own).

    Raises StudyInterrupted after a Ctrl-C (the study is kept, and resumes with the same command)."""
    check_url(cfg.storage_url())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = replace(cfg, threads=worker_threads(cfg.n_jobs, cfg.threads))
    study = open_study(cfg)  # create it once before the workers race to
    tracker = None
    if cfg.track is not None and cfg.track_parent is None:  # the study's MLflow run, which every trial nests under
        from bench.results.tracking import Tracker

        tracker = Tracker(cfg.track, cfg.results_dir, cfg.study_name(), {"study": cfg.study_name()})
        cfg = replace(cfg, track_parent=tracker.parent)
    try:
        return _run_workers(cfg, study, data)
    finally:
        if tracker is not None:
            tracker.close()


def _run_workers(cfg: TuneConfig, study: optuna.Study, data: Any) -> optuna.Study:
    """The study's workers: this process and cfg.n_jobs - 1 helper processes (see `tune`)."""
    if cfg.n_jobs <= 1:
        stop_event = threading.Event()
        work(cfg, data=data, stop_event=stop_event)
        if stop_event.is_set():
            raise StudyInterrupted()
        return study
    ctx = mp.get_context("spawn")
    stop_event = ctx.Event()
    helpers = [ctx.Process(target=_worker_main, args=(cfg, w, stop_event, os.getpid()), daemon=True)
               for w in range(1, cfg.n_jobs)]
    for p in helpers:
        p.start()
    try:
        work(cfg, 0, data=data, stop_event=stop_event)
    except KeyboardInterrupt:  # a second Ctrl-C (or one before the first trial)
        _abort(helpers, stop_event)
        raise
    finally:
        _join(helpers, stop_event)
    if stop_event.is_set():
        raise StudyInterrupted()
    return study


def _join(helpers: list[Any], stop_event: Any) -> None:
    """Wait for the helper workers (their current trials finish); a Ctrl-C while waiting aborts them."""
    try:
        for p in helpers:
            p.join()
    except KeyboardInterrupt:
        _abort(helpers, stop_event)
        raise


def _abort(helpers: list[Any], stop_event: Any) -> None:
    """End the helpers now: each trial they were running is lost, and retried with its parameters by the next
    `bench tune` on the study (see the module docstring)."""
    stop_event.set()
    for p in helpers:
        if p.is_alive():
            p.terminate()
    for p in helpers:
        p.join()


def best_rows(study: optuna.Study, top: int = 5) -> list[dict[str, Any]]:
    trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: -t.value)
    return [{"trial": t.number, "value": t.value, "seconds": t.user_attrs.get("seconds"),
             "samples_per_s": t.user_attrs.get("train_samples_per_s"),
             "params": json.loads(t.user_attrs.get("run_params", "{}"))} for t in trials[:top]]


def summary(study: optuna.Study) -> dict[str, int]:
    """Counted trials by state (lost and surplus ones are not counted: see `lost`)."""
    by_state = {s.name.lower(): 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for t in study.get_trials(deepcopy=False, states=DONE):
        if counts(t):
            by_state[t.state.name.lower()] += 1
    return by_state


