"""Experiment tracking: each run (and each tuning trial) logged to MLflow beside the results store.

`--track mlflow` logs to a local store under the results folder (`results/mlflow.db`, artifacts in
`results/mlartifacts`), which `mlflow ui --backend-store-uri sqlite:///results/mlflow.db` opens;
`--track mlflow=URI` to a tracking server. A run logs its resolved configuration as params, each epoch's
training loss and validation metric, the test metrics with their 95% intervals over users, tags (git commit,
data checksum, split, protocol), and artifacts (per-user metrics, the checkpoint, the Markdown leaderboard
on the invocation's parent run); a study logs each trial as a nested run.

Tracking is a side channel: a server that is down, refuses or breaks mid-run fails only the tracking, with
one warning, never the run or the store. MLflow is an optional extra (`pip install "deepfm-bench[mlflow]"`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EXTRA = 'pip install "deepfm-bench[mlflow]"'
EXPERIMENT = "deepfm-bench"


def parse_track(value: str | None) -> str | None:
    """--track mlflow or mlflow=URI -> the tracking URI ('' for the local store), None for no tracking; anything
    else is a ValueError naming the option."""
    if value is None:
        return None
    kind, sep, uri = value.partition("=")
    if kind != "mlflow" or (sep and not uri):
        raise ValueError(f"--track {value!r}: expected mlflow or mlflow=URI (a tracking server, e.g. "
                         "http://127.0.0.1:5000)")
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ValueError(f"--track mlflow: MLflow is not installed: {EXTRA}") from None
    return uri


class Tracker:
    """Logs one invocation to MLflow: a parent run, and a nested run per (model, seed) or per trial. Every call
    is guarded: the first failure warns once and switches tracking off for the rest of the invocation."""

    def __init__(self, uri: str, results_dir: str | Path, name: str, tags: Mapping[str, str] | None = None,
                 parent: str | None = None):
        self.results_dir = Path(results_dir)
        self.uri = uri or f"sqlite:///{(self.results_dir / 'mlflow.db').resolve()}"
        self.broken: str | None = None
        self.client: Any = None
        self.parent, self.own_parent = parent, parent is None  # given: another process made it (tune's workers)
        self.experiment: str | None = None
        if uri:  # a server that is down must fail fast, not after minutes of retries
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self._guard(lambda: self._open(name, dict(tags or {})))

    def _open(self, name: str, tags: dict[str, str]) -> None:
        import mlflow

        self.results_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.client = mlflow.MlflowClient(tracking_uri=self.uri)
            found = self.client.get_experiment_by_name(EXPERIMENT)
            if found is not None:
                self.experiment = found.experiment_id
            else:
                local = not self.uri.startswith("http")
                location = (self.results_dir / "mlartifacts").resolve().as_uri() if local else None
                self.experiment = self.client.create_experiment(EXPERIMENT, artifact_location=location)
            if self.parent is None:
                self.parent = self.client.create_run(self.experiment, run_name=name, tags=tags).info.run_id

    def _guard(self, call: Any) -> Any:
        """Run one MLflow call; on its first failure warn once and stop tracking."""
        if self.broken is not None:
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return call()
        except Exception as exc:  # noqa: BLE001 - tracking must never fail a run
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            self.broken = f"{type(exc).__name__}: {detail}"
            warnings.warn(f"--track: MLflow at {self.uri} failed ({self.broken}); the runs go on and are recorded "
                          "in the results store, without tracking", stacklevel=2)
            return None

    @property
    def active(self) -> bool:
        return self.broken is None and self.client is not None and self.parent is not None

    def start(self, name: str, params: Mapping[str, Any], tags: Mapping[str, Any] | None = None) -> str | None:
        """A nested run under the invocation's parent, with its flattened params; its id (None if not tracking)."""
        if not self.active:
            return None

        def create() -> str:
            child = self.client.create_run(self.experiment, run_name=name, tags={
                "mlflow.parentRunId": self.parent, **{k: str(v) for k, v in (tags or {}).items() if v is not None}})
            run_id = child.info.run_id
            flat = flatten(params)
            from mlflow.entities import Param

            items = [Param(k, str(v)[:6000]) for k, v in flat.items()]
            for start in range(0, len(items), 100):  # MLflow takes at most 100 params a call
                self.client.log_batch(run_id, params=items[start:start + 100])
            return run_id

        return self._guard(create)

    def epoch(self, run_id: str | None, step: int, metrics: Mapping[str, float]) -> None:
        if run_id is not None:
            self._log(run_id, metrics, step)

    def _log(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        def log() -> None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            batch = [Metric(_key(k), float(v), now, step) for k, v in metrics.items()
                     if isinstance(v, (int, float)) and v == v]
            for start in range(0, len(batch), 1000):
                self.client.log_batch(run_id, metrics=batch[start:start + 1000])

        self._guard(log)

    def finish(self, run_id: str | None, metrics: Mapping[str, float], artifacts: Mapping[str, Any] | None = None,
               status: str = "FINISHED") -> None:
        """Final metrics, artifacts (name -> a Path to upload, or text / bytes / a dict written to that name),
        and the run's end."""
        if run_id is None:
            return
        self._log(run_id, metrics)
        for name, content in (artifacts or {}).items():
            self.artifact(run_id, name, content)
        self._guard(lambda: self.client.set_terminated(run_id, status=status))

    def artifact(self, run_id: str | None, name: str, content: Any) -> None:
        if run_id is None or content is None:
            return

        def upload() -> None:
            if isinstance(content, Path):  # a file to upload (text is given as str)
                self.client.log_artifact(run_id, str(content))
                return
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / name
                if isinstance(content, bytes):
                    path.write_bytes(content)
                else:
                    path.write_text(content if isinstance(content, str) else json.dumps(content, indent=1,
                                                                                        default=str))
                self.client.log_artifact(run_id, str(path))

        self._guard(upload)

    def close(self, status: str = "FINISHED", artifacts: Mapping[str, Any] | None = None) -> None:
        """End the invocation's parent run (with its artifacts: the leaderboard page), if this tracker made it."""
        if self.parent is None or not self.own_parent or self.client is None:
            return
        for name, content in (artifacts or {}).items():
            self.artifact(self.parent, name, content)
        self._guard(lambda: self.client.set_terminated(self.parent, status=status))


def _key(name: str) -> str:
    """A metric name as MLflow accepts it: NDCG@10 -> NDCG_10 (MLflow takes no '@'; anything odd becomes '_')."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}: a configuration as MLflow params."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple, dict)) else value
    return out
