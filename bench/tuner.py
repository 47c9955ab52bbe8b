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
queues it again with the same parameters (a WAITING trial, `retry_of` its number), so the study still ends with
exactly `--trials` counted trials. A trial lost MAX_RETRIES + 1 times (its configuration may be what kills the
worker, e.g. the kernel's out-of-memory killer) is failed for good and counts. A worker that has nothing left
to start while other workers' trials still run waits for them, to take over any that is lost.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import re
import signal
import socket
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

import registry
from bench.device import cpu_count, resolve_device, seed_everything, set_threads
from bench.runner import DataConfig, RunConfig, build_model, load_data, split_params
from bench.store import write_atomic
from bench.trainer import NaNLossError, train

warnings.filterwarnings("ignore", category=ExperimentalWarning)  # heartbeats: stable in practice since 2.9

DONE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# A running trial's heartbeat: one small write every HEARTBEAT_S seconds (an UPDATE of one row on a database; a
# 140-byte line in a journal file, about 250 kB per trial-hour). A trial silent for GRACE_S seconds (5 missed
# beats: a live worker stalls that long only when stopped or starved) is lost: found within seconds, not minutes.
HEARTBEAT_S = 2
GRACE_S = 10
MAX_RETRIES = 2
POSTGRES_EXTRA = 'pip install "deepfm-bench[postgres]"'
SWEEPS = ("interactions", "sampler")
INTERACTIONS = ("fm", "cin", "attention")
INTERACTION_COMBOS = tuple(",".join(c) for n in (1, 2, 3) for c in itertools.combinations(INTERACTIONS, n))


def common_space(trial: optuna.Trial) -> dict[str, Any]:
    """Training knobs every model shares, declared once."""
    return {
        "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-8, 1e-3, log=True),
        "num_negatives": trial.suggest_int("num_negatives", 1, 8),
        "batch_size": trial.suggest_categorical("batch_size", [128, 256, 512, 1024]),
        "fm_dim": trial.suggest_categorical("fm_dim", [8, 16, 32, 64]),
    }


def trial_params(trial: optuna.Trial, model: str, sweep: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """(registry model name, run params) for one trial: common knobs + the model's space + sweeps."""
    params = common_space(trial)
    if "interactions" in sweep:
        model = "composed"
        params["interactions"] = trial.suggest_categorical("interactions", INTERACTION_COMBOS)
        for name in params["interactions"].split(","):
            params.update(registry.search_space("interaction", name, trial))  # "cin.layers", ...
        params["mlp"] = _mlp(trial)
        params["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
    else:
        params.update(registry.search_space("model", model, trial))
    if "sampler" in sweep:
        params["sampler"] = trial.suggest_categorical("sampler", ["uniform", "popularity"])
        if params["sampler"] == "popularity":
            params["sampler_options"] = {"alpha": trial.suggest_float("popularity.alpha", 0.25, 1.0)}
    return model, params


def _mlp(trial: optuna.Trial) -> list[int]:
    depth = trial.suggest_int("mlp_depth", 0, 3)
    width = trial.suggest_categorical("mlp_width", [32, 64, 128, 256])
    return [max(width // 2**i, 8) for i in range(depth)]


@dataclass
class TuneConfig:
    run: RunConfig
    model: str
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

    def study_name(self) -> str:
        """One study per (data, model, sweep, objective, validation protocol, device): never mixed."""
        if self.study:
            return f"{self.study}-{self.model}-{self.device}"
        sweep = f"-sweep_{'+'.join(self.sweep)}" if self.sweep else ""
        protocol = f"-{self.run.train.val_protocol}" if self.run.train.val_protocol != "full" else ""
        return f"{self.run.data.label()}-{self.model}{sweep}-{self.objective}{protocol}-{self.device}"

    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        path = Path(self.results_dir).resolve() / "optuna.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"


def _is_journal(url: str) -> bool:
    return url.endswith((".log", ".journal")) and "://" not in url


STORAGE_HELP = ("expected a database URL such as sqlite:///path/optuna.db or postgresql://user:pw@host/db, "
                "or a journal file path ending .journal or .log")


def check_storage(url: str | None) -> None:
    """Refuse a --storage that cannot work, in one line, before any data loads or trial runs.

    Garbage, an unknown database, an in-memory SQLite database (each process would get its own), a file in a
    missing or read-only folder, a file that is not a SQLite database, a database whose driver is not installed
    (for postgresql:// the `postgres` extra). None (the default SQLite file under --results-dir) passes.
    """
    if url is None:
        return
    if _is_journal(url):
        path = Path(url)
        if path.is_dir():
            raise ValueError(f"--storage {url}: is a folder ({STORAGE_HELP})")
        _check_folder(url, path, "a journal file")
        return
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"--storage {url!r}: not a storage URL ({STORAGE_HELP})") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(f"--storage {shown}: unknown database {parsed.drivername!r} ({STORAGE_HELP})") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        backend = parsed.get_backend_name()
        hint = (f'{POSTGRES_EXTRA} (psycopg 3, which postgresql:// uses)' if backend == "postgresql" and
                parsed.get_driver_name() == "psycopg" else f"install the Python module {exc.name or exc}")
        if backend == "postgresql" and parsed.get_driver_name() != "psycopg":
            hint += f", or use postgresql:// with {POSTGRES_EXTRA}"
        raise ValueError(f"--storage {shown}: the {backend} driver {parsed.get_driver_name()} is not installed: "
                         f"{hint}") from None
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite(shown, parsed.database)


def _check_folder(url: str, path: Path, what: str) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"--storage {url}: folder {folder} does not exist (expected {what} in an existing folder)")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.R_OK | os.W_OK)):
        raise ValueError(f"--storage {url}: {path if path.exists() else folder} is not writable")


def _check_sqlite(url: str, database: str | None) -> None:
    if database and database.startswith("file:"):
        return  # a SQLite URI filename: left to SQLite
    if not database or database == ":memory:":
        raise ValueError(f"--storage {url}: an in-memory SQLite database is private to one process and lost at "
                         "exit; expected a file, e.g. sqlite:///path/optuna.db")
    path = Path(database)
    if path.is_dir():
        raise ValueError(f"--storage {url}: {path} is a folder, not a SQLite file")
    _check_folder(url, path, "a SQLite file")
    if path.exists() and path.stat().st_size:
        try:
            with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as con:
                con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"--storage {url}: {path} is not a usable SQLite database ({exc})") from None


def worker_id() -> str:
    """host:pid of this process, recorded on each trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


class _Silence:
    """Which running trials have sent no heartbeat for GRACE_S seconds, as seen by this process's own clock.

    A trial's heartbeat token (a journal heartbeat's value, or None for "no heartbeat yet") is remembered with
    the moment this process first saw it; a token unchanged for GRACE_S seconds means its worker is gone. No
    two machines' clocks are ever compared, so clock skew between them cannot fail a live trial.
    """

    def __init__(self) -> None:
        self._seen: dict[int, tuple[Any, float]] = {}

    def stale(self, trials: Iterable[FrozenTrial], token: Any) -> list[int]:
        now, seen, stale = time.monotonic(), {}, []
        for t in trials:
            value = token(t)
            before = self._seen.get(t._trial_id)
            since = before[1] if before is not None and before[0] == value else now
            seen[t._trial_id] = (value, since)
            if now - since > GRACE_S:
                stale.append(t._trial_id)
        self._seen = seen
        return stale


def _mark_lost(storage: optuna.storages.BaseStorage, trial_ids: Iterable[int]) -> list[int]:
    """Record on each silent trial, while it is still RUNNING, why it is about to fail; returns those that are
    still running (another worker may have finished or failed one meanwhile)."""
    marked = []
    for trial_id in dict.fromkeys(trial_ids):
        try:
            trial = storage.get_trial(trial_id)
            if trial.state != TrialState.RUNNING:
                continue
            retried = len(trial.system_attrs.get("retry_history", []))
            silent = (f"its worker {trial.user_attrs.get('worker', '(not yet known)')} sent no heartbeat for "
                      f"{GRACE_S} s (killed or crashed)")
            if retried >= MAX_RETRIES:
                reason = (f"lost {retried + 1} times, {silent}: its configuration may be what kills the worker "
                          "(out of memory?); not retried")
            else:
                reason = f"lost: {silent}; retried with the same parameters"
                storage.set_trial_user_attr(trial_id, "lost", True)
            storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        except (UpdateFinishedTrialError, KeyError):
            continue
        marked.append(trial_id)
    return marked


def _retry_lost(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a lost trial again with its parameters (Optuna's heartbeat-stale callback)."""
    if not trial.user_attrs.get("lost"):
        return
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={"retry_of": history[0]},
        system_attrs={"failed_trial": history[0], "retry_history": history}))  # as RetryFailedTrialCallback


class _RDBStorage(optuna.storages.RDBStorage):
    """Optuna's heartbeat (timed by the database's clock), plus: the reason recorded on each lost trial, and a
    trial whose worker died before its first heartbeat is found too."""

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                         heartbeat_stale_trial_callback=_retry_lost, **kw)
        self._silence = _Silence()

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        # its "worker" attr is the objective's first write, just after the heartbeat thread started
        unknown = [t for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                   if "worker" not in t.user_attrs]
        return _mark_lost(self, [*stale, *self._silence.stale(unknown, lambda t: None)])


class _JournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
    """Optuna's journal storage has no heartbeat: here it is a trial system attr written every HEARTBEAT_S."""

    def __init__(self, backend: Any) -> None:
        super().__init__(backend)
        self._silence = _Silence()

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, "heartbeat", time.time())
        except (UpdateFinishedTrialError, KeyError):
            pass  # failed meanwhile as lost by another worker: nothing left to keep alive

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return _mark_lost(self, self._silence.stale(running, lambda t: t.system_attrs.get("heartbeat")))

    def get_heartbeat_interval(self) -> int:
        return HEARTBEAT_S

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return _retry_lost


def _storage(url: str) -> optuna.storages.BaseStorage:
    """A journal file (path ending .log/.journal), else an RDB URL; both with heartbeats for lost trials.

    Workers starting together race to create the RDB schema; the loser retries once it exists.
    """
    if _is_journal(url):
        from optuna.storages.journal import JournalFileBackend

        return _JournalStorage(JournalFileBackend(url))
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(10):
        try:
            return _RDBStorage(url, engine_kwargs=engine)
        except SQLAlchemyError as exc:  # "table studies already exists", duplicate alembic version, locked
            if attempt == 9:
                shown = make_url(url).render_as_string(hide_password=True)
                detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                raise ValueError(f"--storage {shown}: cannot open the study storage ({detail})") from None
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def open_study(cfg: TuneConfig) -> optuna.Study:
    """Create or load the study. The sampler is unseeded on purpose: independent workers seeded alike
    propose the very same configurations (seen in the two-worker test); each trial's training is seeded
    by --seed + its trial number, so a trial can be re-run exactly."""
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if cfg.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=cfg.pruner_startup, n_warmup_steps=2)
    study = optuna.create_study(storage=_storage(cfg.storage_url()), study_name=cfg.study_name(),
                                direction="maximize", load_if_exists=True, pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=None))
    for key, value in (("model", cfg.model), ("device", cfg.device), ("objective", cfg.objective),
                       ("dataset", cfg.run.data.label()), ("sweep", ",".join(cfg.sweep))):
        study.set_user_attr(key, value)
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


class _Stop:
    """Ctrl-C: finish the current trial, then stop; a second Ctrl-C interrupts it.

    `shared` (a multiprocessing Event) carries the request to the helper worker processes.
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
    study = open_study(cfg)
    data = data if data is not None else load_data(cfg.run.data)
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
            optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            done = sum(1 for t in trials if counts(t))
            running = sum(1 for t in trials if t.state == TrialState.RUNNING)
            waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
            if bar is not None:
                _show(bar, study, done)
            if waiting or done + running < cfg.trials:
                ran += _one_trial(study, cfg, data, device)
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


def _one_trial(study: optuna.Study, cfg: TuneConfig, data: Any, device: Any) -> int:
    """Run one trial (a queued retry first); 1 if it was a real one, 0 if a surplus or declared lost meanwhile."""
    state: dict[str, Any] = {"surplus": False, "trial_id": None}
    try:
        study.optimize(lambda trial: _objective(study, trial, cfg, data, device, state), n_trials=1,
                       catch=CATCH, gc_after_trial=False, show_progress_bar=False)
    except (UpdateFinishedTrialError, ValueError):  # Optuna's "Cannot tell a FAIL trial"
        if state["trial_id"] is None or not study._storage.get_trial(state["trial_id"]).user_attrs.get("lost"):
            raise
        number = study._storage.get_trial(state["trial_id"]).number
        print(f"trial {number} of this worker ({worker_id()}) was declared lost by another worker after "
              f"{GRACE_S} s without its heartbeat (was this process stopped?); its result is dropped and it is "
              "retried", file=sys.stderr, flush=True)
        return 0
    return 0 if state["surplus"] else 1


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

    return tqdm(total=cfg.trials, initial=finished(study), desc=f"tune {cfg.model}", disable=not cfg.progress,
                dynamic_ncols=True)


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def _objective(study: optuna.Study, trial: optuna.Trial, cfg: TuneConfig, data: Any, device: Any,
               state: dict[str, Any]) -> float:
    """Train one configuration; the best validation value of cfg.objective over its epochs."""
    state["trial_id"] = trial._trial_id
    trial.set_user_attr("worker", worker_id())  # first: a running trial without it is found lost (_RDBStorage)
    if _real_trials_before(study, trial.number) >= cfg.trials:
        # another worker took the budget's last trial at the same moment: close this one unrun, uncounted
        state["surplus"] = True
        trial.set_user_attr("surplus", True)
        raise optuna.TrialPruned(f"surplus: the study already has {cfg.trials} trials")
    model_name, params = trial_params(trial, cfg.model, cfg.sweep)
    trial.set_user_attr("run_params", json.dumps(params))
    trial.set_user_attr("registry_model", model_name)
    trial.set_user_attr("device", str(device))
    model_kw, train_kw = split_params(dict(params))
    train_cfg = replace(cfg.run.train, seed=cfg.seed + trial.number, val_metric=cfg.objective, progress=False,
                        **train_kw)
    started = time.perf_counter()

    def report(epoch: int, row: dict[str, float]) -> None:
        trial.report(row[f"val_{cfg.objective}"], epoch)
        if trial.should_prune():
            trial.set_user_attr("seconds", time.perf_counter() - started)
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    try:
        seed_everything(train_cfg.seed)
        model = build_model(model_name, data, cfg.run.fm_dim, model_kw).to(device)
        result = train(model, data, train_cfg, device, on_epoch=report)
    except UpdateFinishedTrialError:
        raise  # another worker declared this trial lost meanwhile: see _one_trial
    except CATCH as exc:
        trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
        raise
    trial.set_user_attr("seconds", time.perf_counter() - started)
    trial.set_user_attr("train_samples_per_s", result.samples_per_s)
    trial.set_user_attr("best_epoch", result.best_epoch)
    return result.best_value


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


def tune(cfg: TuneConfig) -> optuna.Study:
    """Run the study to cfg.trials counted trials with cfg.n_jobs worker processes (threads shared)."""
    check_storage(cfg.storage_url())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cores = cpu_count()
    if cfg.threads is None:
        cfg = replace(cfg, threads=max(1, cores // max(cfg.n_jobs, 1)))
    study = open_study(cfg)  # create it once before the workers race to
    if cfg.n_jobs <= 1:
        work(cfg)
        return study
    ctx = mp.get_context("spawn")
    stop_event = ctx.Event()
    helpers = [ctx.Process(target=_worker_main, args=(cfg, w, stop_event, os.getpid()), daemon=True)
               for w in range(1, cfg.n_jobs)]
    for p in helpers:
        p.start()
    try:
        work(cfg, 0, stop_event=stop_event)
    except KeyboardInterrupt:
        stop_event.set()
        raise
    finally:
        for p in helpers:
            p.join()
    return study


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


def best_params_path(results_dir: str | Path, data: DataConfig, model: str) -> Path:
    """results_dir/best_params/<dataset label>-<model>.json, always inside results_dir/best_params.

    The label holds --dataset-opt values (paths among them): a label that is not a safe file name as it stands
    has every other character replaced by '_' and a hash of the whole label appended (two labels never share a
    file), and a long one is shortened the same way."""
    folder = Path(results_dir) / "best_params"
    path = folder / f"{_file_stem(data.label())}-{_file_stem(model)}.json"
    if path.resolve().parent != folder.resolve():  # cannot happen with _file_stem; guard the invariant anyway
        raise ValueError(f"best params file {path} would leave {folder}")
    return path


_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+@\[\]-]")


def _file_stem(text: str, limit: int = 120) -> str:
    safe = _UNSAFE.sub("_", text)
    if safe == text and len(text) <= limit and not text.startswith("."):
        return text
    import hashlib

    return f"{safe.lstrip('.')[:limit]}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def save_best(study: optuna.Study, cfg: TuneConfig) -> Path:
    best = study.best_trial
    payload = {
        "model": best.user_attrs.get("registry_model", cfg.model), "tuned_as": cfg.model,
        "dataset": cfg.run.data.label(), "objective": f"val {cfg.objective}", "value": best.value,
        "trial": best.number, "study": cfg.study_name(), "storage": cfg.storage_url(), "device": cfg.device,
        "params": json.loads(best.user_attrs["run_params"]),
    }
    return write_atomic(best_params_path(cfg.results_dir, cfg.run.data, cfg.model), json.dumps(payload, indent=2))


def load_best_params(spec: str, results_dir: str, data: DataConfig,
                     models: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """--params best (the saved best of each model under the results dir) or --params FILE.json.

    Returns {model: {"registry_model": ..., **params}} for the models that have tuned params.
    """
    payloads = []
    if spec == "best":
        for model in models:
            path = best_params_path(results_dir, data, model)
            if path.exists():
                payloads.append(json.loads(path.read_text()))
        if not payloads:
            raise ValueError(f"--params best: no tuned params for {', '.join(models)} on {data.label()} under "
                             f"{Path(results_dir) / 'best_params'}; run `bench tune` first")
    else:
        path = Path(spec)
        if not path.exists():
            raise ValueError(f"--params {spec}: no such file (expected 'best' or a JSON file from bench tune)")
        try:
            loaded = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"--params {spec}: not valid JSON ({exc})") from None
        payloads = loaded if isinstance(loaded, list) else [loaded]
        for p in payloads:
            if not isinstance(p, dict) or "params" not in p or "model" not in p:
                raise ValueError(f"--params {spec}: expected objects with 'model' and 'params' keys")
    return {p.get("tuned_as", p["model"]): {"registry_model": p["model"], **p["params"]} for p in payloads}
